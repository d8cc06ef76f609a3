"""Retrieval over a matrix of unit-norm memory embeddings: plain functions, no store, no I/O.

Notation (Ramsauer et al. 2021): ``X`` (N, D) stored patterns, one memory per row, unit L2 norm; ``xi``
(D,) the state/query pattern; ``beta`` the inverse temperature; ``p`` (N,) the weights over memories.
"""

from __future__ import annotations

import numpy as np

from arrowdiff.errors import ConfigError


def softmax(z: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64 accumulation, float32 out)."""
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0:
        return z.astype(np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def normalize(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit L2 norm along the last axis (float32)."""
    v = np.asarray(v, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, np.float32(1e-12))


def exact_topk(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine top-k: ``(rows, scores)`` of the ``min(k, N)`` rows of ``matrix`` most similar
    to ``query``, best first (ties: lower row first).

    ``matrix`` (N, D) rows and ``query`` (D,) must already have unit norm, so cosine = dot product.
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1 (the number of memories to return; try 5 or 10)")
    n = matrix.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = matrix @ np.asarray(query, dtype=np.float32)  # (N,)
    k = min(k, n)
    rows = np.arange(n) if k == n else np.argpartition(-scores, k - 1)[:k]
    rows = rows[np.lexsort((rows, -scores[rows]))]  # by score desc, then row asc: deterministic
    return rows.astype(np.int64), scores[rows].astype(np.float32)


def hopfield_retrieve(
    X: np.ndarray, xi: np.ndarray, beta: float = 8.0, steps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Modern Hopfield retrieval (Ramsauer et al. 2021, "Hopfield Networks is All You Need", eq. 3):
    repeat ``steps`` times ``p = softmax(beta * X @ xi); xi = X.T @ p``.

    Returns ``(xi, p)``: the retrieved pattern (D,) and the weights (N,) of the last update, which sum
    to 1. With stored patterns that are well separated relative to ``1/beta``, one update already lands
    next to the stored pattern closest to the query (the paper's Theorem 4: exponentially small error).
    The returned pattern is a mixture of unit vectors, so its norm is at most 1.
    """
    if beta <= 0:
        raise ConfigError(f"beta={beta} must be > 0 (inverse temperature; 8-32 for unit-norm embeddings)")
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1 (Hopfield updates; 1 is usually enough)")
    X = np.asarray(X, dtype=np.float32)
    if X.shape[0] == 0:
        raise ConfigError("hopfield_retrieve needs at least one stored pattern (X has 0 rows)")
    xi = np.asarray(xi, dtype=np.float32)
    p = np.zeros(X.shape[0], dtype=np.float32)
    for _ in range(steps):
        p = softmax(beta * (X @ xi))  # (N,)
        xi = p @ X  # (D,) = X^T p
    return xi.astype(np.float32), p
