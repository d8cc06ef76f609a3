"""AR path benchmark: SmolLM2-135M through arrowdiff's InferenceCore vs llama.cpp and transformers, the
quality cost of each of our weight forms, and encode() latency. Writes benchmarks/results/ar.json.

    python -m benchmarks.ar --threads 2       (after `make bench-deps`; llama.cpp needs llama-cpp-python)

Latency: greedy decoding of NEW_TOKENS tokens after a fixed prompt (end tokens ignored, so every run
decodes the same count); time to first token = prompt prefill + first sample; ms/token = the remaining
decode time / (NEW_TOKENS - 1); median of REPEATS runs after one warm-up. Every engine runs the same GGUF
weights: llama.cpp the Q4_1 file itself, transformers its fp32 dequantization (and a bf16 cast), ours the
converted INT4 directory (Q4_1 blocks carried over) and an INT8 requantization.
Perplexity: held-out validation documents of our corpus (data/shards/val_text.bin, decoded with
data/tokenizer.json; stdlib docstrings if absent), re-tokenised by SmolLM2, windows of PPL_TOKENS tokens
after <|endoftext|>; the reference is our fp32 forward of the same dequantized GGUF weights.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import REPO_ROOT, target, write_results

PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type with an oil-based ink and a screw press. Within a few decades"
)
NEW_TOKENS, REPEATS, PPL_TOKENS, PPL_WINDOWS = 64, 3, 256, 12


def held_out_texts(n: int) -> tuple[list[str], str]:
    """``n`` validation documents of our corpus as text, and where they came from."""
    shard, tok_file = REPO_ROOT / "data/shards/val_text.bin", REPO_ROOT / "data/tokenizer.json"
    if shard.is_file() and tok_file.is_file():
        import numpy as np

        from arrowdiff.tokenizer import TextTokenizer

        tok = TextTokenizer.from_file(tok_file)
        ids = np.fromfile(shard, dtype="<u2")
        docs, start = [], 0
        for end in np.flatnonzero(ids == tok.eot_id):
            text = tok.decode(ids[start:end].tolist())
            start = end + 1
            if len(text) > 2000:
                docs.append(text)
            if len(docs) == n:
                break
        return docs, "data/shards/val_text.bin (SOTU/Brown/... validation split)"
    from benchmarks.judge import _sample_texts

    return _sample_texts(n), "stdlib module docstrings (data/ not built)"


def window_ppl(forward: Callable[[torch.Tensor], torch.Tensor], windows: list[list[int]], bos: int) -> float:
    """exp(mean NLL) over all tokens of all windows, each preceded by ``bos``."""
    total, count = 0.0, 0
    for w in windows:
        x = torch.tensor([[bos, *w]])
        with torch.inference_mode():
            logits = forward(x[:, :-1])[0].float()
        total += float(F.cross_entropy(logits, x[0, 1:], reduction="sum"))
        count += len(w)
    return math.exp(total / count)


def summarize(ttft_s: list[float], per_tok_ms: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "ttft_ms": 1e3 * statistics.median(ttft_s),
        "ms_per_token": statistics.median(per_tok_ms),
        "tokens_per_s": 1e3 / statistics.median(per_tok_ms),
        "runs": [{"ttft_ms": 1e3 * t, "ms_per_token": m} for t, m in zip(ttft_s, per_tok_ms, strict=True)],
        **extra,
    }


def bench_ours(loaded: Any) -> dict[str, Any]:
    from arrowdiff.ar.inference import InferenceCore

    core = InferenceCore(loaded.model, loaded.tokenizer)
    core.end_ids = frozenset()  # decode exactly NEW_TOKENS tokens
    ids = core.encode(PROMPT)
    ttft, per_tok = [], []
    for i in range(REPEATS + 1):
        t0 = time.perf_counter()
        it = core.stream_ids(ids, NEW_TOKENS, temperature=0.0)
        next(it)
        first = time.perf_counter() - t0
        n = 1 + sum(1 for _ in it)
        assert n == NEW_TOKENS
        if i:  # the first run warms up
            ttft.append(first)
            per_tok.append(1e3 * core.last_timing["decode_s"] / (NEW_TOKENS - 1))
    return summarize(ttft, per_tok, prompt_tokens=len(ids), compute=loaded.compute)


def bench_transformers(gguf: Path, dtype: torch.dtype) -> dict[str, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kw = {"gguf_file": gguf.name, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=dtype, **kw).eval()
    x = tok(PROMPT, return_tensors="pt", add_special_tokens=False).input_ids

    def run(n: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=2)
        assert out.shape[1] == x.shape[1] + n
        return time.perf_counter() - t0

    run(NEW_TOKENS)  # warm-up
    ttft, per_tok = [], []
    for _ in range(REPEATS):
        t1, tn = run(1), run(NEW_TOKENS)
        ttft.append(t1)
        per_tok.append(1e3 * (tn - t1) / (NEW_TOKENS - 1))
    return summarize(ttft, per_tok, dtype=str(dtype).removeprefix("torch."), prompt_tokens=x.shape[1])


def bench_llamacpp(gguf: Path, threads: int) -> dict[str, Any]:
    try:
        from llama_cpp import Llama, __version__
    except ImportError as e:
        return {
            "error": f"llama-cpp-python not importable ({e}); it builds from source: "
            "CMAKE_ARGS=-DGGML_NATIVE=ON pip install llama-cpp-python"
        }
    llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)

    def run() -> tuple[float, float]:
        llm.reset()
        t0 = time.perf_counter()
        first = None
        for n, _tok in enumerate(llm.generate(ids, temp=0.0, top_k=1, reset=True), start=1):
            if first is None:
                first = time.perf_counter() - t0
            if n == NEW_TOKENS:
                break
        total = time.perf_counter() - t0
        return first or total, 1e3 * (total - (first or 0.0)) / (NEW_TOKENS - 1)

    run()
    runs = [run() for _ in range(REPEATS)]
    return summarize([r[0] for r in runs], [r[1] for r in runs], version=__version__, prompt_tokens=len(ids))


def bench_encode() -> dict[str, Any]:
    from arrowdiff.encoder import SentenceEncoder

    texts, _ = held_out_texts(40)
    sentences = [s.strip() for t in texts for s in t.split(". ") if len(s.strip()) > 20][:1000]
    ours = SentenceEncoder(batch_size=64).load()
    st = ours._model  # the sentence-transformers model itself: the baseline is calling it directly
    out: dict[str, Any] = {"sentences": len(sentences)}
    for label, fn in (
        ("arrowdiff", lambda s: ours.encode(s)),
        ("sentence_transformers", lambda s: st.encode(s, batch_size=64, normalize_embeddings=True)),
    ):
        fn(sentences[:64])  # warm-up
        t1 = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn(sentences[:1])
            t1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn(sentences)
        out[label] = {"one_ms": 1e3 * statistics.median(t1), "thousand_s": time.perf_counter() - t0}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], help="any of: transformers llamacpp ppl encode")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from arrowdiff.ar.load import ensure_smollm2, load_llama, smollm2_gguf
    from arrowdiff.weights import q4avx2

    gguf = smollm2_gguf()
    figures: dict[str, Any] = {"loadavg_1m_at_start": os.getloadavg()[0], "prompt": PROMPT}
    figures["new_tokens"] = NEW_TOKENS
    dirs = {4: ensure_smollm2(4), 8: ensure_smollm2(8)}
    variants = {  # name -> (directory bits, compute form)
        "ours_int4": (4, "int4pack"),
        "ours_int4_q4avx2": (4, "q4avx2"),  # the same INT4 file in our AVX2 Q4_1 x Q8_1 kernel
        "ours_int4_int8dyn": (4, "int8dyn"),  # the same INT4 file, computed through fbgemm int8
        "ours_int8": (8, "bf16"),
        "ours_int8_int8dyn": (8, "int8dyn"),
        "ours_bf16": (4, "bf16"),
        "ours_fp32": (4, "fp32"),
    }
    ok, why = q4avx2.kernel_status()
    if not ok:
        print("skipping ours_int4_q4avx2:", why)
        figures["q4avx2_unavailable"] = why
        del variants["ours_int4_q4avx2"]
    latency: dict[str, Any] = {}
    loaded = {}
    for name, (bits, compute) in variants.items():
        t0 = time.perf_counter()
        loaded[name] = load_llama(dirs[bits], compute)
        latency[name] = {"load_s": time.perf_counter() - t0, **bench_ours(loaded[name])}
        print(name, f"{latency[name]['ms_per_token']:.1f} ms/token, ttft {latency[name]['ttft_ms']:.0f} ms")
    if "llamacpp" not in args.skip:
        latency["llamacpp_q4_1"] = bench_llamacpp(gguf, args.threads)
        print("llama.cpp", latency["llamacpp_q4_1"].get("ms_per_token", latency["llamacpp_q4_1"]))
    if "transformers" not in args.skip:
        for dtype in (torch.bfloat16, torch.float32):
            name = f"transformers_{str(dtype).removeprefix('torch.')}"
            latency[name] = bench_transformers(gguf, dtype)
            print(name, f"{latency[name]['ms_per_token']:.1f} ms/token")
    figures["latency"] = latency
    targets = []
    if "ppl" not in args.skip:
        texts, source = held_out_texts(PPL_WINDOWS)
        tok = loaded["ours_fp32"].tokenizer
        windows = [tok.encode(t, add_special_tokens=False).ids[:PPL_TOKENS] for t in texts]
        bos = tok.token_to_id("<|endoftext|>")
        ppl = {name: window_ppl(loaded[name].model, windows, bos) for name in variants}
        ref = ppl["ours_fp32"]
        figures["perplexity"] = {
            "source": source,
            "windows": len(windows),
            "tokens": sum(map(len, windows)),
            "ppl": ppl,
            "relative_delta_vs_fp32": {k: v / ref - 1 for k, v in ppl.items()},
        }
        print("ppl", ppl)
    # speed counts only through compute forms that keep the model's quality (ppl delta <= 3% vs fp32)
    delta = figures.get("perplexity", {}).get("relative_delta_vs_fp32", {})
    usable = [n for n in variants if delta.get(n, 0.0) <= 0.03]
    figures["compute_forms_counted"] = usable
    int4_forms = [n for n in ("ours_int4", "ours_int4_q4avx2", "ours_int4_int8dyn") if n in usable]
    if "ms_per_token" in latency.get("llamacpp_q4_1", {}) and int4_forms:
        int4 = min(int4_forms, key=lambda n: latency[n]["ms_per_token"])
        ratio = latency[int4]["ms_per_token"] / latency["llamacpp_q4_1"]["ms_per_token"]
        label = f"ours INT4 file ({variants[int4][1]}) / llama.cpp Q4_1 ms per token"
        targets.insert(0, target("ar_ms_per_token_vs_llamacpp", label, round(ratio, 3), "<=", 1.5, "x"))
    if int4_forms and delta:  # the quality of the INT4 form the speed targets count
        int4 = min(int4_forms, key=lambda n: latency[n]["ms_per_token"])
        label = f"INT4 ({variants[int4][1]}) perplexity / fp32 - 1, held-out text"
        targets.append(target("ar_int4_ppl_delta", label, round(delta[int4], 5), "<=", 0.03, "fraction"))
    hf = [latency[n]["ms_per_token"] for n in latency if n.startswith("transformers_")]
    if hf and usable:
        ours_best = min(latency[n]["ms_per_token"] for n in usable)
        label = "transformers / ours ms per token, best of each (ours: quality-keeping forms)"
        targets.insert(
            1, target("ar_speedup_vs_transformers", label, round(min(hf) / ours_best, 3), ">=", 3.0, "x")
        )
    if "encode" not in args.skip:
        figures["encode"] = bench_encode()
        print("encode", figures["encode"])
    print(write_results("ar", figures, targets))


if __name__ == "__main__":
    main()
