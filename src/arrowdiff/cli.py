"""The ``arrowdiff`` command: a thin shell over ArrowEngine and the training/weights tools.

Every user error prints one line (``arrowdiff: error: ...``) and exits with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arrowdiff.errors import ArrowDiffError


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--length", type=int, default=64, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--sampler",
        default=None,
        help="text/code: confidence (default) | ancestral; image: euler (default) | stochastic",
    )
    p.add_argument(
        "--confidence-noise",
        type=float,
        default=3.0,
        help="Gumbel noise on the confidence ranking (0 = greedy order; confidence sampler)",
    )
    p.add_argument("--block-size", type=int, default=0, help="semi-autoregressive block size (0 = off)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance (1 = off, 0 = unconditioned): on the memories with --memory-guided, "
        "else "
        "on the prompt (text) or caption (image; default 3)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")


def unescape(text: str | None) -> str | None:
    """Turn the two-character sequences \\n and \\t typed on a command line into newline and tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


def cmd_diffuse(args: argparse.Namespace) -> int:
    from arrowdiff import ArrowEngine
    from arrowdiff.errors import ConfigError

    args.prompt, args.suffix = unescape(args.prompt), unescape(args.suffix)
    if args.modality == "image" and not args.out:
        raise ConfigError("--modality image writes a picture: give --out FILE.png")
    if args.modality == "audio" and not args.out:
        raise ConfigError("--modality audio writes speech: give --out FILE.wav")
    if args.modality != "audio" and (
        args.reference or args.voice or args.start_time is not None or args.voice_match is not None
    ):
        raise ConfigError("--reference, --voice, --start-time and --voice-match are for --modality audio")
    if args.voice_match and not args.reference:
        raise ConfigError(
            f"--voice-match {args.voice_match} matches a reference voice: also give --reference"
        )
    engine = ArrowEngine.from_pretrained(args.model, memory=args.store)
    if args.modality == "audio":
        from arrowdiff.speech.wav import write_wav

        speech = engine.diffuse(
            args.prompt,
            modality="audio",
            num_steps=args.steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            voice_id=args.voice,
            reference_audio=args.reference,
            pace=args.pace,
            start_time=args.start_time,
            voice_match=args.voice_match,
            progress=sys.stderr.isatty(),
        )
        write_wav(args.out, speech.waveform, speech.sample_rate)
        seconds = len(speech.waveform) / speech.sample_rate
        print(f"{args.out}: {seconds:.2f} s of speech at {speech.sample_rate} Hz for {args.prompt!r}")
        return 0
    result = engine.diffuse(
        args.prompt,
        modality=args.modality,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        memory_guided=args.memory_guided,
        seed=args.seed,
        length=args.length,
        suffix=args.suffix,
        temperature=args.temperature,
        sampler=args.sampler,
        block_size=args.block_size,
        confidence_noise=args.confidence_noise,
        progress=sys.stderr.isatty(),
        height=args.height,
        width=args.width,
    )
    if args.memory_guided and sys.stderr.isatty():
        for text in engine.retrieve(args.prompt).texts:
            print(f"memory: {text[:100]}", file=sys.stderr)
    if args.modality == "image":
        from PIL import Image

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result).save(args.out)
        print(f"{args.out}: {result.shape[1]}x{result.shape[0]} image for {args.prompt!r}")
        return 0
    text = args.prompt + result + (args.suffix or "")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from arrowdiff import ArrowEngine
    from arrowdiff.engine import CommonParams

    args.prompt = unescape(args.prompt)
    stop = [unescape(s) for s in args.stop or []]
    # fail on a bad value before loading any model (the engine validates the same way)
    CommonParams(args.max_new_tokens, args.temperature, args.seed, args.top_k, args.top_p, tuple(stop))
    # default AR model: SmolLM2-135M (converted from the installed wheel on first use)
    engine = ArrowEngine.from_pretrained(args.model or ("smollm2" if args.mode == "ar" else None))
    pieces = engine.stream(
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        stop,
        mode=args.mode,
    )
    print(args.prompt, end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import json

    from arrowdiff import ArrowEngine

    emb = ArrowEngine.from_pretrained().encode(args.texts, normalize=not args.no_normalize)
    if args.json:
        print(json.dumps({"model": "all-MiniLM-L6-v2", "dim": emb.shape[1], "embeddings": emb.tolist()}))
    else:
        for text, row in zip(args.texts, emb, strict=True):
            head = " ".join(f"{v:+.4f}" for v in row[:6])
            print(f"{text[:40]!r}: dim {row.shape[0]}, norm {float((row**2).sum()) ** 0.5:.4f}, [{head} ...]")
    return 0


def cmd_convert_gguf(args: argparse.Namespace) -> int:
    from arrowdiff.ar.gguf_convert import convert_gguf

    convert_gguf(Path(args.gguf), Path(args.out), args.bits, progress=sys.stderr.isatty())
    print(args.out)
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
    from arrowdiff.weights import QuantPolicy, load_model_dir
    from arrowdiff.weights.requantize import requantize_model_dir

    if args.bits not in QUANTIZE_BITS:
        raise ConfigError(
            f"--bits {args.bits} is not supported; use one of {', '.join(map(str, QUANTIZE_BITS))}"
        )
    if args.group_size < 1:
        raise ConfigError(
            f"--group-size {args.group_size} must be a positive integer; 32, 64 or 128 are typical"
        )
    keep = []
    for rule in args.keep:
        glob, sep, bits = rule.rpartition("=")
        if not sep or not glob or not bits.isdigit():
            raise ConfigError(f"--keep {rule!r}: expected GLOB=BITS, e.g. 'out.*=8'")
        keep.append((glob, int(bits)))
    src = resolve_model_path(args.model)
    base = QuantPolicy(bits=args.bits, group_size=args.group_size, method=args.method)
    source_keep = load_model_dir(src).metadata.get("quantization", {}).get("policy", {}).get("keep", [])
    inherited = [(g, b) for g, b in source_keep if b > args.bits and (g, b) not in base.keep]
    policy = QuantPolicy(
        bits=args.bits,
        group_size=args.group_size,
        method=args.method,
        keep=(*keep, *base.keep, *inherited),
    )
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

    d = sub.add_parser(
        "diffuse",
        help="generate with the diffusion model (text, code, image, speech; infilling; memory-guided)",
    )
    d.add_argument("--prompt", default="", help="text the output starts with, kept exactly (\\n = newline)")
    d.add_argument(
        "--suffix", default=None, help="text the output ends with: turns on infilling (\\n = newline)"
    )
    d.add_argument("--modality", default="text", help="text | code | image | audio")
    d.add_argument(
        "--out", default=None, help="write the result to this file (a PNG for images, a WAV for audio)"
    )
    d.add_argument("--voice", default=None, help="audio: a built-in voice id (see `arrowdiff info`)")
    d.add_argument(
        "--reference", default=None, help="audio: a WAV of the voice to clone (16 kHz, 5 s recommended)"
    )
    d.add_argument("--pace", type=float, default=1.0, help="audio: > 1 speaks slower")
    d.add_argument(
        "--start-time",
        type=float,
        default=None,
        help="audio: shallow diffusion starts from the mel prior noised to this time (1 = pure noise)",
    )
    d.add_argument(
        "--voice-match",
        type=float,
        default=None,
        help="audio with --reference: match the reference's mel statistics, 0..1 (default 1; 0 = off)",
    )
    d.add_argument(
        "--memory-guided", action="store_true", help="condition on memories retrieved for the prompt (R5)"
    )
    d.add_argument("--store", default=None, help="memory store (default: $ARROWDIFF_HOME/memory)")
    d.add_argument("--height", type=int, default=None, help="image height in pixels (default: trained size)")
    d.add_argument("--width", type=int, default=None, help="image width in pixels (default: trained size)")
    _add_sampling_args(d)
    d.set_defaults(func=cmd_diffuse)

    g = sub.add_parser("generate", help="continue a prompt: --mode ar (InferenceCore) or diffusion")
    g.add_argument("--prompt", required=True, help="text to continue (\\n = newline)")
    g.add_argument("--mode", default="ar", choices=["ar", "diffusion"])
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=None, help="stop before this string (repeatable)")
    g.add_argument(
        "--model",
        default=None,
        help="model directory or name (default: smollm2 for --mode ar, the shipped model for diffusion; "
        "'ar-baseline' is the project's own causal model)",
    )
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("encode", help="sentence embeddings (MiniLM, 384-d) of the given texts")
    e.add_argument("texts", nargs="+", help="one or more sentences")
    e.add_argument("--json", action="store_true", help="print the embeddings as JSON")
    e.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    e.set_defaults(func=cmd_encode)

    c = sub.add_parser("convert-gguf", help="convert a LLaMA-architecture GGUF into a model directory")
    c.add_argument("gguf", help="path of the .gguf file")
    c.add_argument("--bits", type=int, default=4, help="4 (Q4_1 blocks carried over exactly) or 8")
    c.add_argument("--out", required=True, help="new model directory")
    c.set_defaults(func=cmd_convert_gguf)

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
    q.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="GLOB=BITS",
        help="store tensors whose name matches GLOB at BITS (more than --bits), e.g. 'out.*=8'; repeatable. "
        "The source's own wider rules (e.g. a VAE kept at 16 bits) are carried over",
    )
    q.set_defaults(func=cmd_quantize)

    sub.add_parser("train", help="train a model (see `arrowdiff train --help`)", add_help=False)
    sub.add_parser("memory", help="the memory store: add, search, list, delete (see `arrowdiff memory -h`)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "train":  # the training parser owns all of its flags
            return cmd_train(argparse.Namespace(), argv[1:])
        if argv and argv[0] == "memory":  # so does the memory store's
            from arrowdiff.memory.cli_memory import main as memory_main

            return memory_main(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ArrowDiffError as e:
        print(f"arrowdiff: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `arrowdiff info | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("arrowdiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
