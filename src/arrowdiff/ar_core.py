"""InferenceCore for the autoregressive path: next-token sampling from a causal UnifiedModel.

Used for the equal-compute AR baseline (same backbone, causal mask) and routed to by
``ArrowEngine.generate(mode="ar")``. No KV cache yet: each token re-reads the (short) context.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.network.model import UnifiedModel


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Top-k then nucleus (top-p, Holtzman et al. 2020) filtering of logits (..., V)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def stream_autoregressive(
    model: UnifiedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    modality: str = "text",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    context_length: int = 256,
    generator: torch.Generator | None = None,
    banned_ids: tuple[int, ...] = (),
) -> Iterator[int]:
    """Yield sampled token ids one at a time (temperature 0 = greedy)."""
    if model.cfg.objective != "ar":
        raise ConfigError("stream_autoregressive needs a causal (objective='ar') model")
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        ctx = torch.tensor([ids[-context_length:]], dtype=torch.long)
        with torch.inference_mode():
            logits = model(ctx, torch.zeros(1), modality)[0, -1].float()
        if banned_ids:  # out of place: logits is an inference tensor, read-only outside inference_mode
            logits = logits.index_fill(0, torch.tensor(banned_ids), float("-inf"))
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(nxt)
        yield nxt
