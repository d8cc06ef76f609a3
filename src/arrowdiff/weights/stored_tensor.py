"""``StoredTensor``: one tensor of a component file, held as views into the file's memory map (section 6).

Nothing is decoded or copied until :meth:`StoredTensor.to_tensor` verifies the checksum and dequantizes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from arrowdiff.errors import WeightFormatError
from arrowdiff.weights.quantize import QuantizedTensor, dequantize, layout, rows_cols
from arrowdiff.weights.schema import DTYPES, checksum


def _torch_view(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A torch view of uint8 bytes as ``dtype``, sharing memory (no copy)."""
    t = torch.from_numpy(a)
    return t.view(dtype) if t.numel() else torch.empty(0, dtype=dtype)


@dataclass(eq=False)
class StoredTensor:
    """One tensor of a component file, held as views into the file's memory map; lazy and uncached."""

    name: str
    file: Path
    shape: tuple[int, ...]
    dtype: str  # the original dtype, e.g. "float32" (section 3)
    bits: int
    group_size: int
    method: str
    pad: int
    sha256: str
    zero_copy: bool  # True when payload/scales/zeros are views into the mmap, False after a pyarrow fallback
    _payload: np.ndarray = field(repr=False)
    _scales: np.ndarray = field(repr=False)
    _zeros: np.ndarray = field(repr=False)
    _verified: bool = field(default=False, repr=False)
    grouping: str = "last"  # how the shape flattens to rows (quantize.GROUPINGS); "last" in 1.0 files

    @property
    def payload(self) -> np.ndarray:
        """The payload bytes (uint8), a read-only view into the memory-mapped file."""
        v = self._payload.view()
        v.flags.writeable = False
        return v

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies in the file (payload + scales + zeros)."""
        return self._payload.nbytes + self._scales.nbytes + self._zeros.nbytes

    def verify(self) -> None:
        """Check the stored bytes' sha256; on mismatch raise WeightFormatError naming file and tensor."""
        if self._verified:
            return
        if checksum(self._payload, self._scales, self._zeros) != self.sha256:
            raise WeightFormatError(
                f"{self.file}: checksum mismatch in tensor {self.name!r}: the file is corrupt; "
                "re-export it (arrowdiff quantize / save_model_dir) or copy it again"
            )
        self._verified = True

    def quantized(self) -> QuantizedTensor:
        """The tensor in ArrowQuant form; ``packed`` shares memory with the file mapping."""
        _, n_scales, _ = layout(self.shape, self.bits, self.group_size, self.grouping)
        rows = rows_cols(self.shape, self.grouping)[0]
        grid = (rows, n_scales // rows) if rows else (0, 0)
        scales = _torch_view(self._scales, torch.float16).reshape(grid)
        zeros = _torch_view(self._zeros, torch.float16 if self.method == "hqq" else torch.uint8).reshape(grid)
        packed = torch.from_numpy(self._payload)
        settings = (self.shape, self.bits, self.group_size, self.method, self.pad, self.grouping)
        return QuantizedTensor(packed, scales, zeros, *settings)

    def to_tensor(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dequantize into a new tensor (``dtype`` defaults to the original); verifies the checksum first."""
        self.verify()
        return dequantize(self.quantized(), DTYPES[self.dtype] if dtype is None else dtype)
