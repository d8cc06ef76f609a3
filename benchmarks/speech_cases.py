"""Test cases, references and summaries shared by the speech benchmarks (tts_quality, tts_speed).

A case is one utterance of the speech data set (``arrowdiff.speech.dataset``): its sentence, speaker and
real (source-engine) audio. Cases are dealt round-robin over the split's speakers from a seeded shuffle,
so every speaker is covered and the choice is a pure function of (data, seed, count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arrowdiff.speech.dataset import SpeechSet

SAMPLE_RATE = 16_000
WER_UNIT = "word error rate (word edits / reference words, after arrowdiff.speech.evaluate.normalize_text)"
COS_UNIT = "cosine similarity of resemblyzer GE2E 256-d voice embeddings"


@dataclass(frozen=True)
class Case:
    split: str
    index: int  # row in the split
    utt_id: str
    text: str
    speaker: str


def speaker_order(data: SpeechSet, seed: int) -> list[str]:
    """The split's speakers interleaved over base voices (one of each voice, then a second of each, ...),
    each voice's pseudo-speakers in a seeded order, so the first few cover every voice."""
    rng = np.random.default_rng([seed, 3])
    by_voice: dict[str, list[str]] = {}
    for name, idx in sorted(data.by_speaker().items()):
        by_voice.setdefault(str(data.index["voice"][idx[0]]), []).append(name)
    queues = [list(rng.permutation(names)) for _, names in sorted(by_voice.items())]
    return [str(q[r]) for r in range(max(map(len, queues))) for q in queues if r < len(q)]


def pick_cases(data: SpeechSet, n: int, seed: int) -> list[Case]:
    """``n`` utterances of ``data``, round-robin over ``speaker_order``, each speaker's in a seeded order."""
    rng = np.random.default_rng(seed)
    groups = data.by_speaker()
    pools = [list(rng.permutation(groups[s])) for s in speaker_order(data, seed)]
    out: list[Case] = []
    while len(out) < min(n, len(data)):
        for pool in pools:
            if pool and len(out) < n:
                i = int(pool.pop())
                out.append(Case(data.split, i, data.utt_id(i), data.text(i), data.speaker(i)))
    return out


def reference_clip(
    data: SpeechSet, case: Case, seconds: float, seed: int, exclude: Sequence[int] = ()
) -> tuple[np.ndarray, list[str]]:
    """At least ``seconds`` of ``case.speaker``'s real speech, cut to exactly ``seconds``: whole utterances
    (never the case's own, nor any with its sentence, nor ``exclude``) concatenated in a seeded order.
    Returns the float32 wave and the utterance ids used."""
    rng = np.random.default_rng([seed, case.index])
    pool = [
        i
        for i in data.indices(case.speaker)
        if i != case.index and i not in exclude and data.text(i) != case.text
    ]
    need = int(round(seconds * SAMPLE_RATE))
    parts, used, total = [], [], 0
    for i in rng.permutation(pool):
        w = data.wave(int(i))
        parts.append(w)
        used.append(data.utt_id(int(i)))
        total += len(w)
        if total >= need:
            return np.concatenate(parts)[:need], used
    raise SystemExit(
        f"speaker {case.speaker} has only {total / SAMPLE_RATE:.1f} s of other utterances in {data.split}; "
        f"a {seconds} s reference needs more (build the data with more --heldout utterances)"
    )


def summary(values: Sequence[float], unit: str) -> dict[str, Any]:
    """Mean, median, min, max and count of the finite values; ``n_nan`` counts the others."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return {"mean": math.nan, "median": math.nan, "n": 0, "n_nan": int(v.size), "unit": unit}
    return {
        "mean": float(ok.mean()),
        "median": float(np.median(ok)),
        "min": float(ok.min()),
        "max": float(ok.max()),
        "std": float(ok.std()),
        "n": int(ok.size),
        "n_nan": int(v.size - ok.size),
        "unit": unit,
    }


def wer_figure(refs: Sequence[str], hyps: Sequence[str], seconds: Sequence[float] = ()) -> dict[str, Any]:
    """Corpus WER plus the per-utterance distribution (and the audio's total length when given)."""
    from arrowdiff.speech.evaluate import word_error_rate, word_errors

    per = [e / max(n, 1) for e, n in (word_errors(r, h) for r, h in zip(refs, hyps, strict=True))]
    out: dict[str, Any] = {
        "value": word_error_rate(refs, hyps),
        "unit": WER_UNIT,
        "utterances": len(refs),
        "reference_words": sum(word_errors(r, r)[1] for r in refs),
        "per_utterance": summary(per, "word error rate"),
    }
    if seconds:
        out["audio_seconds"] = {"total": float(sum(seconds)), "unit": "s"}
    return out
