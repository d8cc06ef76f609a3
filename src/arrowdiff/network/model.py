"""UnifiedModel: the shared backbone plus one head per modality, and the parameter split (R4.2, R4.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from arrowdiff.config import ModelConfig, modality_id
from arrowdiff.errors import ModalityError
from arrowdiff.network.backbone import SharedTransformer, count_parameters
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
    ) -> Tensor:
        """tokens (B, T) ids, t (B,) times, one modality name per row (or one for all) -> logits (B, T, V)."""
        B, T = tokens.shape
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

    def parameter_split(self) -> dict[str, int]:
        """Parameters per component: 'backbone' and one entry per head (shared tables counted once)."""
        split = {"backbone": count_parameters(self.backbone)}
        for m, head in self.heads.items():
            split[f"heads/{m}"] = count_parameters(head)
        return split

    def component_state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """State dicts per stored component: 'backbone', 'heads/<modality>'."""
        out = {"backbone": dict(self.backbone.state_dict())}
        for m, head in self.heads.items():
            out[f"heads/{m}"] = dict(head.state_dict())
        return out

    def load_component_state_dicts(self, parts: dict[str, dict[str, Tensor]]) -> None:
        self.backbone.load_state_dict(parts["backbone"])
        for m, head in self.heads.items():
            head.load_state_dict(parts[f"heads/{m}"])


def backbone_share(split: dict[str, int]) -> float:
    """Fraction of all parameters held by the backbone (R4.2 requires >= 0.90)."""
    return split["backbone"] / sum(split.values())
