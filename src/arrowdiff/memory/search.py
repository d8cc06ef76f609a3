"""The plumbing behind ``ArrowStorage.search`` and ``snapshot``: one store state as a matrix (``View``), its
candidate top-k (exact cosine, or through the HNSW index), and the ranking of candidates into
``SearchHit``s. No I/O and no locking: the store hands in a view and, for ``"index"``, the index of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arrowdiff.memory.index import HNSWIndex
from arrowdiff.memory.records import Memory, SearchHit
from arrowdiff.memory.retrieval import exact_topk, hopfield_retrieve, softmax

METHODS = ("exact", "hopfield", "index")


@dataclass(frozen=True)
class View:
    """The live memories of one store state, in stored order, with their embeddings as one matrix."""

    memories: list[Memory]
    ids: list[str]
    matrix: np.ndarray  # (N, D) float32, read-only
    kinds: np.ndarray  # (N,) object
    modalities: np.ndarray  # (N,) object

    @classmethod
    def of(cls, memories: list[Memory], dim: int) -> View:
        """The view of ``memories`` (``dim``-d embeddings); its matrix is read-only."""
        matrix = (
            np.stack([m.embedding for m in memories]) if memories else np.zeros((0, dim), dtype=np.float32)
        )
        matrix.flags.writeable = False
        return cls(
            memories,
            [m.id for m in memories],
            matrix,
            np.array([m.kind for m in memories], dtype=object),
            np.array([m.modality for m in memories], dtype=object),
        )

    def rows(self, kind: str | None, modality: str | None) -> np.ndarray | None:
        """Row positions passing the filters, or None for all rows."""
        if kind is None and modality is None:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if kind is not None:
            keep &= self.kinds == kind
        if modality is not None:
            keep &= self.modalities == modality
        return np.flatnonzero(keep)


def exact_candidates(
    view: View, q: np.ndarray, k: int, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by brute-force cosine over ``rows`` of the view (all rows when None)."""
    matrix = view.matrix if rows is None else view.matrix[rows]
    cand, scores = exact_topk(matrix, q, k)
    cand = cand if rows is None else rows[cand]
    return cand, scores


def index_candidates(
    index: HNSWIndex, view: View, q: np.ndarray, k: int, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k through HNSW: a filtered search over-fetches, falls back to exact when too few pass."""
    fetch = k if rows is None else min(len(view.ids), 4 * k + 32)
    cand, _ = index.search(q, fetch, expansion=None if fetch <= 64 else 4 * fetch)
    if rows is not None:
        cand = cand[np.isin(cand, rows)]
        if len(cand) < min(k, len(rows)):  # the filter is too selective for the graph: exact on it
            sub, _ = exact_topk(view.matrix[rows], q, k)
            cand = rows[sub]
    scores = view.matrix[cand] @ q  # exact cosines of the candidates
    order = np.lexsort((cand, -scores))[:k]
    return cand[order], scores[order]


def rank(
    view: View,
    cand: np.ndarray,
    scores: np.ndarray,
    q: np.ndarray,
    k: int,
    *,
    method: str,
    beta: float,
    steps: int,
) -> list[SearchHit]:
    """The hits for candidate rows ``cand`` (cosines ``scores``, best first): ordered by Hopfield weight
    for ``"hopfield"``, else as given, with softmax(``beta`` * score) weights."""
    if method == "hopfield":
        _, p = hopfield_retrieve(view.matrix[cand], q, beta=beta, steps=steps)
        order = np.lexsort((np.arange(len(cand)), -p))[:k]
        return [SearchHit(view.memories[cand[i]], float(scores[i]), float(p[i])) for i in order]
    weights = softmax(beta * scores)
    return [
        SearchHit(view.memories[r], float(s), float(w)) for r, s, w in zip(cand, scores, weights, strict=True)
    ]
