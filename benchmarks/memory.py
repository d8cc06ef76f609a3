"""Memory-guided generation and the memory store: relevance (R5.5), projection latency (R5.6), search.

Writes `benchmarks/results/memory.json`. Run from the repository root:

    python -m benchmarks.memory [--model DIR] [--cases 32] [--sizes 10000,100000] [--quick]

**Relevance (R5.5).** Held-out cases come from the validation documents (never trained on): for each
document D, four of its chunks are memories and the first tokens of a fifth chunk are the prompt. One
ArrowStorage holds the memories of every case, so retrieval by the prompt is real (its precision, the
share of retrieved memories that come from D, is reported). Each case is generated unconditioned,
memory-guided, and memory-guided with classifier-free guidance on the memories, with the same seed. An
output counts as relevant when its MiniLM embedding (the generated continuation only, prompt excluded) is
closer (mean cosine) to the RETRIEVED memories than to four unrelated memories (of other documents, not
retrieved). The unconditioned outputs, judged against the same memories, are the baseline. A second
protocol uses an empty prompt and a store holding only D's memories (retrieval = the most recent ones):
steering with no help from the prompt.

**Latency.** The memory projection (R5.6, `MemoryConditioner.project`), and retrieval end to end.

**Search.** Exact top-10 (a plain numpy matrix product: the baseline) against the store's ANN index:
latency and recall@10. Stores are real MiniLM embeddings of corpus chunks, grown past their count with
jittered copies (each a real embedding plus Gaussian noise, renormalised; labelled so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.engine import ArrowEngine
from arrowdiff.memory import ArrowStorage
from arrowdiff.memory.conditioner import MemoryConditioner
from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.training.memory_data import MemorySet
from arrowdiff.training.shards import load_manifest, open_shard
from benchmarks.common import target, write_results

PROMPT_TOKENS = 8


def fig(value: float | int, unit: str, **extra: Any) -> dict[str, Any]:
    return {"value": value, "unit": unit, **extra}


def build_cases(data: Path, memory_dir: Path, n_cases: int, seed: int) -> list[dict[str, Any]]:
    """(memories, prompt, unrelated memories) per validation document with at least five chunks."""
    manifest = load_manifest(data)
    tok = TextTokenizer.from_file(data / manifest["tokenizer_file"])
    stream = open_shard(data, "val", "text")
    mset = MemorySet.load(memory_dir, "val", "text", stream, int(manifest["special_ids"]["eot"]))
    by_doc: dict[int, list[int]] = {}
    for i, d in enumerate(mset.chunks[:, 2].tolist()):
        by_doc.setdefault(d, []).append(i)
    docs = [d for d, idx in by_doc.items() if len(idx) >= 5]
    rng = np.random.default_rng(seed)
    docs = [docs[i] for i in rng.permutation(len(docs))[:n_cases]]
    text = lambda i: tok.decode(stream[mset.chunks[i, 0] : mset.chunks[i, 0] + mset.chunks[i, 1]].tolist())  # noqa: E731
    cases = []
    for d in docs:
        idx = by_doc[d]
        prompt_chunk = idx[-1]
        off = int(mset.chunks[prompt_chunk, 0])
        cases.append(
            {
                "doc": int(d),
                "memories": [text(i) for i in idx[:4]],
                "memory_emb": mset.emb[idx[:4]],
                "prompt": tok.decode(stream[off : off + PROMPT_TOKENS].tolist()),
            }
        )
    return cases


def relevant(out_emb: np.ndarray, retrieved: np.ndarray, unrelated: np.ndarray) -> tuple[bool, float, float]:
    """Is the output closer (mean MiniLM cosine) to the retrieved memories than to unrelated ones?"""
    rel = float((retrieved @ out_emb).mean())
    unrel = float((unrelated @ out_emb).mean())
    return rel > unrel, rel, unrel


def relevance(
    engine: ArrowEngine, cases: list[dict[str, Any]], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Relevance rates of unconditioned and memory-guided outputs, under both protocols."""
    embed = lambda t: engine.encoder.encode(list(t))  # noqa: E731
    shared = ArrowStorage(tmp / "shared", embedder=embed)
    for case in cases:
        case["ids"] = shared.add_many(case["memories"], embeddings=case["memory_emb"])
    conditions = {"unconditioned": (False, 1.0), "memory": (True, 1.0), "memory_cfg3": (True, 3.0)}
    gen = dict(num_steps=args.steps, length=args.length, temperature=1.0)
    out: dict[str, Any] = {}
    retrieved_precision = []
    examples = []
    for protocol in ("prompted", "empty_prompt"):
        outputs: dict[str, list[str]] = {c: [] for c in conditions}
        retrieved, unrelated = [], []
        for k, case in enumerate(tqdm(cases, desc=f"relevance/{protocol}")):
            if protocol == "prompted":
                engine.memory, prompt = shared, case["prompt"]
            else:
                own = ArrowStorage(tmp / f"case{k}", embedder=embed)
                own.add_many(case["memories"], embeddings=case["memory_emb"])
                engine.memory, prompt = own, ""
            hits = engine.retrieve(prompt)
            if protocol == "prompted":
                retrieved_precision.append(np.mean([t in case["memories"] for t in hits.texts]))
            retrieved.append(hits.embeddings[0].numpy())
            # unrelated: the memories of another case's document that were not retrieved here
            other = [
                e
                for c in cases
                if c is not case
                for t, e in zip(c["memories"], c["memory_emb"], strict=True)
                if t not in hits.texts
            ]
            unrelated.append(np.stack([other[(k * 7 + j) % len(other)] for j in range(4)]))
            for name, (guided, scale) in conditions.items():
                text = engine.diffuse(prompt, memory_guided=guided, guidance_scale=scale, seed=k, **gen)
                outputs[name].append(text)
        result = {}
        for name, texts in outputs.items():
            emb = engine.encode([t if t.strip() else "." for t in texts])
            judged = [relevant(e, r, u) for e, r, u in zip(emb, retrieved, unrelated, strict=True)]
            result[name] = {
                "rate": fig(float(np.mean([j[0] for j in judged])), "fraction"),
                "cos_related": fig(float(np.mean([j[1] for j in judged])), "cosine"),
                "cos_unrelated": fig(float(np.mean([j[2] for j in judged])), "cosine"),
            }
        out[protocol] = result
        examples.append(
            {
                "protocol": protocol,
                "prompt": cases[0]["prompt"] if protocol == "prompted" else "",
                "memories": cases[0]["memories"],
                **{name: texts[0] for name, texts in outputs.items()},
            }
        )
    out["retrieval_precision_at_4"] = fig(float(np.mean(retrieved_precision)), "fraction")
    out["examples"] = examples
    return out


