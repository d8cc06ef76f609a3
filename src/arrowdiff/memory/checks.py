"""Argument checks for ArrowStorage's public methods: each returns the clean value or raises ConfigError
naming the bad value and the fix."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from arrowdiff.errors import ConfigError
from arrowdiff.memory.retrieval import normalize
from arrowdiff.memory.search import METHODS


def one_row(embedding: Any) -> np.ndarray:
    """A single embedding given as (D,) or (1, D), as (1, D) (other shapes pass through to be refused)."""
    emb = np.asarray(embedding)
    return emb[None] if emb.ndim == 1 else emb


def check_text(text: Any, what: str = "text") -> str:
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ConfigError(f"{what} {text!r} is empty; give at least one non-space character")
    return text


def check_label(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}={value!r} must be a non-empty string (e.g. {name}='text')")


def encode_metadata(metadata: dict[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise ConfigError(f"metadata must be a dict with string keys, got {metadata!r}")
    try:
        return json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"metadata {metadata!r} is not JSON-serialisable ({e}); use str, number, list, dict"
        ) from e


def check_payload(payload: Any) -> str | None:
    if payload is None:
        return None
    if not isinstance(payload, str | os.PathLike):
        raise ConfigError(f"payload must be a string or path, got {type(payload).__name__}")
    return os.fspath(payload)


def check_batch(
    texts: Any,
    modality: Any,
    kind: Any,
    metadatas: Sequence[dict[str, Any] | None] | None,
    payloads: Sequence[str | os.PathLike[str] | None] | None,
) -> tuple[list[str], list[str], list[str | None]]:
    """The arguments of ``ArrowStorage.add_many``: the texts, and one metadata JSON and payload per text."""
    if isinstance(texts, str):
        raise ConfigError("add_many() takes a list of texts; use add() for one text")
    texts = [check_text(t) for t in texts]
    n = len(texts)
    for name, values in (("metadatas", metadatas), ("payloads", payloads)):
        if values is not None and len(values) != n:
            raise ConfigError(f"{name} has {len(values)} entries for {n} texts; give one per text or None")
    check_label("modality", modality)
    check_label("kind", kind)
    metas = [encode_metadata(m) for m in (metadatas or [None] * n)]
    pays = [check_payload(p) for p in (payloads or [None] * n)]
    return texts, metas, pays


def check_changes(
    text: Any, modality: Any, kind: Any, metadata: dict[str, Any] | None, payload: Any
) -> tuple[str | None, str | None, str | None]:
    """The arguments of ``ArrowStorage.update``: the new text, metadata JSON and payload (None: unchanged)."""
    new_text = None if text is None else check_text(text)
    for name, value in (("modality", modality), ("kind", kind)):
        if value is not None:
            check_label(name, value)
    meta = None if metadata is None else encode_metadata(metadata)
    pay = None if payload is None else check_payload(payload)
    return new_text, meta, pay


def check_embeddings(emb: Any, n: int, dim: int, source: str = "embeddings") -> np.ndarray:
    """``n`` embeddings of ``dim`` values, finite and non-zero, as read-only unit-norm float32 rows."""
    arr = np.asarray(emb, dtype=np.float32)
    if arr.shape != (n, dim):
        raise ConfigError(
            f"{source} shape {tuple(arr.shape)}, expected ({n}, {dim}): one {dim}-d row "
            f"per text (this store holds {dim}-d embeddings)"
        )
    if not np.isfinite(arr).all():
        raise ConfigError(f"{source} contain NaN or infinite values; embeddings must be finite")
    norms = np.linalg.norm(arr, axis=1)
    if (norms < 1e-12).any():
        raise ConfigError(
            f"{source} row {int(np.argmin(norms))} is all zeros; it has no direction to normalise"
        )
    out = normalize(arr)
    out.flags.writeable = False
    return out


def check_query(query: str | np.ndarray, dim: int) -> None:
    if isinstance(query, str):
        check_text(query, what="query")
    elif np.asarray(query).size != dim:
        raise ConfigError(
            f"query embedding shape {tuple(np.asarray(query).shape)}, expected ({dim},): "
            "pass a text or one embedding of the store's size"
        )


def check_search(k: Any, method: str, beta: float, candidates: int) -> None:
    """The options of ``ArrowStorage.search``."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k={k!r} must be an integer >= 1 (the number of memories to return)")
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if beta <= 0:
        raise ConfigError(f"beta={beta} must be > 0 (inverse temperature; 8-32 for unit-norm embeddings)")
    if candidates < 1:
        raise ConfigError(f"candidates={candidates} must be >= 1 (Hopfield candidate pool; default 64)")


__all__ = [
    "check_batch",
    "check_changes",
    "check_embeddings",
    "check_label",
    "check_payload",
    "check_query",
    "check_search",
    "check_text",
    "encode_metadata",
    "one_row",
]
