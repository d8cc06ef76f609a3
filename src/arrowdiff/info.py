"""``arrowdiff info``: what a model directory holds: components, parameters, bits, bytes, backbone share."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from arrowdiff.loading import resolve_model_path
from arrowdiff.network.model import SCORE_NETWORK_PARTS
from arrowdiff.weights import load_model_dir

BACKBONE_SHARE_TARGET = 0.90  # R4.2


def model_summary(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    p = resolve_model_path(path)
    stored = load_model_dir(p)
    comps = {}
    for name, tensors in stored.components.items():
        f = p / stored.metadata["components"][name]
        params = sum(_numel(st.shape) for st in tensors.values())
        bits = Counter()
        for st in tensors.values():
            bits[st.bits] += _numel(st.shape)
        comps[name] = {
            "file": str(f.relative_to(p)),
            "tensors": len(tensors),
            "parameters": params,
            "bytes": f.stat().st_size,
            "bits": {str(b): n for b, n in sorted(bits.items())},
        }
    total = sum(c["parameters"] for c in comps.values())
    # R4.2 is about the score network: codecs beside it (the VAE, the voice model, the vocoder) are not
    network = sum(c["parameters"] for n, c in comps.items() if n.split("/")[0] in SCORE_NETWORK_PARTS)
    share = comps.get("backbone", {}).get("parameters", 0) / max(network, 1)
    meta = stored.metadata
    return {
        "path": str(p),
        "model_type": meta.get("model_type"),
        "supported_modalities": meta.get("supported_modalities"),
        "quantization": {
            k: meta.get("quantization", {}).get(k) for k in ("method", "bit_width", "group_size")
        },
        "components": comps,
        "total_parameters": total,
        "score_network_parameters": network,
        "total_bytes": sum(c["bytes"] for c in comps.values()),
        "backbone_share": round(share, 4),
        "backbone_share_ok": share >= BACKBONE_SHARE_TARGET,
        "training": {k: meta.get("training", {}).get(k) for k in ("command", "tokens_seen", "steps", "seed")},
        "voices": list(meta.get("model_config", {}).get("voice", {}).get("voices", [])),
    }


def describe_model(path: str | os.PathLike[str] | None, as_json: bool = False) -> str:
    s = model_summary(path)
    if as_json:
        return json.dumps(s, indent=2)
    lines = [
        f"model       {s['path']}",
        f"type        {s['model_type']}  modalities: {', '.join(s['supported_modalities'] or [])}",
        f"quantized   {s['quantization']['method']}, {s['quantization']['bit_width']}-bit, group "
        f"{s['quantization']['group_size']}",
        "",
        f"{'component':<14}{'parameters':>14}{'share':>8}{'MB on disk':>12}  bits (parameters)",
    ]
    for name, c in s["components"].items():
        bits = ", ".join(f"{b}: {n:,}" for b, n in c["bits"].items())
        lines.append(
            f"{name:<14}{c['parameters']:>14,}{c['parameters'] / s['total_parameters']:>8.1%}"
            f"{c['bytes'] / 1e6:>12.2f}  {bits}"
        )
    lines.append(f"{'total':<14}{s['total_parameters']:>14,}{'':>8}{s['total_bytes'] / 1e6:>12.2f}")
    if "backbone" in s["components"]:  # unified diffusion models; LLaMA AR models have one component
        ok = "meets" if s["backbone_share_ok"] else "BELOW"
        share, goal = s["backbone_share"], BACKBONE_SHARE_TARGET
        lines.append(
            f"\nbackbone share {share:.1%} of the score network ({ok} the R4.2 target of {goal:.0%})"
        )
    if s["voices"]:
        lines.append(f"voices       {', '.join(s['voices'])} (--voice / voice_id=)")
    t = s["training"]
    if t.get("command") and t.get("tokens_seen") is None:
        lines.append(f"\nmade by      {t['command']}")
    elif t.get("command"):
        lines.append(
            f"trained by   {t['command']}\n             {t['tokens_seen']:,} tokens, {t['steps']} steps, "
            f"seed {t['seed']}"
        )
    return "\n".join(lines)


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
