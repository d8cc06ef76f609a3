"""A tiny speech folder in the real layout of ``python -m arrowdiff.speech.build_data`` (synthetic audio:
each phone a harmonic tone whose pitch depends on the speaker), for tests that must not need flite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.speech.mel import MelConfig, log_mel, quantize_mel

SPEAKERS = {"low": 110.0, "mid": 180.0, "high": 290.0}


def synth(phones: np.ndarray, durations: np.ndarray, f0: float, cfg: MelConfig) -> np.ndarray:
    """A waveform whose frame i sounds phone ``phones[j]`` (frames given by ``durations``)."""
    n = (int(durations.sum()) - 1) * cfg.hop
    frame_phone = np.repeat(phones, durations)[: n // cfg.hop + 1]
    t = np.arange(n) / cfg.sample_rate
    ph = frame_phone[np.minimum(np.arange(n) // cfg.hop, len(frame_phone) - 1)]
    wave = np.zeros(n)
    for h in range(1, 6):
        wave += np.sin(2 * np.pi * f0 * h * t) * np.exp(-0.3 * h) * (1 + (ph % (h + 2)) / 3)
    wave *= ph > 2  # pau and specials silent
    return (0.1 * wave / max(1e-6, np.sqrt(np.mean(wave**2)))).astype(np.float32)


def write_speech_folder(root: Path, per_speaker: int = 4, seed: int = 0) -> Path:
    cfg = MelConfig()
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        columns = ("utt_id", "text", "speaker", "voice", "engine", "pitch_cents", "stretch", "n_samples",
                   "n_frames", "n_phones", "wave_offset", "mel_offset", "phone_offset")  # fmt: skip
        rows: dict[str, list] = {k: [] for k in columns}
        mels, phones_all, durs_all, waves = [], [], [], []
        offs = [0, 0, 0]
        for spk, f0 in SPEAKERS.items():
            for i in range(per_speaker):
                P = int(rng.integers(6, 14))
                phones = np.concatenate([[2], rng.integers(3, 48, P - 2), [2]]).astype(np.int16)
                durs = rng.integers(2, 9, P).astype(np.int16)
                wave = synth(phones, durs, f0, cfg)
                n_frames = cfg.num_frames(len(wave))
                durs[-1] += n_frames - int(durs.sum())
                mel = quantize_mel(log_mel(wave, cfg).numpy()).T
                assert len(mel) == n_frames
                values = (f"{split}-{spk}-{i}", f"sentence {i}", spk, spk, "test", 0, 1.0, len(wave),
                          n_frames, P, offs[0], offs[1], offs[2])  # fmt: skip
                for k, v in zip(columns, values, strict=True):
                    rows[k].append(v)
                offs = [offs[0] + len(wave), offs[1] + n_frames, offs[2] + P]
                mels.append(mel)
                phones_all.append(phones)
                durs_all.append(durs)
                waves.append((wave * 32767).astype(np.int16))
        pq.write_table(pa.table(rows), root / f"{split}_utts.parquet")
        np.save(root / f"{split}_mel.npy", np.concatenate(mels))
        np.save(root / f"{split}_phones.npy", np.concatenate(phones_all))
        np.save(root / f"{split}_durations.npy", np.concatenate(durs_all))
        np.save(root / f"{split}_wave.npy", np.concatenate(waves))
    (root / "manifest.json").write_text(json.dumps({"mel": cfg.to_dict(), "note": "synthetic test data"}))
    return root
