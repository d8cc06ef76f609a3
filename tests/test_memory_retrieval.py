"""Retrieval: exact top-k against brute force, modern Hopfield retrieval of noisy patterns, the HNSW index
(recall, persistence, staleness) and ArrowStorage.search over all three methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError
from arrowdiff.memory import ArrowStorage
from arrowdiff.memory.index import IndexConfig
from arrowdiff.memory.retrieval import exact_topk, hopfield_retrieve, normalize, softmax

ONE_THREAD = IndexConfig(threads=1)  # the test machine is shared


def random_units(n: int, dim: int, seed: int) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, dim)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), dim=st.integers(1, 48), k=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_exact_topk_matches_brute_force(n: int, dim: int, k: int, seed: int) -> None:
    X = random_units(n, dim, seed)
    q = random_units(1, dim, seed + 1)[0]
    rows, scores = exact_topk(X, q, k)
    brute = sorted(range(n), key=lambda i: (-float(X[i] @ q), i))[: min(k, n)]
    assert np.allclose(scores, X[rows] @ q, atol=1e-6)
    assert np.all(np.diff(scores) <= 1e-7)  # best first
    assert np.allclose(np.sort(X[brute] @ q), np.sort(scores), atol=1e-6)  # same set of scores
    assert len(set(rows.tolist())) == len(rows) == min(k, n)


def test_exact_topk_edges() -> None:
    rows, scores = exact_topk(np.zeros((0, 4), dtype=np.float32), np.ones(4), 3)
    assert rows.shape == scores.shape == (0,)
    X = np.eye(3, dtype=np.float32)
    assert exact_topk(np.vstack([X, X]), np.array([1, 0, 0]), 2)[0].tolist() == [0, 3]  # ties: lower row
    with pytest.raises(ConfigError, match="k=0 must be >= 1"):
        exact_topk(X, X[0], 0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 64),
    noise=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 3),
)
def test_hopfield_retrieves_the_stored_pattern_from_a_noisy_query(
    n: int, noise: float, seed: int, steps: int
) -> None:
    dim = 384
    X = random_units(n, dim, seed)
    target = seed % n
    rng = np.random.default_rng(seed + 7)
    query = normalize(X[target] + noise * rng.standard_normal(dim) / np.sqrt(dim))  # cos(query, x) >= ~0.7
    xi, p = hopfield_retrieve(X, query, beta=32.0, steps=steps)
    assert int(np.argmax(p)) == target
    assert np.isclose(p.sum(), 1.0, atol=1e-5) and (p >= 0).all()
    assert float(normalize(xi) @ X[target]) > 0.99  # the retrieved state is the stored pattern


def test_hopfield_weights_and_arguments() -> None:
    X = random_units(10, 16, 0)
    xi, p = hopfield_retrieve(X, X[3], beta=1e-6)  # beta -> 0: uniform weights, the mean pattern
    assert np.allclose(p, 0.1, atol=1e-5) and np.allclose(xi, X.mean(axis=0), atol=1e-5)
    _, sharp = hopfield_retrieve(X, X[3], beta=200.0)
    assert sharp[3] > 0.999
    with pytest.raises(ConfigError, match="beta=0 must be > 0"):
        hopfield_retrieve(X, X[0], beta=0)
    with pytest.raises(ConfigError, match="steps=0 must be >= 1"):
        hopfield_retrieve(X, X[0], steps=0)
    assert np.isclose(softmax(np.array([1000.0, 1000.0])).sum(), 1.0)  # stable for large logits


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """5,000 random unit vectors in one segment (kinds alternate a/b)."""
    path = tmp_path_factory.mktemp("big")
    X = random_units(5000, 384, 0)
    store = ArrowStorage(path, index_config=ONE_THREAD)
    store.add_many([f"v{i}" for i in range(2500)], X[:2500], kind="a")
    store.add_many([f"v{i}" for i in range(2500, 5000)], X[2500:], kind="b")
    return path, X


def test_index_recall_at_10_on_5000_random_unit_vectors(big_store: tuple[Path, np.ndarray]) -> None:
    path, X = big_store
    store = ArrowStorage(path, index_config=ONE_THREAD)
    queries = random_units(50, 384, 1)  # uniform random queries: the hardest case for a graph index
    recall = []
    for q in queries:
        exact = {h.memory.text for h in store.search(q, 10)}
        approx = store.search(q, 10, method="index")
        recall.append(len(exact & {h.memory.text for h in approx}) / 10)
        assert [h.score for h in approx] == sorted((h.score for h in approx), reverse=True)
    print(f"recall@10 = {np.mean(recall):.3f}")
    assert np.mean(recall) >= 0.9, np.mean(recall)
    assert store._index.builds == 1  # built once, then reused


def test_index_is_persisted_reused_and_rebuilt_when_stale(big_store: tuple[Path, np.ndarray]) -> None:
    path, X = big_store
    first = ArrowStorage(path, index_config=ONE_THREAD)
    first.search(X[0], 5, method="index")  # builds, or loads the module's earlier build
    again = ArrowStorage(path, index_config=ONE_THREAD)
    hit = again.search(X[7], 1, method="index")[0]
    assert again._index.builds == 0 and hit.memory.text == "v7" and hit.score > 0.999  # loaded from disk
    hits = again.search(X[7], 5, kind="b", method="index")  # filtered: only kind b
    assert hits and all(h.memory.kind == "b" for h in hits)
    assert [h.memory.id for h in hits] == [h.memory.id for h in again.search(X[7], 5, kind="b")]


def test_index_follows_writes(tmp_path: Path) -> None:
    X = random_units(300, 384, 3)
    store = ArrowStorage(tmp_path, index_config=ONE_THREAD)
    ids = store.add_many([f"v{i}" for i in range(300)], X)
    assert store.search(X[5], 1, method="index")[0].memory.text == "v5"
    assert (store._index.builds, store._index.appends) == (1, 0)

    new = [store.add(f"fresh {i}", embedding=random_units(1, 384, 4 + i)[0]) for i in range(40)]
    assert store.search(store.get(new[0]).embedding, 1, method="index")[0].memory.id == new[0]  # not stale
    assert (store._index.builds, store._index.appends) == (1, 1)  # the store only grew: rows appended

    other = ArrowStorage(tmp_path, index_config=ONE_THREAD)  # another process: loads the saved index
    last = other.add("one more", embedding=random_units(1, 384, 99)[0])
    assert other.search(other.get(last).embedding, 1, method="index")[0].memory.id == last
    assert (other._index.builds, other._index.appends) == (0, 1)

    store.update(ids[7], embedding=X[8])  # a changed row: the graph is rebuilt
    hits = store.search(X[8], 2, method="index")
    assert {h.memory.id for h in hits} == {ids[7], ids[8]} and store._index.builds == 2
    store.delete(ids[8])
    assert store.search(X[8], 1, method="index")[0].memory.id == ids[7] and store._index.builds == 3

    files = list((tmp_path / "index").glob("hnsw-*.usearch"))
    assert len(files) == 1  # earlier states' files are removed
    files[0].write_bytes(files[0].read_bytes()[:1000])  # a torn index is rebuilt, not trusted
    torn = ArrowStorage(tmp_path, index_config=ONE_THREAD)
    assert torn.search(X[9], 1, method="index")[0].memory.text == "v9" and torn._index.builds == 1


def test_store_search_methods(tmp_path: Path) -> None:
    X = random_units(40, 384, 5)
    store = ArrowStorage(tmp_path)
    ids = store.add_many([f"m{i}" for i in range(40)], X, kind="memory")
    store.add("an adapter", embedding=X[3] + 0.01, kind="adaptation", payload="adapters/a")
    q = normalize(X[3] + 0.3 * random_units(1, 384, 6)[0])

    exact = store.search(q, 5)
    brute = np.argsort(-(X @ q))[:5]
    assert [h.memory.id for h in exact if h.memory.kind == "memory"][:4] == [ids[i] for i in brute[:4]]
    assert np.isclose(sum(h.weight for h in exact), 1.0, atol=1e-5)  # softmax over the returned hits

    only_memories = store.search(q, 5, kind="memory")
    assert [h.memory.id for h in only_memories] == [ids[i] for i in brute]
    assert [h.memory.kind for h in store.search(q, 5, kind="adaptation")] == ["adaptation"]

    hop = store.search(q, 3, method="hopfield", beta=32.0, kind="memory")
    assert hop[0].memory.id == ids[3] and hop[0].weight > 0.9
    assert sum(h.weight for h in hop) <= 1.0 + 1e-6
    assert np.isclose(hop[0].score, float(X[3] @ q), atol=1e-5)  # score stays the cosine
    assert len(store.search(q, 100)) == 41  # k larger than the store: everything, best first
    assert store.search(q, 3, kind="none-of-these") == []
