"""Speech parts of a training run: validation of the speech loss and the built-in voices set at export."""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from arrowdiff.network.model import UnifiedModel
from arrowdiff.training.batches import step_generator
from arrowdiff.training.losses import speech_loss
from arrowdiff.training.speech_data import SpeechWindows


@torch.no_grad()
def evaluate_speech(model: UnifiedModel, speech: SpeechWindows, args: argparse.Namespace) -> dict[str, float]:
    """Validation speech flow MSE at 8 fixed times with the speaker (``val_audio``) and without
    (``val_audio_nospeaker``), and the duration predictor's log-duration MSE (``val_duration``), on the
    same fixed windows every time."""
    model.eval()
    cfg = model.cfg
    out: dict[str, float] = {}
    for key, drop in (("val_audio", 0.0), ("val_audio_nospeaker", 1.0)):
        flow, dur, grid = 0.0, 0.0, torch.linspace(0.05, 0.95, 8).tolist()
        rows = min(32, 4 * len(speech))
        for k, tv in enumerate(grid):
            g = step_generator(args.seed, k, stream=11)
            b = speech.batch(rows, cfg.audio.crop_frames, cfg.voice.reference_frames, g, drop)
            t = torch.full((rows,), tv, device=speech.device)
            with torch.autocast(speech.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                _, stats = speech_loss(model, b, g, t=t)
            flow, dur = flow + stats["speech_flow_mse"], dur + stats["duration_mse"]
        out[key] = flow / len(grid)
        if drop == 0.0:
            out["val_duration"] = dur / len(grid)
    model.train()
    return out


def builtin_voices(model: UnifiedModel, speech: SpeechWindows, per_voice: int = 16) -> None:
    """Set the model's built-in voices: each training speaker's mean reference embedding over
    ``per_voice`` reference windows (re-normalised), so ``voice_id`` works without reference audio."""
    assert model.voice is not None
    head = model.head("audio")
    g = torch.Generator().manual_seed(0)
    R = model.cfg.voice.reference_frames
    table = []
    with torch.no_grad():
        for pool in speech.by_speaker:
            utt = pool[torch.randint(0, len(pool), (per_voice,), generator=g).numpy()]
            n = speech.n_frames[utt]
            start = (torch.rand(per_voice, generator=g).numpy() * (n - R + 1).clip(1)).astype("int64")
            mel, _, _ = speech.gather(utt, start, R, tile=True)
            emb = model.voice.embed_reference(head.normalize(mel.transpose(1, 2)).float())
            table.append(torch.nn.functional.normalize(emb.mean(0), dim=0))
    model.voice.set_voices(speech.speaker_names, torch.stack(table))
    model.cfg = replace(model.cfg, voice=model.voice.cfg)


__all__ = ["builtin_voices", "evaluate_speech"]
