"""Fit a LoRA adapter (Hu et al. 2021) to token sequences on a causal LLaMA model: the next-token
cross-entropy of the given sequences, only the adapter's A/B matrices trainable. A readable loop for small
fine-tunes and tests; the base model stays frozen."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from arrowdiff.adapters.lora import Adapter, LoRAConfig, inject_lora, lora_layers
from arrowdiff.ar.llama import LlamaModel


def sequence_nll(model: LlamaModel, ids: Sequence[int]) -> float:
    """Mean next-token negative log-likelihood (nats) of ``ids`` under ``model``."""
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        logits = model(x[:, :-1])
    return float(F.cross_entropy(logits[0], x[0, 1:]))


def fit_lora(
    model: LlamaModel,
    sequences: Sequence[Sequence[int]],
    cfg: LoRAConfig,
    name: str,
    base_model: str,
    steps: int = 40,
    lr: float = 1e-2,
    seed: int = 0,
) -> Adapter:
    """Wrap ``cfg.targets`` with fresh LoRA layers, train them on ``sequences`` and return the Adapter.

    The LoRA layers stay in ``model`` (active) after training."""
    torch.manual_seed(seed)
    model.requires_grad_(False)
    inject_lora(model, cfg)
    params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = [torch.tensor(list(s)) for s in sequences]
    for _ in range(steps):
        loss = torch.stack([F.cross_entropy(model(x[None, :-1])[0], x[1:]) for x in batch]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return Adapter.from_model(model, name, "ar", base_model, cfg)
