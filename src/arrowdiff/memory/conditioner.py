"""MemoryConditioner: the user's prompt -> ArrowStorage retrieval -> conditioning for the score network.

R5.1-R5.3: it queries the store with the prompt, takes the embeddings of the top-K memories and hands them
to the network, whose memory projection (``network.conditioning.MemoryProjection``) maps them to K
cross-attention tokens of the conditioning width. ``project`` times exactly that projection (R5.6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from arrowdiff.config import MEMORY_EMBED_DIM
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.network.denoiser import Cond
from arrowdiff.network.model import UnifiedModel


@dataclass(frozen=True)
class Retrieved:
    """What one query retrieved: the memories' texts, cosine scores, weights and (1, K, 384) embeddings."""

    texts: list[str]
    scores: list[float]
    weights: list[float]
    embeddings: Tensor  # (1, K, 384) float32
    mask: Tensor  # (1, K) bool

    def cond(self) -> Cond:
        """The conditioning that steers the denoiser with these memories."""
        return Cond(memory=self.embeddings, memory_mask=self.mask)


class MemoryConditioner:
    """Queries a store (anything with ``search(query, k, method=...)`` returning hits that carry
    ``memory.embedding``, ``memory.text``, ``score`` and ``weight``: ArrowStorage) and conditions a model."""

    def __init__(
        self,
        store: object,
        k: int = 4,
        method: str = "hopfield",
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        if not 1 <= k <= 64:
            raise ConfigError(f"memory top-K k={k} must be in [1, 64]")
        self.store = store
        self.k = k
        self.method = method
        self.embed = embed

    def retrieve(self, prompt: str) -> Retrieved:
        """The top-K memories for ``prompt``. An empty prompt takes the K most recent memories (equal
        weights, score 0); an empty store gives K=0, so the model runs unconditioned."""
        store = self.store
        if not len(store):  # type: ignore[arg-type]
            memories, scores, weights = [], [], []
        elif not prompt.strip():
            memories = store.list(newest_first=True, limit=self.k)  # type: ignore[attr-defined]
            scores, weights = [0.0] * len(memories), [1.0 / len(memories)] * len(memories)
        else:
            query: str | np.ndarray = prompt if self.embed is None else self.embed([prompt])[0]
            hits = store.search(query, k=self.k, method=self.method)  # type: ignore[attr-defined]
            memories = [h.memory for h in hits]
            scores, weights = [float(h.score) for h in hits], [float(h.weight) for h in hits]
        embeddings = torch.zeros(1, len(memories), MEMORY_EMBED_DIM)
        if memories:
            embeddings[0] = torch.from_numpy(
                np.stack([np.asarray(m.embedding, np.float32) for m in memories])
            )
        return Retrieved(
            texts=[m.text for m in memories],
            scores=scores,
            weights=weights,
            embeddings=embeddings,
            mask=torch.ones(1, len(memories), dtype=torch.bool),
        )

    @staticmethod
    @torch.no_grad()
    def project(model: UnifiedModel, retrieved: Retrieved) -> tuple[Tensor, Tensor]:
        """The K (+ null) cross-attention tokens (1, 1 + K, D_cond) the network attends to (R5.3)."""
        if "memory" not in model.conditioners:
            raise ModalityError(
                "this model has no memory conditioner: load a model trained with `arrowdiff train --memory`"
            )
        return model.conditioners["memory"](retrieved.embeddings, retrieved.mask, 1)


__all__ = ["MemoryConditioner", "Retrieved"]
