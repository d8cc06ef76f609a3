"""Text-to-speech latency (R3.3: end to end < 2 s for a typical sentence), each stage apart, and the
source engine (flite) on the same sentences as a reference point. Writes
`benchmarks/results/tts_speed.json`. From the repository root:

    python -m benchmarks.tts_speed [--model DIR] [--threads 2] [--repeats 5] [--steps N] [--guidance G]
        [--voice VOICE] [--source-only]

Per sentence: the median of --repeats wall-clock runs after one untimed warm-up, with --threads torch
threads. End to end is `ArrowEngine.diffuse(text, modality="audio", voice_id=VOICE)` (and, for the
typical sentence, the cloning path with a 5 s reference: flite `rms` speech cut to 5.0 s). The stages are
the engine's `speech_core()` (AudioCore) calls in order: `phonemes`, `speaker` (built-in voice, and from
the reference), `durations`, `sample_mel` (with a mel prior: the prior + shallow diffusion from the model's
default start time; `mel_prior_alone` times the prior by itself), `vocode`. Real-time factor = compute
seconds / audio seconds (< 1 is faster than real time). flite: `flite -voice slt -t TEXT -o FILE` as a
subprocess (includes process start-up; it writes a 16 kHz WAV). The load average before and after is
recorded: the machine's 2 cores are shared, so compare figures of one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import target, timeit, write_results

TYPICAL = "The quick brown fox jumps over the lazy dog near the river bank."
SENTENCES = (
    TYPICAL,
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
)
SAMPLE_RATE = 16_000
REFERENCE_SECONDS = 5.0


def flite_wave(text: str, voice: str, path: Path) -> np.ndarray:
    from arrowdiff.speech.engines import read_wav, require_tool

    subprocess.run(
        [require_tool("flite"), "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=120
    )
    return read_wav(path)


def time_flite(sentences: tuple[str, ...], repeats: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, text in enumerate(sentences):
        path = tmp / f"flite_{k}.wav"
        audio_s = len(flite_wave(text, "slt", path)) / SAMPLE_RATE  # also the warm-up
        t = timeit(lambda text=text, path=path: flite_wave(text, "slt", path), repeats=repeats, warmup=0)
        out[text] = t | {"audio_s": audio_s, "real_time_factor": t["median_ms"] / 1e3 / audio_s}
    return out


def reference_wave(tmp: Path) -> np.ndarray:
    """5.0 s of flite ``rms`` (the held-out voice) speaking the non-typical sentences."""
    parts, total = [], 0
    for k, text in enumerate(SENTENCES[1:] * 3):
        parts.append(flite_wave(text, "rms", tmp / f"ref_{k}.wav"))
        total += len(parts[-1])
        if total >= REFERENCE_SECONDS * SAMPLE_RATE:
            break
    return np.concatenate(parts)[: int(REFERENCE_SECONDS * SAMPLE_RATE)]


def stage_times(
    core: Any, text: str, voice: str, reference: tuple[np.ndarray, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Median time of each AudioCore stage on ``text`` (the inputs of a stage come from the one before)."""
    r, w = args.repeats, 1
    ids = core.phonemes(text)
    spk = core.speaker(voice_id=voice)
    dur = core.durations(ids, spk)
    gen = torch.Generator().manual_seed(0)
    mel = core.sample_mel(ids, dur, spk, args.steps, args.guidance, gen)
    wave = np.asarray(core.vocode(mel)).reshape(-1)
    stages = {
        "phonemes": timeit(lambda: core.phonemes(text), r, w),
        "speaker_voice_id": timeit(lambda: core.speaker(voice_id=voice), r, w),
        "speaker_reference": timeit(lambda: core.speaker(reference=reference), r, w),
        "durations": timeit(lambda: core.durations(ids, spk), r, w),
        "sample_mel": timeit(
            lambda: core.sample_mel(
                ids, dur, spk, args.steps, args.guidance, torch.Generator().manual_seed(0)
            ),
            r,
            w,
        ),
        "vocode": timeit(lambda: core.vocode(mel), r, w),
    }
    if hasattr(core, "reference_mel"):  # cloning: AdaIN matching to the reference's mel statistics
        from arrowdiff.speech.voice_match import match_statistics, mel_statistics

        ref_mel = core.reference_mel(reference)
        stages["voice_match"] = timeit(lambda: match_statistics(mel, mel_statistics(ref_mel)), r, w)
    if getattr(core, "prior", None) is not None:  # shallow diffusion: the prior's share of sample_mel
        stages["mel_prior_alone"] = timeit(
            lambda: core.sample_mel(ids, dur, spk, args.steps, args.guidance, gen, start_time=0.0), r, w
        )
    path = ("phonemes", "speaker_voice_id", "durations", "sample_mel", "vocode")
    return {
        "stages_ms": stages,
        "sum_of_medians_ms": {
            "built_in_voice": sum(stages[s]["median_ms"] for s in path),
            "cloned_voice": sum(stages[s]["median_ms"] for s in path if s != "speaker_voice_id")
            + stages["speaker_reference"]["median_ms"]
            + stages.get("voice_match", {"median_ms": 0.0})["median_ms"],
        },
        "phones": len(ids),
        "frames": int(torch.as_tensor(dur).sum()),
        "mel_shape": list(torch.as_tensor(mel).shape),
        "start_time": core.start_time() if hasattr(core, "start_time") else 1.0,
        "audio_s": len(wave) / SAMPLE_RATE,
    }


