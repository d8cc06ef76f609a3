"""Waveforms for vocoder training: one split read straight from the speech data folder, and random
hop-aligned segments gathered on the device.

Per split ``S`` the folder has ``S_utts.parquet`` (columns ``n_samples`` and ``wave_offset``, among others)
and ``S_wave.npy`` (int16 PCM at 16 kHz, utterances concatenated); see :mod:`arrowdiff.speech.dataset`.
Only those two files are read here (``np.load(mmap_mode="r", allow_pickle=False)`` + pyarrow), so vocoder
training needs nothing else of the data set. The whole training split is copied once into one int16
tensor on the device; a batch is then one index gather, with no per-step host work besides a few random
integers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

PCM_SCALE = 1.0 / 32768.0


@dataclass
class WaveSplit:
    """One split's concatenated int16 PCM (memory-mapped) and its utterance spans."""

    name: str
    wave: np.ndarray  # (total_samples,) int16
    offsets: np.ndarray  # (U,) int64 start of each utterance in ``wave``
    lengths: np.ndarray  # (U,) int64 samples of each utterance

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / 16_000

    def utterance(self, i: int) -> np.ndarray:
        """float32 samples in [-1, 1] of utterance ``i``."""
        start = int(self.offsets[i])
        return np.asarray(self.wave[start : start + int(self.lengths[i])], dtype=np.float32) * PCM_SCALE


def split_exists(data: Path, split: str) -> bool:
    """Whether ``data`` has both files of ``split``."""
    return (Path(data) / f"{split}_utts.parquet").is_file() and (Path(data) / f"{split}_wave.npy").is_file()


def load_wave_split(data: Path, split: str) -> WaveSplit:
    """Open ``split`` of the speech folder ``data``; ConfigError names the missing file and the fix."""
    utts, wave_file = Path(data) / f"{split}_utts.parquet", Path(data) / f"{split}_wave.npy"
    for f in (utts, wave_file):
        if not f.is_file():
            raise ConfigError(
                f"{f} is missing: --data must be a speech data folder with {split}_utts.parquet and "
                f"{split}_wave.npy (build it with python -m arrowdiff.speech.build_data)"
            )
    table = pq.read_table(utts, columns=["n_samples", "wave_offset"])
    lengths = table.column("n_samples").to_numpy().astype(np.int64)
    offsets = table.column("wave_offset").to_numpy().astype(np.int64)
    wave = np.load(wave_file, mmap_mode="r", allow_pickle=False)
    if wave.dtype != np.int16 or wave.ndim != 1:
        raise ConfigError(f"{wave_file}: expected 1-D int16 PCM, got {wave.dtype} {wave.shape}")
    if len(lengths) and int((offsets + lengths).max()) > len(wave):
        raise ConfigError(f"{utts}: utterance spans run past the {len(wave)} samples of {wave_file}")
    return WaveSplit(split, wave, offsets, lengths)


def read_manifest(data: Path) -> dict[str, Any]:
    """``manifest.json`` of the data folder, or {} when there is none."""
    f = Path(data) / "manifest.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


