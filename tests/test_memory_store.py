"""ArrowStorage: round trips, errors, and durability (kill -9 mid-write, concurrent writers, damaged files,
crashes inside a merge), against a deterministic hashing embedder (no model is loaded here)."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError, StorageError
from arrowdiff.memory import ArrowStorage, StorageWarning, default_store_path
from arrowdiff.memory.compaction import plan_compaction
from arrowdiff.memory.segments import SegmentName

DIM = 384


class HashEmbedder:
    """Bag of words with one fixed random vector per word: texts sharing words are similar. Counts calls."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim, self.calls = dim, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return out


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def segment_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "segments").iterdir() if SegmentName.parse(p.name))


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    emb = HashEmbedder()
    store = ArrowStorage(tmp_path / "mem", emb)
    a = store.add("the cat sat on the mat", metadata={"source": "notes", "n": 1})
    b = store.add("lora for python code", kind="adaptation", modality="code", payload=tmp_path / "adapter")
    c = store.add("the dog sat on the log")
    assert len(store) == 3 and a in store and "nope" not in store
    got = store.get(a)
    assert got.text == "the cat sat on the mat" and got.kind == "memory" and got.modality == "text"
    assert got.metadata == {"source": "notes", "n": 1} and got.payload is None
    assert got.created_at.tzinfo is not None and got.embedding.dtype == np.float32
    assert np.isclose(np.linalg.norm(got.embedding), 1.0, atol=1e-6)
    assert store.get(b).payload == str(tmp_path / "adapter")
    assert [m.id for m in store.list()] == [a, b, c]
    assert [m.id for m in store.list(newest_first=True, limit=2)] == [c, b]
    assert [m.id for m in store.list(kind="adaptation")] == [b]
    assert [m.id for m in store.list(modality="text")] == [a, c]

    new = store.update(a, text="the cat slept", metadata={"source": "edited"})
    assert new.created_at == got.created_at and new.id == a
    store.delete(c)

    again = ArrowStorage(tmp_path / "mem", emb)  # a fresh instance reads everything from disk
    assert [m.id for m in again.list()] == [a, b]
    m = again.get(a)
    assert m.text == "the cat slept" and m.metadata == {"source": "edited"}
    assert m.created_at == got.created_at
    assert np.allclose(m.embedding, again._embed(["the cat slept"])[0], atol=1e-6)  # re-embedded
    assert again.get(b).kind == "adaptation" and again.get(b).modality == "code"
    matrix = again.embeddings_matrix()
    assert matrix.shape == (2, DIM) and np.allclose(matrix[0], m.embedding)
    memories, sub = again.snapshot(kind="adaptation")
    assert [x.id for x in memories] == [b] and sub.shape == (1, DIM)


def test_update_reembeds_only_when_the_text_changes(tmp_path: Path) -> None:
    emb = HashEmbedder()
    store = ArrowStorage(tmp_path, emb)
    i = store.add("first text")
    calls = emb.calls
    store.update(i, metadata={"x": 1})
    store.update(i, text="first text")  # same text: nothing to re-embed
    assert emb.calls == calls
    store.update(i, text="second text")
    assert emb.calls == calls + 1
    given = unit(np.random.default_rng(0))
    store.update(i, text="third text", embedding=given)  # an explicit embedding wins
    assert emb.calls == calls + 1 and np.allclose(store.get(i).embedding, given, atol=1e-6)


def test_add_many_is_one_segment_and_explicit_embeddings_are_normalised(tmp_path: Path) -> None:
    store = ArrowStorage(tmp_path)
    raw = np.random.default_rng(1).standard_normal((5, DIM)) * 7
    ids = store.add_many([f"m{i}" for i in range(5)], raw, kind="k", metadatas=[{"i": i} for i in range(5)])
    assert len(segment_files(tmp_path)) == 1 and len(set(ids)) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    got = store.embeddings_matrix()
    assert np.allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert [m.metadata["i"] for m in store.list()] == list(range(5))
    assert store._embedder is None  # the default MiniLM embedder was never needed, so never loaded


def test_opening_does_no_io(tmp_path: Path) -> None:
    store = ArrowStorage(tmp_path / "new")
    assert len(store) == 0 and store.list() == [] and store.search(np.ones(DIM), 3) == []
    assert not (tmp_path / "new").exists()  # reading an absent store creates nothing


