"""Deterministic batches from token shards: batch ``step`` is a pure function of (seed, step, rank).

That makes resuming exact without saving any random state, and keeps DDP ranks on disjoint draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A torch generator seeded from (seed, step, rank, stream) through numpy's SeedSequence."""
    ss = np.random.SeedSequence([seed, step, rank, stream])
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))


@dataclass
class ShardSampler:
    """Random windows of ``seq_len`` tokens from a text and a code stream, mixed at ``code_frac``."""

    text: np.ndarray  # uint16 token stream (memory-mapped)
    code: np.ndarray
    seq_len: int
    code_frac: float = 0.4

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, list[str], list[int]]:
        """Token windows (B, seq_len), the modality of each row, and each window's start in its stream."""
        is_code = torch.rand(batch_size, generator=generator) < self.code_frac
        rows, names, starts = [], [], []
        for c in is_code.tolist():
            stream = self.code if c else self.text
            start = int(torch.randint(0, len(stream) - self.seq_len, (1,), generator=generator))
            rows.append(np.asarray(stream[start : start + self.seq_len], dtype=np.int64))
            names.append("code" if c else "text")
            starts.append(start)
        return torch.from_numpy(np.stack(rows)), names, starts


def fixed_windows(stream: np.ndarray, seq_len: int, max_windows: int) -> Tensor:
    """Non-overlapping windows from the start of a stream (validation): (N, seq_len)."""
    n = min(max_windows, len(stream) // seq_len)
    return torch.from_numpy(np.asarray(stream[: n * seq_len], dtype=np.int64).reshape(n, seq_len))
