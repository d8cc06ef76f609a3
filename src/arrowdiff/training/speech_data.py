"""Training batches for text-to-speech from a speech folder (``python -m arrowdiff.speech.build_data``).

The whole split lives on the training device: uint8 log-mels (frames, 80), the phone of every frame
(the phones repeated by their durations) and per-utterance phone/duration rows. A batch is a random
``crop``-frame window of random utterances (shorter ones padded with silence), a reference window from a
*different* utterance of the same speaker (zero-shot cloning learns the voice, not the words) and the
utterances' phones and durations for the duration predictor. Indices are drawn on the CPU from the
step's generator, so batches are a pure function of (seed, step) on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.speech.dataset import SpeechSet, other_utterance
from arrowdiff.speech.mel import dequantize_mel
from arrowdiff.speech.phones import PAD_ID, SILENCE, phone_id


@dataclass
class SpeechBatch:
    mel: Tensor  # (B, L, n_mels) log-mel
    phones: Tensor  # (B, L) phone of each frame
    reference: Tensor  # (B, n_mels, R) log-mel of another utterance of the same speaker
    keep_speaker: Tensor  # (B, 1) bool: False for the rows trained without a speaker (guidance)
    utt_phones: Tensor  # (B, P) phone ids, PAD_ID after the end
    utt_durations: Tensor  # (B, P) frames per phone


class SpeechWindows:
    """One split of a speech folder as training windows, resident on ``device`` (the plain per-utterance
    reader is :class:`arrowdiff.speech.dataset.SpeechSet`)."""

    def __init__(self, folder: Path, split: str, device: str | torch.device = "cpu") -> None:
        data = SpeechSet.load(folder, split, arrays=("mel", "phones", "durations"))
        self.manifest = data.manifest
        mel = np.asarray(data.arrays["mel"])
        phones = data.arrays["phones"].astype(np.int64)
        durations = data.arrays["durations"].astype(np.int64)
        self.n_frames = data.index["n_frames"].astype(np.int64)
        self.mel_offset = data.index["mel_offset"].astype(np.int64)
        p_off = data.index["phone_offset"].astype(np.int64)
        p_n = data.index["n_phones"].astype(np.int64)
        self.speakers = [str(s) for s in data.index["speaker"]]
        self.texts = [str(t) for t in data.index["text"]]
        names = sorted(set(self.speakers))
        self.speaker_names = names
        self.speaker_index = np.array([names.index(s) for s in self.speakers], dtype=np.int64)
        self.by_speaker = [np.flatnonzero(self.speaker_index == k) for k in range(len(names))]
        frame_phone = np.full(len(mel), phone_id(SILENCE), dtype=np.int64)
        P = int(p_n.max())
        phone_pad = np.full((len(p_n), P), PAD_ID, dtype=np.int64)
        dur_pad = np.zeros((len(p_n), P), dtype=np.int64)
        for u in range(len(p_n)):
            ph, du = phones[p_off[u] : p_off[u] + p_n[u]], durations[p_off[u] : p_off[u] + p_n[u]]
            if int(du.sum()) != int(self.n_frames[u]):
                raise ConfigError(
                    f"{folder} {split} utterance {u}: durations sum to {int(du.sum())} frames but its mel "
                    f"has {int(self.n_frames[u])}; rebuild the data"
                )
            o = self.mel_offset[u]
            frame_phone[o : o + self.n_frames[u]] = np.repeat(ph, du)
            phone_pad[u, : p_n[u]], dur_pad[u, : p_n[u]] = ph, du
        self.device = torch.device(device)
        self.mel = torch.from_numpy(np.ascontiguousarray(mel)).to(self.device)  # uint8 (N, n_mels)
        self.frame_phone = torch.from_numpy(frame_phone).to(self.device)
        self.phone_pad = torch.from_numpy(phone_pad).to(self.device)
        self.dur_pad = torch.from_numpy(dur_pad).to(self.device)

    @classmethod
    def load(cls, folder: str | Path, split: str, device: str | torch.device = "cpu") -> SpeechWindows:
        return cls(Path(folder), split, device)

    def __len__(self) -> int:
        return len(self.n_frames)

    def mel_stats(self, max_frames: int = 200_000) -> tuple[float, float]:
        """Mean and standard deviation of the log-mel values (for the head's normalisation)."""
        step = max(1, len(self.mel) // max_frames)
        m = dequantize_mel(self.mel[::step].cpu().numpy())
        return float(m.mean()), float(m.std())

    def gather(
        self, utt: np.ndarray, start: np.ndarray, length: int, tile: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log-mel windows (B, length, n_mels), their validity (B, length) and frame indices."""
        n = self.n_frames[utt][:, None]
        pos = start[:, None] + np.arange(length)[None, :]
        valid = pos < n
        pos = pos % n if tile else np.minimum(pos, n - 1)
        idx = torch.from_numpy(self.mel_offset[utt][:, None] + pos).to(self.device)
        return dequantize_mel(self.mel[idx]), torch.from_numpy(valid | tile).to(self.device), idx

    def batch(
        self, batch_size: int, crop: int, ref_frames: int, generator: torch.Generator, speaker_dropout: float
    ) -> SpeechBatch:
        g = generator
        utt = torch.randint(0, len(self), (batch_size,), generator=g).numpy()
        n = self.n_frames[utt]
        start = (torch.rand(batch_size, generator=g).numpy() * np.maximum(n - crop + 1, 1)).astype(np.int64)
        mel, valid, idx = self.gather(utt, start, crop, tile=False)
        silence = dequantize_mel(torch.zeros((), device=self.device))
        mel = torch.where(valid[..., None], mel, silence)
        phones = torch.where(valid, self.frame_phone[idx], phone_id(SILENCE))
        # the reference: another utterance of the same speaker (the same one only if it is alone)
        ref = np.array([other_utterance(self.by_speaker[self.speaker_index[u]], u, g) for u in utt], np.int64)
        rn = self.n_frames[ref]
        rstart = (torch.rand(batch_size, generator=g).numpy() * np.maximum(rn - ref_frames + 1, 1)).astype(
            np.int64
        )
        reference, _, _ = self.gather(ref, rstart, ref_frames, tile=True)
        keep = torch.rand(batch_size, generator=g) >= speaker_dropout
        u = torch.from_numpy(utt).to(self.device)
        return SpeechBatch(
            mel=mel,
            phones=phones,
            reference=reference.transpose(1, 2),
            keep_speaker=keep[:, None].to(self.device),
            utt_phones=self.phone_pad[u],
            utt_durations=self.dur_pad[u],
        )


__all__ = ["SpeechBatch", "SpeechWindows"]
