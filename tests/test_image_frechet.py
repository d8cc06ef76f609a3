"""Frechet distance on Gaussians: closed forms, FD(X, X) = 0, growth with a mean shift."""

from __future__ import annotations

import numpy as np
import pytest

from arrowdiff.errors import ConfigError
from arrowdiff.image.frechet import feature_frechet_distance, frechet_distance, gaussian_stats


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_equal_covariances_is_squared_mean_distance() -> None:
    rng = np.random.default_rng(0)
    cov = _spd(6, rng)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu_a, cov, mu_b, cov) == pytest.approx(
        float(((mu_a - mu_b) ** 2).sum()), rel=1e-9
    )


def test_diagonal_covariances_closed_form() -> None:
    rng = np.random.default_rng(1)
    va, vb = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(expected, rel=1e-9)


def test_non_commuting_covariances_match_the_trace_formula() -> None:
    """tr((S_a S_b)^1/2) from the eigenvalues of S_a S_b (real and >= 0 for SPD pairs)."""
    rng = np.random.default_rng(2)
    a, b = _spd(4, rng), _spd(4, rng)
    tr = np.sqrt(np.linalg.eigvals(a @ b).real).sum()
    expected = np.trace(a) + np.trace(b) - 2 * tr
    assert frechet_distance(np.zeros(4), a, np.zeros(4), b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(np.zeros(4), a, np.zeros(4), b) == pytest.approx(
        frechet_distance(np.zeros(4), b, np.zeros(4), a), rel=1e-8
    )


def test_same_features_give_zero_and_a_mean_shift_grows() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16))
    assert feature_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shifts = [feature_frechet_distance(x, x + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([16 * 0.25, 16 * 1.0, 16 * 4.0], rel=1e-9)  # |shift|^2, cov unchanged


def test_rank_deficient_covariances_are_fine() -> None:
    """Fewer samples than dimensions (the benchmark's case: 501 images, 1280 features)."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 50)), rng.normal(size=(20, 50))
    assert feature_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert feature_frechet_distance(x, y) > 0
    mu, cov = gaussian_stats(x)
    assert mu.shape == (50,) and cov.shape == (50, 50)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ConfigError):
        gaussian_stats(np.zeros(5))
    with pytest.raises(ConfigError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
