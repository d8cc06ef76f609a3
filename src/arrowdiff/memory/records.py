"""What the memory store holds and returns: ``Memory`` (one stored record) and ``SearchHit`` (one result).

Both are immutable. A memory's embedding is a read-only view into the segment it was read from, so
handing memories out never copies vectors and never lets a caller change what the store holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Memory:
    """One stored record. ``eq=False``: two memories are the same record when their ``id`` is."""

    id: str  # uuid4 hex, assigned by the store
    text: str  # what was remembered (or a description of the payload)
    embedding: np.ndarray  # (D,) float32, unit L2 norm, read-only
    created_at: datetime  # UTC, kept across updates
    kind: str = "memory"  # "memory", "adaptation", ... (free-form, used as a filter)
    modality: str = "text"  # what the text/payload is: "text", "code", "image", ...
    metadata_json: str = "{}"  # a JSON object, stored as a string (the Parquet column is plain text)
    payload: str | None = None  # optional reference, e.g. the path of an adapter directory

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as a new dict (parsed on each access, so callers can change their copy)."""
        return json.loads(self.metadata_json)

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        when = f"{self.created_at:%Y-%m-%dT%H:%M:%SZ}"
        return f"Memory(id={self.id!r}, kind={self.kind!r}, text={text!r}, created_at={when})"


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    ``score`` is the cosine similarity between the query and the memory. ``weight`` is how much this memory
    counts in the retrieved mixture: the modern-Hopfield softmax weight for ``method="hopfield"`` (over
    the candidate set), else ``softmax(beta * score)`` over the returned hits.
    """

    memory: Memory
    score: float
    weight: float
