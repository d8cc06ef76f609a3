"""Pitch judges: pYIN finds a tone's pitch, noise is unvoiced, and the agreement figures measure cents."""

from __future__ import annotations

import numpy as np
import pytest

from arrowdiff.errors import ConfigError

pytest.importorskip("librosa")

from arrowdiff.speech.pitch_eval import cents, pitch_agreement, voicing  # noqa: E402

SR = 16_000


def voiced_tone(f0: float, seconds: float = 1.5) -> np.ndarray:
    """A glottal-like harmonic tone: 12 harmonics with falling amplitude."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.05 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 13))).astype(np.float32)


def test_a_tone_is_voiced_at_its_pitch_and_noise_is_not() -> None:
    frac, f0 = voicing(voiced_tone(120.0))
    assert frac > 0.9 and abs(cents(f0, 120.0)) < 20
    frac, _ = voicing(np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32))
    assert frac < 0.2


def test_pitch_agreement_measures_the_interval() -> None:
    tone = voiced_tone(110.0)
    same = pitch_agreement(tone, tone)
    assert same["vuv_f1"] > 0.95 and same["f0_rmse_cents"] < 5
    up = pitch_agreement(tone, voiced_tone(110.0 * 2 ** (150 / 1200)))
    assert up["vuv_f1"] > 0.9 and 120 < up["f0_rmse_cents"] < 180
    noise = pitch_agreement(tone, np.random.default_rng(1).normal(0, 0.1, len(tone)).astype(np.float32))
    assert noise["vuv_f1"] < 0.6 and noise["voiced"] < noise["voiced_real"] / 2


def test_pitch_errors_are_clear() -> None:
    assert np.isnan(cents(float("nan"), 100.0)) and cents(200.0, 100.0) == pytest.approx(1200.0)
    with pytest.raises(ConfigError, match="shorter than one pitch frame"):
        voicing(np.zeros(100, np.float32))