def latency(engine: ArrowEngine, cases: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Median projection time (R5.6) and end-to-end retrieval time (query encoding + search)."""
    store = ArrowStorage(tmp / "latency", embedder=lambda t: engine.encoder.encode(list(t)))
    for case in cases:
        store.add_many(case["memories"], embeddings=case["memory_emb"])
    conditioner = MemoryConditioner(store, k=4)
    model = engine.diffusion.model
    retrieved = conditioner.retrieve(cases[0]["prompt"])
    times, retrieve_times = [], []
    for _ in range(5):
        MemoryConditioner.project(model, retrieved)
    for _ in range(200):
        t0 = time.perf_counter()
        MemoryConditioner.project(model, retrieved)
        times.append((time.perf_counter() - t0) * 1e3)
    for case in cases[:20]:
        t0 = time.perf_counter()
        conditioner.retrieve(case["prompt"])
        retrieve_times.append((time.perf_counter() - t0) * 1e3)
    return {
        "projection_ms": fig(statistics.median(times), "ms", k=4, repeats=200),
        "retrieve_ms": fig(statistics.median(retrieve_times), "ms", note="MiniLM query encoding + search"),
    }


def grown_embeddings(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors: the real embeddings first, then jittered copies of them (noise sigma 0.02 per
    dimension, cosine ~0.87 to their source), renormalised."""
    if n <= len(base):
        return base[np.sort(rng.choice(len(base), n, replace=False))].copy()
    reps = -(-n // len(base))
    out = np.concatenate([base] * reps)[:n].copy()
    out[len(base) :] += rng.normal(0, 0.02, size=(n - len(base), base.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def search(memory_dir: Path, sizes: list[int], tmp: Path, n_queries: int = 200) -> dict[str, Any]:
    """Exact top-10 (numpy over the store's matrix: the baseline) vs the store's HNSW index at each size:
    median latency per query and the index's recall@10 against the exact answer."""
    from arrowdiff.training.memory_data import dequantize_embeddings

    base = dequantize_embeddings(np.load(memory_dir / "train_text_emb.npy", allow_pickle=False))
    queries = dequantize_embeddings(np.load(memory_dir / "val_text_emb.npy", allow_pickle=False))[:n_queries]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for n in sizes:
        emb = grown_embeddings(base, n, rng)
        store = ArrowStorage(tmp / f"search{n}")
        t0 = time.perf_counter()
        for i in tqdm(range(0, n, 50_000), desc=f"store {n}"):
            part = emb[i : i + 50_000]
            store.add_many([f"m{i + j}" for j in range(len(part))], embeddings=part)
        add_s = time.perf_counter() - t0
        memories, matrix = store.snapshot()
        ids = [m.id for m in memories]
        truth, exact_ms = [], []
        for q in queries:
            t0 = time.perf_counter()
            top = np.argpartition(-(matrix @ q), 10)[:10]
            exact_ms.append((time.perf_counter() - t0) * 1e3)
            truth.append({ids[r] for r in top.tolist()})
        t0 = time.perf_counter()
        store.search(queries[0], k=10, method="index")  # builds (and persists) the index
        build_s = time.perf_counter() - t0
        index_ms, recalls = [], []
        for q, exact in zip(queries, truth, strict=True):
            t0 = time.perf_counter()
            hits = store.search(q, k=10, method="index")
            index_ms.append((time.perf_counter() - t0) * 1e3)
            recalls.append(len({h.memory.id for h in hits} & exact) / 10)
        store_exact_ms = []
        for q in queries[:50]:
            t0 = time.perf_counter()
            store.search(q, k=10, method="exact")
            store_exact_ms.append((time.perf_counter() - t0) * 1e3)
        out[str(n)] = {
            "memories": n,
            "real_embeddings": min(n, len(base)),
            "jittered_copies": max(0, n - len(base)),
            "add_many_seconds": fig(add_s, "s"),
            "exact_numpy_ms": fig(statistics.median(exact_ms), "ms", note="matrix @ q + argpartition"),
            "store_exact_search_ms": fig(statistics.median(store_exact_ms), "ms"),
            "index_search_ms": fig(statistics.median(index_ms), "ms"),
            "index_build_s": fig(build_s, "s"),
            "recall_at_10": fig(float(np.mean(recalls)), "fraction"),
        }
        del store, matrix, memories
    return out


def merge_search(memory_dir: Path, sizes: list[int], threads: int) -> int:
    """Run `search` at `sizes` and merge the figures into the existing results file (relevance kept)."""
    import json

    torch.set_num_threads(threads)
    path = Path(__file__).parent / "results" / "memory.json"
    old = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as d:
        srch = search(memory_dir, sizes, Path(d))
    figures = old["figures"]
    figures["search"].update(srch)
    targets = old["targets"]
    if "1000000" in srch:
        targets = [t for t in targets if t["id"] != "index_recall_at_10_1m"]
        targets.append(
            target(
                "index_recall_at_10_1m",
                "ANN recall@10 at 1M memories",
                srch["1000000"]["recall_at_10"]["value"],
                ">=",
                0.95,
                "fraction",
            )
        )
    sizes_arg = ",".join(map(str, sizes))
    extra = f"python -m benchmarks.memory --search-only --sizes {sizes_arg} --threads {threads}"
    command = old["command"] if extra in old["command"] else f"{old['command']} && {extra}"
    out = write_results("memory", figures, targets, command=command)
    print(out, "(search merged:", ", ".join(srch), ")")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the shipped default)")
    p.add_argument("--data", default="data/shards")
    p.add_argument("--memory-data", default="data/memory")
    p.add_argument("--cases", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="8 cases, 10k memories only (smoke run)")
    p.add_argument(
        "--search-only",
        action="store_true",
        help="measure only index search at --sizes and merge them into the existing memory.json",
    )
    args = p.parse_args(argv)
    if args.search_only:
        return merge_search(Path(args.memory_data), [int(s) for s in args.sizes.split(",")], args.threads)
    if args.quick:
        args.cases, args.sizes = 8, "10000"
    torch.set_num_threads(args.threads)
    engine = ArrowEngine.from_pretrained(args.model)
    cases = build_cases(Path(args.data), Path(args.memory_data), args.cases, seed=0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rel = relevance(engine, cases, args, tmp)
        lat = latency(engine, cases, tmp)
        srch = search(Path(args.memory_data), [int(s) for s in args.sizes.split(",")], tmp)
    figures = {
        "model": str(engine.diffusion.path),
        "cases": len(cases),
        "generation": {"num_steps": args.steps, "length": args.length, "prompt_tokens": PROMPT_TOKENS},
        "relevance": rel,
        "latency": lat,
        "search": srch,
        "threads": {
            "torch": torch.get_num_threads(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
    }
    guided = rel["prompted"]["memory_cfg3"]["rate"]["value"]  # the engine default: guidance 3 on memories
    targets = [
        target(
            "R5.5",
            "memory-guided outputs closer to retrieved memories than to unrelated ones",
            guided,
            ">",
            0.80,
            "fraction",
        ),
        target("R5.6", "memory projection latency (K=4)", lat["projection_ms"]["value"], "<", 10.0, "ms"),
    ]
    if "100000" in srch:
        targets.append(
            target(
                "index_recall_at_10",
                "ANN recall@10 at 100k memories",
                srch["100000"]["recall_at_10"]["value"],
                ">=",
                0.95,
                "fraction",
            )
        )
    path = write_results("memory", figures, targets)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
