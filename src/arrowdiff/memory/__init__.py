"""Memory: the durable vector store (ArrowStorage) and retrieval over it (exact, modern Hopfield, HNSW).

Memories and adaptations (LoRA/ControlNet directories referenced by ``payload``) live in the same store,
so the loop storage -> conditioning -> network -> uncertainty -> evolution -> storage closes (DESIGN.md).
The on-disk format is specified in ``FORMAT.md`` beside this file.
"""

from arrowdiff.memory.conditioner import MemoryConditioner, Retrieved
from arrowdiff.memory.paths import default_store_path
from arrowdiff.memory.records import Memory, SearchHit
from arrowdiff.memory.store import ArrowStorage, DamagedSegment, StorageWarning

__all__ = [
    "ArrowStorage",
    "DamagedSegment",
    "Memory",
    "MemoryConditioner",
    "Retrieved",
    "SearchHit",
    "StorageWarning",
    "default_store_path",
]