def test_errors_name_the_value_and_the_fix(tmp_path: Path) -> None:
    store = ArrowStorage(tmp_path, HashEmbedder())
    i = store.add("something")
    with pytest.raises(ConfigError, match=r"shape \(1, 10\), expected \(1, 384\)"):
        store.add("x", embedding=np.ones(10))
    with pytest.raises(ConfigError, match=r"shape \(3, 384\), expected \(2, 384\)"):
        store.add_many(["a", "b"], np.ones((3, DIM)))
    with pytest.raises(ConfigError, match="all zeros"):
        store.add("x", embedding=np.zeros(DIM))
    with pytest.raises(ConfigError, match="NaN"):
        store.add("x", embedding=np.full(DIM, np.nan))
    with pytest.raises(ConfigError, match="empty; give at least one non-space character"):
        store.add("   ")
    with pytest.raises(ConfigError, match="add_many\\(\\) takes a list"):
        store.add_many("abc")
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        store.add("x", metadata={"f": object()})
    with pytest.raises(ConfigError, match="kind=''"):
        store.add("x", kind="")
    for call in (
        lambda: store.get("abc"),
        lambda: store.delete("abc"),
        lambda: store.update("abc", text="t"),
    ):
        with pytest.raises(StorageError, match="no memory with id 'abc'.*arrowdiff memory list"):
            call()
    with pytest.raises(ConfigError, match="k=0 must be an integer >= 1"):
        store.search("q", k=0)
    with pytest.raises(ConfigError, match="method='fuzzy' is not one of exact, hopfield, index"):
        store.search("q", method="fuzzy")
    with pytest.raises(ConfigError, match=r"query embedding shape \(5,\)"):
        store.search(np.ones(5))
    bad = ArrowStorage(tmp_path, lambda texts: np.ones((len(texts), 100)))
    with pytest.raises(ConfigError, match=r"the embedder returned shape \(1, 100\), expected \(1, 384\)"):
        bad.add("x")
    with pytest.raises(StorageError, match="holds 384-d embeddings but the store was opened with dim=8"):
        len(ArrowStorage(tmp_path, dim=8))
    assert store.get(i).text == "something"  # nothing above changed the store


