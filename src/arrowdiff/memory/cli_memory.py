"""``arrowdiff memory``: add, search, list, delete, verify and compact the memory store from a shell.

``arrowdiff.cli`` hands every argument after ``memory`` to ``main()``; errors raise ArrowDiffError, which
that CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from arrowdiff.errors import ConfigError
from arrowdiff.memory.paths import default_store_path
from arrowdiff.memory.store import METHODS, ArrowStorage, Embedder, StorageWarning

TEXT_WIDTH = 60  # characters of text shown by `list`


def parse_meta(items: list[str] | None) -> dict[str, str] | None:
    """``["k=v", ...]`` -> ``{"k": "v"}`` (values stay strings)."""
    if not items:
        return None
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--meta {item!r} must look like key=value (e.g. --meta source=notes)")
        meta[key] = value
    return meta


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def cmd_add(store: ArrowStorage, args: argparse.Namespace) -> int:
    meta = parse_meta(args.meta)
    print(store.add(args.text, kind=args.kind, modality=args.modality, metadata=meta, payload=args.payload))
    return 0


def cmd_search(store: ArrowStorage, args: argparse.Namespace) -> int:
    hits = store.search(args.query, args.k, kind=args.kind, method=args.method, beta=args.beta)
    if args.json:
        out = [
            {
                "id": h.memory.id,
                "score": h.score,
                "weight": h.weight,
                "kind": h.memory.kind,
                "text": h.memory.text,
            }
            for h in hits
        ]
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for h in hits:
        print(f"{h.score:+.4f}  {h.memory.text}")
    return 0


def cmd_list(store: ArrowStorage, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit {args.limit} must be >= 0")
    for m in store.list(kind=args.kind, limit=args.limit, newest_first=True):
        print(f"{m.id}  {m.created_at:%Y-%m-%d %H:%M:%S}  {m.kind:<10}  {shorten(m.text)}")
    return 0


def cmd_delete(store: ArrowStorage, args: argparse.Namespace) -> int:
    store.delete(args.id)
    print(f"deleted {args.id}")
    return 0


def cmd_verify(store: ArrowStorage, args: argparse.Namespace) -> int:
    damaged = store.verify()
    for d in damaged:
        print(f"damaged: {d}")
    print(f"{len(store)} memories in {store.path}; {len(damaged)} damaged segment file(s)")
    return 1 if damaged else 0


def cmd_compact(store: ArrowStorage, args: argparse.Namespace) -> int:
    store.compact()
    print(f"{len(store)} memories in {store.path}; compacted")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # --store is accepted before or after the action; SUPPRESS keeps an action's default from hiding it
    store_help = "store folder (default: $ARROWDIFF_HOME/memory or ~/.local/share/arrowdiff/memory)"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, help=store_help)
    p = argparse.ArgumentParser(
        prog="arrowdiff memory", description="The durable memory store (ArrowStorage)."
    )
    p.add_argument("--store", default=None, help=store_help)
    sub = p.add_subparsers(dest="action", required=True)

    a = sub.add_parser("add", parents=[common], help="store a memory; prints its id")
    a.add_argument("text")
    a.add_argument("--kind", default="memory", help="memory | adaptation | ... (default: memory)")
    a.add_argument("--modality", default="text")
    a.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata entry (repeatable)")
    a.add_argument("--payload", default=None, help="a reference kept with the memory, e.g. an adapter dir")
    a.set_defaults(func=cmd_add)

    s = sub.add_parser("search", parents=[common], help="the memories closest to a query, with scores")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5, help="how many (default 5)")
    s.add_argument("--method", default="exact", choices=METHODS)
    s.add_argument("--kind", default=None)
    s.add_argument("--beta", type=float, default=8.0, help="inverse temperature of the weights (default 8)")
    s.add_argument("--json", action="store_true", help="print id, score, weight, kind, text as JSON")
    s.set_defaults(func=cmd_search)

    ls = sub.add_parser("list", parents=[common], help="id, time, kind and text, newest first")
    ls.add_argument("--kind", default=None)
    ls.add_argument("--limit", type=int, default=None)
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("delete", parents=[common], help="remove a memory by id")
    d.add_argument("id")
    d.set_defaults(func=cmd_delete)

    v = sub.add_parser("verify", parents=[common], help="re-hash every segment; exit 1 if any is damaged")
    v.set_defaults(func=cmd_verify)
    c = sub.add_parser("compact", parents=[common], help="merge segments; quarantine damaged ones")
    c.set_defaults(func=cmd_compact)
    return p


def main(argv: list[str], embedder: Embedder | None = None) -> int:
    """Run ``arrowdiff memory <argv>``; ``embedder`` replaces MiniLM (tests)."""
    args = build_parser().parse_args(argv)
    store = ArrowStorage(Path(args.store) if args.store else default_store_path(), embedder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StorageWarning)
        try:
            return int(args.func(store, args))
        finally:
            for w in caught:  # a damaged segment: one line, not a warnings traceback
                if issubclass(w.category, StorageWarning):
                    print(f"arrowdiff: warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
