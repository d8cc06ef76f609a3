"""Frechet distance between Gaussians fitted to feature sets (the FID formula, Heusel et al. 2017).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

The cross term uses the symmetric form ``(S_a^1/2 S_b S_a^1/2)^1/2``, whose trace equals that of
``(S_a S_b)^1/2`` but which is symmetric positive semi-definite, so both square roots come from ``eigh``
(no scipy, no complex parts). Eigenvalues that round to slightly below zero (rank-deficient covariances:
fewer samples than feature dimensions) are clipped at zero. Everything runs in float64.

The figure is biased upwards for small sample counts (the covariance estimates are noisy), so two sets are
only comparable at the same N: report the distance between two real sets of that N beside it.
"""

from __future__ import annotations

import numpy as np

from arrowdiff.errors import ConfigError


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N-1) of ``features`` ``(N, D)``, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ConfigError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ConfigError(
            f"shapes do not match: mu {mu_a.shape} / {mu_b.shape}, cov {cov_a.shape} / {cov_b.shape}"
        )
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_cross = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_cross)
    return max(fd, 0.0)  # rounding can leave -1e-12 for identical inputs


def feature_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` ``(N, D)`` and ``b`` ``(M, D)``."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


__all__ = ["feature_frechet_distance", "frechet_distance", "gaussian_stats"]