def test_writes_of_other_instances_are_seen(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a, b = ArrowStorage(tmp_path, max_segments=3), ArrowStorage(tmp_path, max_segments=3)
    ids = [(a if i % 2 else b).add(f"m{i}", embedding=unit(rng)) for i in range(12)]  # merges interleave
    assert [m.id for m in a.list()] == ids == [m.id for m in b.list()]
    b.delete(ids[0])
    a.update(ids[1], text="changed", embedding=unit(rng))
    assert ids[0] not in a and b.get(ids[1]).text == "changed"


def test_auto_compaction_bounds_the_segment_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = ArrowStorage(tmp_path, max_segments=4)
    ids = [store.add(f"m{i}", embedding=unit(rng)) for i in range(40)]
    for i in ids[::3]:
        store.delete(i)
    assert len(segment_files(tmp_path)) <= 5
    expected = [i for i in ids if i not in ids[::3]]
    assert [m.id for m in ArrowStorage(tmp_path).list()] == expected
    store.compact()
    files = segment_files(tmp_path)
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == len(expected)  # tombstones dropped
    assert [m.id for m in ArrowStorage(tmp_path).list()] == expected


def test_a_failed_merge_does_not_fail_the_durable_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import arrowdiff.memory.segment_log as log_module  # where merges write their segment

    real = log_module.write_segment

    def disk_full_on_merge(folder: Path, entries: list, dim: int, first: int, last: int) -> SegmentName:
        if first != last:
            raise OSError(28, "No space left on device")
        return real(folder, entries, dim, first, last)

    rng = np.random.default_rng(7)
    store = ArrowStorage(tmp_path, max_segments=2)
    ids = [store.add(f"m{i}", embedding=unit(rng)) for i in range(2)]
    monkeypatch.setattr(log_module, "write_segment", disk_full_on_merge)
    with pytest.warns(StorageWarning, match="merging segments failed.*the write itself is durable"):
        ids.append(store.add("m2", embedding=unit(rng)))  # returns: the write is on disk
    monkeypatch.setattr(log_module, "write_segment", real)
    assert [m.id for m in ArrowStorage(tmp_path).list()] == ids and len(segment_files(tmp_path)) == 3
    ids.append(store.add("m3", embedding=unit(rng)))  # the merge is retried
    assert len(segment_files(tmp_path)) <= 2 and [m.id for m in ArrowStorage(tmp_path).list()] == ids


def test_plan_compaction() -> None:
    assert plan_compaction([5, 1, 1], max_segments=4) is None
    assert plan_compaction([100, 1, 1, 1, 1], max_segments=4) == 1  # the small tail, not the big base
    assert plan_compaction([1, 1, 1, 1, 1], max_segments=4) == 0
    assert plan_compaction([100, 50, 30, 2, 1], max_segments=4) == 3  # at least the two newest


def test_segments_are_plain_parquet(tmp_path: Path) -> None:
    store = ArrowStorage(tmp_path, HashEmbedder())
    i = store.add("hello", metadata={"a": 1})
    store.delete(i)
    tables = [pq.read_table(f) for f in segment_files(tmp_path)]
    assert tables[0].column_names == [
        "op", "id", "text", "modality", "embedding", "created_at", "kind", "metadata", "payload"
    ]  # fmt: skip
    assert (
        tables[0].column("op").to_pylist() == ["put"]
        and tables[0].column("metadata")[0].as_py() == '{"a": 1}'
    )
    assert tables[1].column("op").to_pylist() == ["delete"] and tables[1].column("text")[0].as_py() is None
    name = SegmentName.parse(segment_files(tmp_path)[0].name)
    assert name.digest == hashlib.sha256(segment_files(tmp_path)[0].read_bytes()).hexdigest()


def _three_segments(tmp_path: Path) -> tuple[ArrowStorage, list[str]]:
    rng = np.random.default_rng(4)
    store = ArrowStorage(tmp_path, max_segments=100)
    ids = [store.add(f"memory {i}", embedding=unit(rng)) for i in range(3)]
    return store, ids


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_segment_is_named_skipped_and_quarantined(tmp_path: Path, damage: str) -> None:
    _, ids = _three_segments(tmp_path)
    victim = segment_files(tmp_path)[1]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    victim.write_bytes(bytes(data))

    with pytest.raises(StorageError, match=f"damaged memory segment {victim}.*checksum mismatch"):
        len(ArrowStorage(tmp_path, strict=True))
    store = ArrowStorage(tmp_path)
    with pytest.warns(StorageWarning, match=f"{victim.name}.*checksum mismatch.*skipped"):
        assert [m.id for m in store.list()] == [ids[0], ids[2]]  # the rest stays readable
    assert [d.path for d in store.damaged] == [victim]
    assert [d.path for d in store.verify()] == [victim]
    new = store.add("after the damage", embedding=unit(np.random.default_rng(5)))
    store.compact()  # moves the damaged file aside, bytes unchanged
    assert (tmp_path / "quarantine" / victim.name).read_bytes() == bytes(data)
    clean = ArrowStorage(tmp_path)
    assert clean.verify() == [] and [m.id for m in clean.list()] == [ids[0], ids[2], new]


def test_damage_after_opening_is_found_by_verify(tmp_path: Path) -> None:
    store, ids = _three_segments(tmp_path)
    assert len(store) == 3 and store.verify() == []
    victim = segment_files(tmp_path)[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    damaged = ArrowStorage(tmp_path).verify()
    assert [d.path for d in damaged] == [victim] and "truncated" in damaged[0].reason
    assert [d.path for d in store.verify()] == [victim] and [m.id for m in store.list()] == ids[1:]


def test_a_crash_between_merge_and_cleanup_is_harmless(tmp_path: Path) -> None:
    store, ids = _three_segments(tmp_path)
    store.delete(ids[1])
    before = {p.name: p.read_bytes() for p in segment_files(tmp_path)}
    store.compact()
    for name, data in before.items():  # as if the merging writer died before deleting its inputs
        (tmp_path / "segments" / name).write_bytes(data)
    (tmp_path / "segments" / ".tmp-123-abcd-seg-partial.parquet").write_bytes(
        b"half a file"
    )  # a dead writer's
    reopened = ArrowStorage(tmp_path)
    assert [m.id for m in reopened.list()] == [ids[0], ids[2]] and reopened.damaged == []
    reopened.add("next", embedding=unit(np.random.default_rng(6)))  # the next writer cleans up
    assert len(segment_files(tmp_path)) == 2
    assert not [p for p in (tmp_path / "segments").iterdir() if p.name.startswith(".tmp-")]


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARROWDIFF_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "memory"
    monkeypatch.delenv("ARROWDIFF_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "arrowdiff" / "memory"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local" / "share" / "arrowdiff" / "memory"


# ---- several processes -------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from arrowdiff.memory.store import ArrowStorage

    path, max_segments, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = ArrowStorage(path, dim=16, max_segments=max_segments)
    rng = np.random.default_rng(seed)
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go"
    i = 0
    while count < 0 or i < count:
        print(store.add(f"w{seed}-{i}", embedding=rng.standard_normal(16)), flush=True)
        i += 1
    """
)


def start_writer(path: Path, max_segments: int, seed: int, count: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(max_segments), str(seed), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_kill_9_during_writes_loses_no_returned_write(tmp_path: Path) -> None:
    rnd = random.Random(0)
    returned: list[str] = []
    for round_ in range(4):
        proc = start_writer(tmp_path, max_segments=3, seed=round_, count=-1)  # merges often: kills hit them
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for _ in range(rnd.randint(3, 25)):
            returned.append(proc.stdout.readline().strip())
        time.sleep(rnd.uniform(0, 0.03))
        proc.kill()  # SIGKILL: no cleanup, no atexit, no flush of anything not yet written
        rest = proc.stdout.read()
        proc.wait()
        returned += [line for line in rest.split("\n")[:-1]]  # complete lines only: add() had returned
        store = ArrowStorage(tmp_path, dim=16, strict=True)  # strict: any damage would raise
        ids = {m.id for m in store.list()}
        assert set(returned) <= ids, "a write that returned was lost"
        assert len(ids - set(returned)) <= round_ + 1  # at most the write in flight per kill
        assert store.verify() == []


def test_concurrent_writers_are_serialised_and_readers_see_snapshots(tmp_path: Path) -> None:
    n = 30
    procs = [start_writer(tmp_path, max_segments=4, seed=seed, count=n) for seed in (10, 11)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    reader, seen = ArrowStorage(tmp_path, dim=16), 0
    while any(p.poll() is None for p in procs):
        now = len(reader)  # only adds happen: a consistent snapshot never shrinks
        assert now >= seen
        seen = now
        time.sleep(0.002)
    outputs = [p.stdout.read().split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ids = {m.id for m in reader.list()}
    assert len(ids) == 2 * n and ids == set(outputs[0]) | set(outputs[1])
    assert sorted(m.text for m in reader.list()) == sorted(
        [f"w10-{i}" for i in range(n)] + [f"w11-{i}" for i in range(n)]
    )


# ---- model-based property ----------------------------------------------------------------------------
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 10**6)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.tuples(st.just("update"), st.integers(0, 50)),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("compact"), st.just(0)),
    ),
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_add_update_delete_sequences_match_a_dict(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        emb = HashEmbedder(dim=8)
        store = ArrowStorage(tmp, emb, dim=8, max_segments=3)
        model: dict[str, str] = {}
        for op, arg in ops:
            if op == "add":
                model[store.add(f"text {arg}")] = f"text {arg}"
            elif op in ("delete", "update") and model:
                key = sorted(model)[arg % len(model)]
                if op == "delete":
                    store.delete(key)
                    del model[key]
                else:
                    model[key] = store.update(key, text=f"new {arg}").text
            elif op == "reopen":
                store = ArrowStorage(tmp, emb, dim=8, max_segments=3)
            elif op == "compact":
                store.compact()
            assert {m.id: m.text for m in store.list()} == model
        fresh = ArrowStorage(tmp, emb, dim=8, strict=True)
        assert {m.id: m.text for m in fresh.list()} == model and len(fresh) == len(model)
        assert list(model) == [m.id for m in fresh.list()]  # stored order = insertion order