class SegmentSampler:
    """Random ``segment``-sample crops of a split, starting at multiples of ``hop`` inside an utterance.

    Utterances are drawn in proportion to their number of possible starts (so every hop-aligned window of
    the split is equally likely); an utterance shorter than ``segment`` gives one crop from its start,
    zero-padded past its end.
    """

    def __init__(self, split: WaveSplit, segment: int, hop: int, device: str | torch.device) -> None:
        if segment < 1 or segment % hop:
            raise ConfigError(f"--segment {segment} must be a positive multiple of the hop {hop}")
        if len(split) == 0:
            raise ConfigError(f"split {split.name!r} has no utterances")
        self.segment, self.hop = segment, hop
        self.wave = torch.from_numpy(np.concatenate([split.wave, np.zeros(segment, np.int16)])).to(device)
        starts = np.maximum(1, (split.lengths - segment) // hop + 1)
        self.cum = torch.from_numpy(np.cumsum(starts)).to(device)
        self.total = int(starts.sum())
        self.offsets = torch.from_numpy(split.offsets).to(device)
        self.lengths = torch.from_numpy(split.lengths).to(device)
        self.arange = torch.arange(segment, device=device)

    def sample(self, batch_size: int, gen: torch.Generator) -> Tensor:
        """(batch_size, segment) float32 in [-1, 1] on the device; a pure function of ``gen``'s state."""
        return self.sample_positions(batch_size, gen)[0]

    def sample_positions(self, batch_size: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`sample` plus each crop's utterance index and start sample inside that utterance."""
        r = torch.randint(self.total, (batch_size,), generator=gen)
        if self.cum.is_cuda:  # a pageable host-to-device copy would wait for the GPU: pin, copy async
            r = r.pin_memory().to(self.cum.device, non_blocking=True)
        utt = torch.searchsorted(self.cum, r, right=True)
        before = torch.where(utt > 0, self.cum[(utt - 1).clamp(min=0)], torch.zeros_like(r))
        rel = (r - before) * self.hop
        idx = (self.offsets[utt] + rel)[:, None] + self.arange
        x = self.wave[idx].float() * PCM_SCALE
        return x * ((rel[:, None] + self.arange) < self.lengths[utt, None]), utt, rel


class PredictedMels:
    """A split's predicted log-mels (:mod:`arrowdiff.speech.predicted_mels`), swapped in for the real
    mels of random batch rows: the vocoder then learns to voice the acoustic model's smoother mels
    (HiFi-GAN, Kong et al. 2020, section 4.4)."""

    def __init__(self, data: Path, split: str, hop: int, n_mels: int, device: str | torch.device) -> None:
        path = Path(data) / f"{split}_predicted_mel.npy"
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing: make it with python -m arrowdiff.speech.predicted_mels --model MODEL "
                f"--data {data} --split {split}"
            )
        table = pq.read_table(Path(data) / f"{split}_utts.parquet", columns=["n_frames", "mel_offset"])
        self.n_frames = torch.from_numpy(table.column("n_frames").to_numpy().astype(np.int64)).to(device)
        self.offsets = torch.from_numpy(table.column("mel_offset").to_numpy().astype(np.int64)).to(device)
        mels = np.load(path, mmap_mode="r", allow_pickle=False)
        frames = int((self.offsets + self.n_frames).max())
        if mels.shape != (frames, n_mels):
            raise ConfigError(
                f"{path}: shape {mels.shape}, but {split}_utts.parquet has {frames} frames and the vocoder "
                f"reads {n_mels} mel bands: make it again from this data set with predicted_mels"
            )
        self.mels = torch.from_numpy(np.array(mels, dtype=np.float16)).to(device)  # a copy in memory
        self.hop = hop

    def mix(self, mel: Tensor, utt: Tensor, rel: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """``mel`` (B, n_mels, F) of crops starting ``rel`` samples into utterances ``utt``, with the rows
        drawn with probability ``p`` replaced by the predicted frames (real frames past an utterance's
        end are kept: they are the crop's zero padding)."""
        rows = (torch.rand(mel.shape[0], generator=gen) < p).to(mel.device)
        frame = rel[:, None] // self.hop + torch.arange(mel.shape[-1], device=mel.device)  # (B, F)
        inside = frame < self.n_frames[utt, None]
        idx = (self.offsets[utt, None] + frame).clamp(max=len(self.mels) - 1)
        pred = self.mels[idx].float().transpose(1, 2)  # (B, n_mels, F)
        use = (rows[:, None] & inside)[:, None, :]
        return torch.where(use, pred, mel)


__all__ = [
    "PCM_SCALE",
    "PredictedMels",
    "SegmentSampler",
    "WaveSplit",
    "load_wave_split",
    "read_manifest",
    "split_exists",
]
