"""UnifiedModel: the shared backbone plus one head per modality, and the parameter split (R4.2, R4.5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from arrowdiff.config import CONDITIONER_EMBED_DIMS, ModelConfig, modality_id
from arrowdiff.errors import ModalityError
from arrowdiff.network.backbone import SharedTransformer, count_parameters
from arrowdiff.network.conditioning import MemoryProjection
from arrowdiff.network.heads import get_head_builder
from arrowdiff.network.voice import VoiceModel

TOKEN_MODALITIES = ("text", "code")
SCORE_NETWORK_PARTS = ("backbone", "heads", "conditioners")  # not the codecs beside it (vae, voice)


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
            if m == "text":
                self.heads[m] = text
            elif m in TOKEN_MODALITIES:
                self.heads[m] = get_head_builder(m)(cfg.text, cfg.backbone.dim, shared=text)
            else:
                self.heads[m] = get_head_builder(m)(getattr(cfg, m), cfg.backbone.dim)
        # memories and captions arrive as MiniLM sentence embeddings, speakers as voice-model embeddings;
        # each conditioner has its own projection
        self.conditioners = nn.ModuleDict(
            {c: MemoryProjection(CONDITIONER_EMBED_DIMS[c], cfg.backbone.cond_dim) for c in cfg.conditioners}
        )
        self.voice = VoiceModel(cfg.voice, cfg.audio) if "audio" in cfg.modalities else None

    @property
    def causal(self) -> bool:
        return self.cfg.objective == "ar"

    def head(self, modality: str) -> Any:
        if modality not in self.heads:
            raise ModalityError(
                f"modality {modality!r} is not supported by this model: it has heads for "
                f"{', '.join(self.heads)}"
            )
        return self.heads[modality]

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
        caption: Tensor | None = None,
        caption_mask: Tensor | None = None,
        phones: Tensor | None = None,
        speaker: Tensor | None = None,
        speaker_mask: Tensor | None = None,
    ) -> Tensor:
        """tokens (B, T) ids, t (B,) times, one modality name per row (or one for all) -> logits (B, T, V).
        A floating-point ``tokens`` is a latent (B, C, h, w) of one continuous modality: see
        :meth:`forward_latent` (this dispatch lets DDP wrap both paths).

        ``memory`` (B, K, 384) embeddings with ``memory_mask`` (B, K) go through the memory conditioner
        into cross-attention; a model with a memory conditioner given no memories attends to its null
        token (the unconditioned model of classifier-free guidance).

        Audio: ``tokens`` is a normalised mel (B, F, n_mels), ``phones`` (B, F) the phone of each frame and
        ``speaker`` (B, 1, E) voice embeddings with ``speaker_mask`` (B, 1): see :meth:`forward_audio`."""
        if tokens.is_floating_point() and modalities == "audio":
            if phones is None:
                raise ModalityError("an audio batch needs the phone of every frame (phones=)")
            return self.forward_audio(
                tokens, t, phones, speaker, speaker_mask, memory, memory_mask, residuals
            )
        if tokens.is_floating_point():
            if not isinstance(modalities, str):
                raise ModalityError("a latent batch belongs to one continuous modality; pass its name")
            return self.forward_latent(
                tokens, t, modalities, caption, caption_mask, memory, memory_mask, residuals
            )
        B, T = tokens.shape
        context, context_mask = self._context(
            B, context, context_mask, memory, memory_mask, caption, caption_mask
        )
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
        caption: Tensor | None = None,
        caption_mask: Tensor | None = None,
        speaker: Tensor | None = None,
        speaker_mask: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Cross-attention context: every conditioner's tokens (its null token when its signal is absent),
        then any raw ``context``."""
        signals = {
            "memory": (memory, memory_mask),
            "caption": (caption, caption_mask),
            "speaker": (speaker, speaker_mask),
        }
        parts, masks = [], []
        for name, (emb, mask) in signals.items():
            if name not in self.conditioners:
                if emb is not None:
                    raise ModalityError(
                        f"this model has no {name} conditioner: it was not trained with {name} "
                        + ("(memory-guided generation)" if name == "memory" else "conditioning")
                    )
                continue
            ctx, m = self.conditioners[name](emb, mask, batch)
            parts.append(ctx)
            masks.append(m)
        if context is not None:
            parts.append(context if not parts else context.to(parts[0].dtype))
            cm = context_mask
            masks.append(
                torch.ones(context.shape[:2], dtype=torch.bool, device=context.device) if cm is None else cm
            )
        if not parts:
            return None, None
        return torch.cat(parts, 1), torch.cat(masks, 1)

    def forward_latent(
        self,
        x: Tensor,
        t: Tensor,
        modality: str = "image",
        caption: Tensor | None = None,
        caption_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        residuals: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Continuous modalities: latent (B, C, h, w) at times t (B,) -> the head's prediction (velocity),
        same shape. ``caption`` (B, K, 384) MiniLM embeddings condition through cross-attention."""
        head = self.head(modality)
        B = x.shape[0]
        tokens = head.embed(x)
        mod = torch.full(tokens.shape[:2], modality_id(modality), dtype=torch.long, device=x.device)
        ctx, ctx_mask = self._context(B, None, None, memory, memory_mask, caption, caption_mask)
        h = self.backbone(tokens, t, mod, ctx, ctx_mask, residuals, causal=False)
        return head.project(h, (x.shape[2], x.shape[3]))

    def forward_audio(
        self,
        x: Tensor,
        t: Tensor,
        phones: Tensor,
        speaker: Tensor | None = None,
        speaker_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        residuals: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Speech: normalised mel (B, F, n_mels) at times t (B,) with the phone of each frame (B, F) and
        speaker embeddings (B, 1, E) through cross-attention -> velocity (B, F, n_mels)."""
        head = self.head("audio")
        tokens = head.embed(x, phones)
        mod = torch.full(tokens.shape[:2], modality_id("audio"), dtype=torch.long, device=x.device)
        ctx, ctx_mask = self._context(
            x.shape[0], None, None, memory, memory_mask, speaker=speaker, speaker_mask=speaker_mask
        )
        h = self.backbone(tokens, t, mod, ctx, ctx_mask, residuals, causal=False)
        return head.project(h)

    def components(self) -> dict[str, nn.Module]:
        """Every stored component by name: 'backbone', 'heads/<modality>', 'conditioners/<name>' and,
        with an audio head, 'voice' (reference encoder and duration predictor)."""
        out: dict[str, nn.Module] = {"backbone": self.backbone}
        out.update({f"heads/{m}": h for m, h in self.heads.items()})
        out.update({f"conditioners/{c}": m for c, m in self.conditioners.items()})
        if self.voice is not None:
            out["voice"] = self.voice
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
    """Fraction of the score network's parameters held by the backbone (R4.2 requires >= 0.90); codecs
    beside the network (the VAE, the voice model) are not counted."""
    network = sum(n for name, n in split.items() if name.split("/")[0] in SCORE_NETWORK_PARTS)
    return split["backbone"] / network
