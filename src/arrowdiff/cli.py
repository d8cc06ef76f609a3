"""The ``arrowdiff`` command: a thin shell over ArrowEngine and the training/weights tools.

Every user error prints one line (``arrowdiff: error: ...``) and exits with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arrowdiff.errors import ArrowDiffError


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--length", type=int, default=64, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--sampler", default="confidence", help="confidence | ancestral")
    p.add_argument(
        "--confidence-noise",
        type=float,
        default=3.0,
        help="Gumbel noise on the confidence ranking (0 = greedy order; confidence sampler)",
    )
    p.add_argument("--block-size", type=int, default=0, help="semi-autoregressive block size (0 = off)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance on the prompt")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")


def unescape(text: str | None) -> str | None:
    """Turn the two-character sequences \\n and \\t typed on a command line into newline and tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


def cmd_diffuse(args: argparse.Namespace) -> int:
    from arrowdiff import ArrowEngine

    args.prompt, args.suffix = unescape(args.prompt), unescape(args.suffix)
    engine = ArrowEngine.from_pretrained(args.model)
    text = engine.diffuse(
        args.prompt,
        modality=args.modality,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        length=args.length,
        suffix=args.suffix,
        temperature=args.temperature,
        sampler=args.sampler,
        block_size=args.block_size,
        confidence_noise=args.confidence_noise,
        progress=sys.stderr.isatty(),
    )
    result = args.prompt + text + (args.suffix or "")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(result)
    print(result)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from arrowdiff import ArrowEngine

    if args.mode == "ar":
        engine = ArrowEngine.from_pretrained(args.model or "ar-baseline")
        print(args.prompt, end="", flush=True)
        for piece in engine.stream(
            args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed
        ):
            print(piece, end="", flush=True)
        print()
        return 0
    engine = ArrowEngine.from_pretrained(args.model)
    print(
        args.prompt
        + engine.generate(
            args.prompt, args.max_new_tokens, mode="diffusion", temperature=args.temperature, seed=args.seed
        )
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from arrowdiff.info import describe_model

    print(describe_model(args.model, as_json=args.json))
    return 0


QUANTIZE_BITS = (8, 4, 2)


def cmd_quantize(args: argparse.Namespace) -> int:
    from arrowdiff.errors import ConfigError
    from arrowdiff.info import describe_model
    from arrowdiff.loading import resolve_model_path
    from arrowdiff.weights import QuantPolicy
    from arrowdiff.weights.requantize import requantize_model_dir

    if args.bits not in QUANTIZE_BITS:
        raise ConfigError(
            f"--bits {args.bits} is not supported; use one of {', '.join(map(str, QUANTIZE_BITS))}"
        )
    if args.group_size < 1:
        raise ConfigError(
            f"--group-size {args.group_size} must be a positive integer; 32, 64 or 128 are typical"
        )
    policy = QuantPolicy(bits=args.bits, group_size=args.group_size, method=args.method)
    src = resolve_model_path(args.model)
    requantize_model_dir(src, Path(args.out), policy, progress=sys.stderr.isatty())
    print(describe_model(args.out))
    return 0


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from arrowdiff.training.train import main as train_main

    return train_main(rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arrowdiff", description="One diffusion score network for text, code, images and speech."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("diffuse", help="generate with the diffusion model (text, code; infilling)")
    d.add_argument("--prompt", default="", help="text the output starts with, kept exactly (\\n = newline)")
    d.add_argument(
        "--suffix", default=None, help="text the output ends with: turns on infilling (\\n = newline)"
    )
    d.add_argument("--modality", default="text", help="text | code")
    d.add_argument("--out", default=None, help="also write the result to this file")
    _add_sampling_args(d)
    d.set_defaults(func=cmd_diffuse)

    g = sub.add_parser("generate", help="continue a prompt: --mode ar (InferenceCore) or diffusion")
    g.add_argument("--prompt", required=True)
    g.add_argument("--mode", default="ar", choices=["ar", "diffusion"])
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--model", default=None)
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="components, parameters, bits and bytes of a model")
    i.add_argument("model", nargs="?", default=None, help="model directory (default: the shipped model)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    q = sub.add_parser("quantize", help="re-quantize a model directory (e.g. INT8 -> INT4) into a new one")
    q.add_argument("model", help="model directory or shipped model name, e.g. 'default'")
    q.add_argument("--bits", type=int, required=True, help="8, 4 or 2 (norms and biases stay fp32)")
    q.add_argument("--group-size", type=int, default=64, help="values per scale/zero group (default 64)")
    q.add_argument("--method", default="rtn", help="rtn (default) or hqq (lower error, slower)")
    q.add_argument("--out", required=True, help="new model directory (must not exist or be empty)")
    q.set_defaults(func=cmd_quantize)

    sub.add_parser("train", help="train a model (see `arrowdiff train --help`)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "train":  # the training parser owns all of its flags
            return cmd_train(argparse.Namespace(), argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ArrowDiffError as e:
        print(f"arrowdiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arrowdiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
