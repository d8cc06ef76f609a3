"""The speech data set on disk and its loader: ``SpeechSet.load(folder, split)`` (R3.2).

Per split ``S`` (``train``, ``val``, ``heldout``) the folder holds plain numpy arrays and one Parquet index,
no pickle anywhere:

- ``S_utts.parquet``: one row per utterance (utt_id, text, source, speaker, voice, engine, pitch_cents,
  stretch, n_samples, n_frames, n_phones, wave_offset, mel_offset, phone_offset);
- ``S_mel.npy`` uint8 (total_frames, n_mels): ``quantize_mel(log_mel(wave)).T`` of every utterance in row
  order (``dequantize_mel`` gives the log-mel back);
- ``S_phones.npy`` int16 phone ids (``phones.PHONES``) and ``S_durations.npy`` int16 mel frames per phone;
- ``S_wave.npy`` int16 PCM at 16 kHz;

plus ``manifest.json`` (mel config, speakers, counts, sources, seed, command). Utterance ``i`` spans
``[offset, offset + n)`` of each array. The loader memory-maps the arrays (``np.load(mmap_mode="r")``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import MelConfig, dequantize_mel

SPLITS = ("train", "val", "heldout")
MANIFEST = "manifest.json"
ARRAYS = ("mel", "phones", "durations", "wave")
COLUMNS = (
    "utt_id", "text", "source", "speaker", "voice", "engine", "pitch_cents", "stretch",
    "n_samples", "n_frames", "n_phones", "wave_offset", "mel_offset", "phone_offset",
)  # fmt: skip


def split_files(folder: Path, split: str) -> dict[str, Path]:
    """Paths of one split's files: keys ``utts`` and ``mel``, ``phones``, ``durations``, ``wave``."""
    folder = Path(folder)
    return {"utts": folder / f"{split}_utts.parquet"} | {a: folder / f"{split}_{a}.npy" for a in ARRAYS}


@dataclass
class SpeechSet:
    """One split of a speech data set, memory-mapped; ``len(s)`` utterances indexed 0..len-1."""

    folder: Path
    split: str
    index: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]

    @classmethod
    def load(cls, folder: Path | str, split: str, arrays: tuple[str, ...] = ARRAYS) -> SpeechSet:
        """Open split ``split`` of the data set in ``folder`` (written by ``arrowdiff.speech.build_data``),
        with the ``arrays`` a caller needs (a training copy may lack the waves)."""
        folder = Path(folder)
        files = {k: p for k, p in split_files(folder, split).items() if k == "utts" or k in arrays}
        missing = [str(p) for p in [folder / MANIFEST, *files.values()] if not p.exists()]
        if missing:
            raise ConfigError(
                f"speech split {split!r} is incomplete in {folder}: missing {', '.join(missing)}; "
                f"build it with `python -m arrowdiff.speech.build_data --out {folder}`"
            )
        table = pq.read_table(files["utts"])
        index = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        loaded = {a: np.load(files[a], mmap_mode="r", allow_pickle=False) for a in arrays}
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return cls(folder, split, index, loaded, manifest)

    def __len__(self) -> int:
        return len(self.index["utt_id"])

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig(**self.manifest["mel"])

    def _span(self, i: int, offset: str, size: str) -> slice:
        start = int(self.index[offset][i])
        return slice(start, start + int(self.index[size][i]))

    def mel_codes(self, i: int) -> np.ndarray:
        """uint8 mel codes of utterance ``i``, (n_frames, n_mels) as stored."""
        return np.array(self.arrays["mel"][self._span(i, "mel_offset", "n_frames")])

    def mel(self, i: int) -> np.ndarray:
        """float32 log-mel of utterance ``i``, (n_mels, n_frames)."""
        return dequantize_mel(self.mel_codes(i).T).numpy()

    def phones(self, i: int) -> np.ndarray:
        """int64 phone ids of utterance ``i``."""
        return self.arrays["phones"][self._span(i, "phone_offset", "n_phones")].astype(np.int64)

    def durations(self, i: int) -> np.ndarray:
        """int64 mel frames per phone of utterance ``i`` (they sum to its n_frames)."""
        return self.arrays["durations"][self._span(i, "phone_offset", "n_phones")].astype(np.int64)

    def wave(self, i: int) -> np.ndarray:
        """float32 samples in [-1, 1] at 16 kHz of utterance ``i``."""
        return self.arrays["wave"][self._span(i, "wave_offset", "n_samples")].astype(np.float32) / 32768.0

    def speaker(self, i: int) -> str:
        return str(self.index["speaker"][i])

    def text(self, i: int) -> str:
        return str(self.index["text"][i])

    def utt_id(self, i: int) -> str:
        return str(self.index["utt_id"][i])

    @property
    def speakers(self) -> list[str]:
        """Speaker names of this split, sorted."""
        return sorted(set(map(str, self.index["speaker"])))

    def by_speaker(self) -> dict[str, list[int]]:
        """Speaker name -> indices of its utterances (ascending)."""
        out: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(self.index["speaker"]):
            out[str(name)].append(i)
        return dict(out)

    def indices(self, speaker: str) -> list[int]:
        """Indices of the utterances of ``speaker`` (empty when it has none in this split)."""
        return self.by_speaker().get(speaker, [])


def other_utterance(pool: np.ndarray | list[int], u: int, generator: torch.Generator) -> int:
    """A random utterance of ``pool`` (one speaker's ascending indices) other than ``u``; ``u`` itself only
    when it is alone. Draws one integer from ``generator``. The reference of zero-shot cloning: the same
    voice saying different words."""
    j = int(pool[int(torch.randint(0, len(pool), (1,), generator=generator))])
    if j == u and len(pool) > 1:
        j = int(pool[(int(np.searchsorted(pool, u)) + 1) % len(pool)])
    return j


__all__ = ["SPLITS", "MANIFEST", "COLUMNS", "other_utterance", "split_files", "SpeechSet"]
