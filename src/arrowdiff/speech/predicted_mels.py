"""The model's own mels of a split's utterances, frame-aligned with the real audio, for vocoder fine-tuning.

HiFi-GAN (Kong et al. 2020, section 4.4) fine-tunes the vocoder on mels *predicted* by the acoustic model
with teacher-forced durations, so that it learns to turn the model's smoother mels into sharp, voiced
audio rather than only the real mels it was trained on. Here each utterance is spoken by the unified
model's own sampler (:meth:`arrowdiff.speech_core.SpeechCore.sample_mel`: the mel prior, then shallow
diffusion on the shared backbone at the default start time) with the utterance's real phones and
durations, so the predicted frames line up with the real waveform frame by frame. The speaker input is,
seeded per utterance, the built-in voice of its speaker or (with probability ``--reference-p``) the
reference embedding of another utterance of the same speaker, as at inference (but without voice matching:
the reference is the speaker's own voice, so its statistics are the utterance's to begin with).

    python -m arrowdiff.speech.predicted_mels --model src/arrowdiff/pretrained/default \
        --data data/speech --split train

writes ``<data>/<split>_predicted_mel.npy`` (float16 log-mel (total frames, n_mels), in the order and at
the ``mel_offset`` of ``<split>_utts.parquet``) and ``<split>_predicted_mel.json`` (how it was made).
``train_vocoder --predicted-mel-p`` reads them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.speech.dataset import SpeechSet, other_utterance
from arrowdiff.speech_core import MAX_FRAMES


def predicted_mel_path(data: Path, split: str) -> Path:
    return Path(data) / f"{split}_predicted_mel.npy"


def predict_split(
    model_dir: Path, data: Path, split: str, reference_p: float = 0.5, seed: int = 0, progress: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """(float16 (total frames, n_mels) predicted log-mels aligned with ``split``'s mel frames, record)."""
    from arrowdiff import ArrowEngine

    if not 0.0 <= reference_p <= 1.0:
        raise ConfigError(f"--reference-p {reference_p} must be in [0, 1]")
    core = ArrowEngine.from_pretrained(model_dir).speech_core()
    speech = SpeechSet.load(data, split, arrays=("mel", "phones", "durations"))
    if speech.mel_config != core.mel_cfg:
        raise ConfigError(f"{data} has mels {speech.mel_config}; the model {model_dir} speaks {core.mel_cfg}")
    voices = set(core.voices())
    pools = speech.by_speaker()
    n_frames = speech.index["n_frames"].astype(np.int64)
    offsets = speech.index["mel_offset"].astype(np.int64)
    out = np.zeros((int((offsets + n_frames).max()), core.cfg.n_mels), np.float16)
    used = {"voice_table": 0, "reference": 0}
    for i in tqdm(range(len(speech)), desc=f"predict {split} mels", disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        spk_name = speech.speaker(i)
        if spk_name in voices and float(torch.rand((), generator=g)) >= reference_p:
            spk = core.speaker(voice_id=spk_name)
            used["voice_table"] += 1
        else:
            j = other_utterance(pools[spk_name], i, g)
            spk = core.speaker(reference_mel=torch.from_numpy(np.array(speech.mel(j))).float())
            used["reference"] += 1
        durations = torch.from_numpy(np.array(speech.durations(i))).long()
        phones = [int(p) for p in speech.phones(i)]
        mel = core.sample_mel(phones, durations, spk, generator=g)[:, : n_frames[i]]
        if mel.shape[1] != n_frames[i]:
            raise ConfigError(
                f"utterance {speech.utt_id(i)} of {split}: the model spoke {mel.shape[1]} frames for its "
                f"{n_frames[i]} (the sampler's limit is {MAX_FRAMES}): drop or split it in the data set"
            )
        out[offsets[i] : offsets[i] + mel.shape[1]] = mel.T.numpy().astype(np.float16)
    record = {
        "model": str(model_dir),
        "split": split,
        "utterances": len(speech),
        "frames": int(n_frames.sum()),
        "reference_p": reference_p,
        "seed": seed,
        "speaker_inputs": used,
        "start_time": core.start_time(),
        "paper": "Kong et al. 2020 (HiFi-GAN), section 4.4: fine-tuning on predicted mels",
    }
    return out, record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="unified model directory with audio head and mel prior")
    p.add_argument("--data", default="data/speech", help="speech data folder")
    p.add_argument("--split", default="train")
    p.add_argument("--reference-p", type=float, default=0.5, help="share of rows spoken from a reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        t0 = time.perf_counter()
        mels, record = predict_split(
            Path(args.model), Path(args.data), args.split, args.reference_p, args.seed
        )
        record["command"] = shlex.join(
            ["python", "-m", "arrowdiff.speech.predicted_mels", *(sys.argv[1:] if argv is None else argv)]
        )
        record["wall_time_s"] = round(time.perf_counter() - t0, 1)
        path = predicted_mel_path(Path(args.data), args.split)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, mels, allow_pickle=False)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    except ArrowDiffError as e:
        print(f"predicted_mels: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({mels.shape[0]} frames of {args.split}) in {record['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["main", "predict_split", "predicted_mel_path"]
