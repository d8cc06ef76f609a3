"""Training batches for the mel prior: whole utterances with their phones, durations and a speaker
embedding from the unified model's own (frozen) reference encoder.

The speaker input of a row is, with probability ``table_p``, its voice's built-in embedding (the voice
table, what ``voice_id=`` uses) and otherwise the embedding of a *different* utterance of the same speaker
(what a 5 s reference gives when cloning), so the prior serves both. Batches are pure functions of the
step's generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from arrowdiff.network.model import UnifiedModel
from arrowdiff.network.voice import MIN_REFERENCE_FRAMES
from arrowdiff.speech.dataset import SpeechSet, other_utterance
from arrowdiff.speech.mel import dequantize_mel


@dataclass
class PriorBatch:
    mel: Tensor  # (B, F, n_mels) normalised log-mel, F a multiple of frames_per_token
    mask: Tensor  # (B, F) bool: real frames
    phones: Tensor  # (B, P) phone ids (0 after the end)
    durations: Tensor  # (B, P) frames per phone (0 after the end)
    speaker: Tensor  # (B, E)


class PriorData:
    """One split as whole utterances, with per-utterance speaker embeddings from ``model``'s voice model."""

    def __init__(self, folder: Path, split: str, model: UnifiedModel, max_frames: int = 512) -> None:
        data = SpeechSet.load(folder, split, arrays=("mel", "phones", "durations"))
        head, voice = model.head("audio"), model.voice
        assert voice is not None
        self.k = model.cfg.audio.frames_per_token
        self.max_frames = max_frames - max_frames % self.k
        self.mel = torch.from_numpy(np.array(data.arrays["mel"]))  # uint8 (N, n_mels)
        self.n_frames = data.index["n_frames"].astype(np.int64)
        self.offset = data.index["mel_offset"].astype(np.int64)
        self.phones = [torch.from_numpy(data.phones(i)) for i in range(len(data))]
        self.durations = [torch.from_numpy(data.durations(i)) for i in range(len(data))]
        self.normalize = head.normalize
        self.pools = data.by_speaker()
        self.speaker_of = {i: s for s, pool in self.pools.items() for i in pool}
        voices = list(model.cfg.voice.voices)
        self.table = {s: voice.voice_table[voices.index(s)].float() for s in self.pools if s in voices}
        with torch.no_grad():  # each utterance's own embedding (up to max_frames of it, tiled if short)
            embs = []
            for i in range(len(data)):
                m = self.utterance_mel(i)[: self.max_frames]
                m = m.repeat(-(-MIN_REFERENCE_FRAMES // len(m)), 1)
                embs.append(voice.embed_reference(m.T[None].float())[0].float())
        self.embedding = torch.stack(embs)

    def __len__(self) -> int:
        return len(self.n_frames)

    def utterance_mel(self, i: int) -> Tensor:
        """Normalised log-mel (n_frames, n_mels) of utterance ``i``."""
        o = int(self.offset[i])
        return self.normalize(dequantize_mel(self.mel[o : o + int(self.n_frames[i])]))

    def reference(self, i: int, g: torch.Generator, table_p: float) -> Tensor:
        s = self.speaker_of[i]
        if s in self.table and float(torch.rand((), generator=g)) < table_p:
            return self.table[s]
        return self.embedding[other_utterance(self.pools[s], i, g)]

    def batch(self, rows: list[int] | np.ndarray, g: torch.Generator, table_p: float = 0.5) -> PriorBatch:
        rows = [int(r) for r in rows]
        k = self.k
        F = min(self.max_frames, max(-(-int(self.n_frames[r]) // k) * k for r in rows))
        P = max(len(self.phones[r]) for r in rows)
        B, M = len(rows), self.mel.shape[1]
        mel = torch.zeros(B, F, M)
        mask = torch.zeros(B, F, dtype=torch.bool)
        phones = torch.zeros(B, P, dtype=torch.long)
        durations = torch.zeros(B, P, dtype=torch.long)
        for b, r in enumerate(rows):
            m = self.utterance_mel(r)[:F]
            mel[b, : len(m)], mask[b, : len(m)] = m, True
            phones[b, : len(self.phones[r])] = self.phones[r]
            durations[b, : len(self.durations[r])] = self.durations[r]
        speaker = torch.stack([self.reference(r, g, table_p) for r in rows])
        return PriorBatch(mel, mask, phones, durations, speaker)


__all__ = ["PriorBatch", "PriorData"]