def time_model(
    args: argparse.Namespace, reference: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from arrowdiff import ArrowEngine

    eng = ArrowEngine.from_pretrained(args.model)
    if "audio" not in eng.modalities:
        raise SystemExit(f"the model has no audio head (modalities: {', '.join(eng.modalities)}); see --help")
    voice = args.voice or list(eng.voices())[0]
    opts = {"num_steps": args.steps, "guidance_scale": args.guidance, "seed": 0}
    ref = (reference, SAMPLE_RATE)
    end_to_end: dict[str, Any] = {}
    for text in SENTENCES:
        sp = eng.diffuse(text, modality="audio", voice_id=voice, **opts)  # warm-up, and the audio length
        audio_s = len(np.asarray(sp.waveform).reshape(-1)) / sp.sample_rate
        t = timeit(
            lambda text=text: eng.diffuse(text, modality="audio", voice_id=voice, **opts), args.repeats, 0
        )
        end_to_end[text] = t | {"audio_s": audio_s, "real_time_factor": t["median_ms"] / 1e3 / audio_s}
    clone = timeit(
        lambda: eng.diffuse(TYPICAL, modality="audio", reference_audio=ref, **opts), args.repeats, 1
    )
    figures: dict[str, Any] = {
        "voice": voice,
        "sample_rate": int(sp.sample_rate),
        "end_to_end_ms": end_to_end,
        "end_to_end_cloned_typical_ms": clone | {"reference_s": REFERENCE_SECONDS},
    }
    if hasattr(eng, "speech_core"):
        core = eng.speech_core()
        with torch.inference_mode():
            figures["stages"] = {text: stage_times(core, text, voice, ref, args) for text in SENTENCES}
    else:
        figures["stages"] = {"skipped": "the engine has no speech_core() (AudioCore) to time stage by stage"}
    typical_s = end_to_end[TYPICAL]["median_ms"] / 1e3
    targets = [target("R3.3", "end-to-end TTS of the typical sentence (median)", typical_s, "<", 2.0, "s")]
    return figures, targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (after one warm-up)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--voice", default=None, help="built-in voice (default: the first of eng.voices())")
    p.add_argument("--source-only", action="store_true", help="time flite only (no model)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    figures: dict[str, Any] = {
        "mode": "source_only" if args.source_only else "model",
        "setup": {
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": 1,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "typical_sentence": TYPICAL,
        },  # fmt: skip
    }
    targets: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        figures["flite_slt"] = time_flite(SENTENCES, args.repeats, Path(tmp))
        if not args.source_only:
            model_figures, targets = time_model(args, reference_wave(Path(tmp)))
            figures |= model_figures
    figures["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    path = write_results("tts_speed", figures, targets)
    print(f"wrote {path}")
    flite_ms = statistics.median(v["median_ms"] for v in figures["flite_slt"].values())
    print(f"flite slt: median {flite_ms:.0f} ms per sentence")
    for t in targets:
        verdict = "met" if t["met"] else "NOT met"
        print(f"{t['id']} {t['metric']}: {t['value']:.2f} s {t['op']} {t['target']} -> {verdict}")


if __name__ == "__main__":
    main()
