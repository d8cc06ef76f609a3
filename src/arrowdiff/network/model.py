"""UnifiedModel: the shared backbone plus one head per modality, and the parameter split (R4.2, R4.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from arrowdiff.config import MEMORY_EMBED_DIM, ModelConfig, modality_id
from arrowdiff.errors import ModalityError
from arrowdiff.network.backbone import SharedTransformer, count_parameters
from arrowdiff.network.conditioning import MemoryProjection
from arrowdiff.network.heads import TokenHead, get_head_builder


class UnifiedModel(nn.Module):
    """Backbone + heads. ``forward`` runs one backbone pass for a batch whose rows may belong to
    different modalities: each row is embedded and projected by its own head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = SharedTransformer(cfg.backbone)
        self.heads = nn.ModuleDict()
        text = get_head_builder("text")(cfg.text, cfg.backbone.dim)
        for m in cfg.modalities:
            self.heads[m] = (
                text if m == "text" else get_head_builder(m)(cfg.text, cfg.backbone.dim, shared=text)
            )
        self.conditioners = nn.ModuleDict()
        if "memory" in cfg.conditioners:
            self.conditioners["memory"] = MemoryProjection(MEMORY_EMBED_DIM, cfg.backbone.cond_dim)

    @property
    def causal(self) -> bool:
        return self.cfg.objective == "ar"

    def head(self, modality: str) -> TokenHead:
        if modality not in self.heads:
            raise ModalityError(
                f"modality {modality!r} is not supported by this model: it has heads for "
                f"{', '.join(self.heads)}"
            )
        return self.heads[modality]  # type: ignore[return-value]

    def forward(
        self,
        tokens: Tensor,
        t: Tensor,
        modalities: Sequence[str] | str,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        residuals: Sequence[Tensor] | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """tokens (B, T) ids, t (B,) times, one modality name per row (or one for all) -> logits (B, T, V).

        ``memory`` (B, K, 384) embeddings with ``memory_mask`` (B, K) go through the memory conditioner
        into cross-attention; a model with a memory conditioner given no memories attends to its null
        token (the unconditioned model of classifier-free guidance)."""
        B, T = tokens.shape
        context, context_mask = self._context(B, context, context_mask, memory, memory_mask)
        names = [modalities] * B if isinstance(modalities, str) else list(modalities)
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(names):
            groups.setdefault(m, []).append(i)
        if len(groups) == 1:  # common case: no gather/scatter
            (m,) = groups
            head = self.head(m)
            x = head.embed(tokens)
            mod = torch.full((B, T), modality_id(m), dtype=torch.long, device=tokens.device)
            h = self.backbone(x, t, mod, context, context_mask, residuals, causal=self.causal)
            return head.project(h)
        x = torch.empty(B, T, self.cfg.backbone.dim, device=tokens.device)
        mod = torch.empty(B, T, dtype=torch.long, device=tokens.device)
        for m, rows in groups.items():
            idx = torch.tensor(rows, device=tokens.device)
            x[idx] = self.head(m).embed(tokens[idx]).to(x.dtype)
            mod[idx] = modality_id(m)
        h = self.backbone(x, t, mod, context, context_mask, residuals, causal=self.causal)
        logits = torch.empty(B, T, self.cfg.text.vocab_size, device=tokens.device, dtype=h.dtype)
        for m, rows in groups.items():
            idx = torch.tensor(rows, device=tokens.device)
            logits[idx] = self.head(m).project(h[idx]).to(logits.dtype)
        return logits

    def _context(
        self,
        batch: int,
        context: Tensor | None,
        context_mask: Tensor | None,
        memory: Tensor | None,
        memory_mask: Tensor | None,
    ) -> tuple[Tensor | None, Tensor | None]:
        if "memory" not in self.conditioners:
            if memory is not None:
                raise ModalityError(
                    "this model has no memory conditioner: it was not trained for memory-guided generation"
                )
            return context, context_mask
        mem, mem_mask = self.conditioners["memory"](memory, memory_mask, batch)
        if context is None:
            return mem, mem_mask
        if context_mask is None:
            context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        return torch.cat([mem, context.to(mem.dtype)], 1), torch.cat([mem_mask, context_mask], 1)

    def components(self) -> dict[str, nn.Module]:
        """Every stored component by name: 'backbone', 'heads/<modality>', 'conditioners/<name>'."""
        out: dict[str, nn.Module] = {"backbone": self.backbone}
        out.update({f"heads/{m}": h for m, h in self.heads.items()})
        out.update({f"conditioners/{c}": m for c, m in self.conditioners.items()})
        return out

    def parameter_split(self) -> dict[str, int]:
        """Parameters per component: 'backbone' and one entry per head (shared tables counted once)."""
        return {name: count_parameters(m) for name, m in self.components().items()}

    def component_state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """State dicts per stored component (see :meth:`components`)."""
        return {name: dict(m.state_dict()) for name, m in self.components().items()}

    def load_component_state_dicts(self, parts: dict[str, dict[str, Tensor]]) -> None:
        for name, m in self.components().items():
            m.load_state_dict(parts[name])


def backbone_share(split: dict[str, int]) -> float:
    """Fraction of all parameters held by the backbone (R4.2 requires >= 0.90)."""
    return split["backbone"] / sum(split.values())
