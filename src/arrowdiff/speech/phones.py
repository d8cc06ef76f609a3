"""The phone inventory shared by the speech data, the audio head and text-to-phone conversion (R3.1).

Phones are the CMU/US-English "radio" set that flite and festival both speak (``flite -ps``,
festival ``utt.save.segs``), plus silence. Ids are part of the weight format: only append.
"""

from __future__ import annotations

import shutil
import subprocess

from arrowdiff.errors import ConfigError

SPECIALS = ("<pad>", "<unk>")
PHONES: tuple[str, ...] = SPECIALS + (
    "pau",
    "aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "b", "ch", "d", "dh", "eh", "el", "em", "en",
    "er", "ey", "f", "g", "hh", "ih", "iy", "jh", "k", "l", "m", "n", "ng", "nx", "ow", "oy", "p",
    "r", "s", "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh",
)  # fmt: skip
PAD_ID = 0
UNK_ID = 1
SILENCE = "pau"
_ALIASES = {"h#": "pau", "brth": "pau", "ssil": "pau", "sil": "pau", "#": "pau"}
_INDEX = {p: i for i, p in enumerate(PHONES)}


def phone_id(phone: str) -> int:
    """Id of one phone; silence aliases map to ``pau``, anything unknown to ``<unk>``."""
    p = phone.strip().lower()
    return _INDEX.get(_ALIASES.get(p, p), UNK_ID)


def phone_ids(phones: list[str]) -> list[int]:
    return [phone_id(p) for p in phones]


def text_to_phones(text: str) -> list[str]:
    """English text -> phones with pauses, by flite's own letter-to-sound rules and lexicon (the same
    front end that made the training phones). Needs the ``flite`` binary (``apt-get install flite``)."""
    if not text or not text.strip():
        raise ConfigError("text for speech is empty: pass a sentence to speak")
    exe = shutil.which("flite")
    if exe is None:
        raise ConfigError(
            "speech needs the flite binary for text-to-phone conversion: install it with "
            "`apt-get install flite` (Debian/Ubuntu) or `brew install flite`"
        )
    out = subprocess.run(
        [exe, "-ps", "-t", " ".join(text.split()), "-o", "none"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    phones = out.split()
    if not phones:
        raise ConfigError(f"flite produced no phones for {text!r}")
    return phones


__all__ = ["PHONES", "PAD_ID", "UNK_ID", "SILENCE", "phone_id", "phone_ids", "text_to_phones"]
