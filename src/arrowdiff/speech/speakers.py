"""The speakers of the speech data set: natural base voices turned into pseudo-speakers (R3.2).

A pseudo-speaker is one base voice (an engine and its voice) with a fixed ``sox pitch`` shift in cents and
a fixed duration stretch. Training speakers: every training base voice times every shift of
``TRAIN_SHIFTS``, each with a stretch drawn uniformly from ``STRETCH_RANGE`` (seeded), named like
``slt+150``. The held-out voice (flite ``rms``) is never used for training or validation: it is the
zero-shot voice-cloning test voice, at its natural pitch and speed (``rms+0``) and at ``HELDOUT_SHIFTS``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from arrowdiff.errors import ConfigError

TRAIN_VOICES: tuple[tuple[str, str], ...] = (
    ("flite", "slt"),
    ("flite", "awb"),
    ("flite", "kal16"),
    ("festival", "kal"),
    ("festival", "ked"),
)
HELDOUT_VOICE: tuple[str, str] = ("flite", "rms")
TRAIN_SHIFTS: tuple[int, ...] = (-400, -250, -100, 0, 150, 300)
HELDOUT_SHIFTS: tuple[int, ...] = (0, -250, 150)
STRETCH_RANGE = (0.9, 1.15)


@dataclass(frozen=True)
class Speaker:
    """One (pseudo-)speaker: base ``voice`` of ``engine``, pitch shift in cents and duration stretch."""

    name: str
    engine: str
    voice: str
    pitch_cents: int
    stretch: float
    split: str  # "train" (train + val utterances) or "heldout"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speaker_name(voice: str, cents: int) -> str:
    """``slt``, 150 -> ``slt+150``; ``awb``, -250 -> ``awb-250``; ``rms``, 0 -> ``rms+0``."""
    return f"{voice}{cents:+d}"


def make_speakers(
    seed: int,
    train_voices: tuple[tuple[str, str], ...] = TRAIN_VOICES,
    shifts: tuple[int, ...] = TRAIN_SHIFTS,
    heldout_voice: tuple[str, str] | None = HELDOUT_VOICE,
    heldout_shifts: tuple[int, ...] = HELDOUT_SHIFTS,
) -> list[Speaker]:
    """Training speakers (voice-major, shift-minor order) then held-out ones. Stretches come from
    ``numpy.random.default_rng([seed, 1])`` in that order, rounded to 3 decimals; the held-out voice at
    pitch 0 keeps stretch 1.0 (the voice as it is)."""
    rng = np.random.default_rng([seed, 1])
    lo, hi = STRETCH_RANGE
    out = []
    for engine, voice in train_voices:
        for cents in shifts:
            stretch = round(float(rng.uniform(lo, hi)), 3)
            out.append(Speaker(speaker_name(voice, cents), engine, voice, cents, stretch, "train"))
    if heldout_voice is not None:
        engine, voice = heldout_voice
        if heldout_voice in train_voices:
            raise ConfigError(f"held-out voice {voice} is also a training voice: pick another held-out voice")
        for cents in heldout_shifts:
            stretch = 1.0 if cents == 0 else round(float(rng.uniform(lo, hi)), 3)
            out.append(Speaker(speaker_name(voice, cents), engine, voice, cents, stretch, "heldout"))
    return out


__all__ = [
    "TRAIN_VOICES",
    "HELDOUT_VOICE",
    "TRAIN_SHIFTS",
    "HELDOUT_SHIFTS",
    "STRETCH_RANGE",
    "Speaker",
    "speaker_name",
    "make_speakers",
]
