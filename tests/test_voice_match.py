"""Voice matching (AdaIN on log-mel bins): statistics moved to the reference's, content kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import LOG_FLOOR
from arrowdiff.speech.voice_match import (
    MAX_SCALE,
    MIN_STD,
    active_frames,
    match_statistics,
    mel_statistics,
)
from arrowdiff.speech_core import SpeechOptions


def speechlike_mel(seed: int, frames: int = 120, bins: int = 80, pause: int = 20) -> torch.Tensor:
    """A log-mel with a per-bin envelope, moving content and quiet pauses at both ends."""
    g = torch.Generator().manual_seed(seed)
    envelope = torch.linspace(-2.0, -6.0, bins)[:, None] + 0.5 * torch.randn(bins, 1, generator=g)
    mel = envelope + torch.randn(bins, frames, generator=g)
    mel[:, :pause] = -11.0 + 0.1 * torch.randn(bins, pause, generator=g)
    mel[:, -pause:] = -11.0
    return mel


def test_pauses_are_not_active_frames() -> None:
    mel = speechlike_mel(0)
    mask = active_frames(mel)
    assert not mask[:20].any() and not mask[-20:].any() and mask[20:-20].float().mean() > 0.8


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_matched_mel_takes_the_target_statistics_and_keeps_the_content(a: int, b: int) -> None:
    mel, ref = speechlike_mel(a), speechlike_mel(b, frames=90) + 2.0
    target = mel_statistics(ref)
    out = match_statistics(mel, target)
    mask = active_frames(mel)  # a per-bin affine map with positive scale: measured on the input's frames
    assert (out[:, mask] > LOG_FLOOR).all()  # no speech frame reaches the floor clamp here
    assert torch.allclose(out[:, mask].mean(1), target.mean, atol=1e-4)
    own = mel_statistics(mel)  # the std moves to the target's, by a ratio bounded to [1/MAX, MAX]
    ratio = (target.std / own.std.clamp(min=MIN_STD)).clamp(1 / MAX_SCALE, MAX_SCALE)
    assert torch.allclose(out[:, mask].std(1), own.std * ratio, atol=1e-3)
    # content: every bin's speech frames are the input's up to a positive scale and shift
    x, y = mel[:, mask], out[:, mask]
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    corr = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
    assert torch.all(corr > 0.9999)


def test_strength_blends_and_zero_is_identity() -> None:
    mel, ref = speechlike_mel(1), speechlike_mel(2) * 0.8 + 0.5
    target = mel_statistics(ref)
    assert torch.equal(match_statistics(mel, target, 0.0), mel)
    full = match_statistics(mel, target, 1.0)
    assert torch.allclose(match_statistics(mel, target, 0.5), 0.5 * (mel + full), atol=1e-5)
    assert torch.allclose(full[:, active_frames(mel)].mean(1), target.mean, atol=1e-4)


def test_pauses_stay_silence_and_short_mels_are_matched() -> None:
    """A bin that barely varies is not blown up, nothing falls below the log floor, and a one-word
    output (few active frames) is matched over all its frames instead of raising."""
    mel = speechlike_mel(4)
    mel[5] = -6.0 + 0.001 * torch.randn(mel.shape[1], generator=torch.Generator().manual_seed(0))
    wide = mel_statistics(speechlike_mel(5) * 2.0)
    out = match_statistics(mel, wide)
    assert out.min() >= LOG_FLOOR - 1e-5
    pauses = torch.cat([out[:5, :20], out[6:, :20]])  # every bin but the flat one is silent there
    assert torch.allclose(pauses, torch.full_like(pauses, LOG_FLOOR))
    assert out[5].std() < 0.1  # the flat bin stays flat (std ratio bounded)
    short = torch.full((80, 10), -11.0)
    short[:, 4] = -3.0
    matched = match_statistics(short, mel_statistics(speechlike_mel(6)))
    assert matched.shape == (80, 10) and torch.isfinite(matched).all() and not torch.equal(matched, short)


def test_voice_match_errors_name_the_value() -> None:
    mel = speechlike_mel(3)
    with pytest.raises(ConfigError, match=r"voice_match=1.5 must be in \[0, 1\]"):
        match_statistics(mel, mel_statistics(mel), 1.5)
    with pytest.raises(ConfigError, match="mel has 40 bins"):
        match_statistics(mel[:40], mel_statistics(mel))
    with pytest.raises(ConfigError, match="only 2 active frames in a mel of 5"):
        mel_statistics(mel[:, 17:22])
    with pytest.raises(ConfigError, match=r"voice_match=-0.1 must be in \[0, 1\]"):
        SpeechOptions(voice_match=-0.1)


def test_cloning_matches_the_reference_statistics(speech_run: Path) -> None:
    """With a reference, the mel the engine vocodes takes the reference's per-bin statistics; with
    voice_match=0 it is the model's own mel, and the engine rejects voice_match without a reference."""
    from arrowdiff import ArrowEngine

    engine = ArrowEngine.from_pretrained(speech_run / "model")
    core = engine.speech_core()
    t = np.arange(48000) / 16000
    tone = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 25))  # a voiced, harmonic "voice"
    ref = (0.05 * tone * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    target = mel_statistics(core.reference_mel((ref, 16000)))
    text = "Hello there, how are you?"
    own = core.speak_mel(text, SpeechOptions(num_steps=2, voice_match=0.0), None, ref, 1)
    matched = core.speak_mel(text, SpeechOptions(num_steps=2), None, ref, 1)
    mask = active_frames(own)
    loud = (target.mean > LOG_FLOOR + 4) & (matched[:, mask] > LOG_FLOOR + 1e-3).all(1)  # no floor clamp
    assert loud.sum() >= 15
    assert torch.allclose(matched[:, mask].mean(1)[loud], target.mean[loud], atol=1e-3)
    assert (own[:, mask].mean(1) - target.mean)[loud].abs().mean() > 0.5  # the model alone is elsewhere
    with pytest.raises(ConfigError, match="also pass reference_audio"):
        engine.diffuse("Hi.", modality="audio", voice_id="low", voice_match=0.5, num_steps=2)
