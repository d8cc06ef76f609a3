"""Argument checks for ArrowStorage's public methods: each returns the clean value or raises ConfigError
naming the bad value and the fix."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from arrowdiff.errors import ConfigError


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


__all__ = ["check_label", "check_payload", "check_text", "encode_metadata", "one_row"]
