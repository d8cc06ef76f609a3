"""QuantPolicy: which bit width each named tensor is stored at. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

import torch

from arrowdiff.errors import ConfigError
from arrowdiff.weights.quantize import check_bits, check_group_size, check_method

# Norms and biases are tiny and sensitive, so they stay fp32; token/position embeddings keep 8 bits
# (llama.cpp likewise keeps embeddings and output projections above the bulk width).
DEFAULT_KEEP: tuple[tuple[str, int], ...] = (("*norm*", 32), ("*.bias", 32), ("*embed*", 8))


@dataclass(frozen=True)
class QuantPolicy:
    """How a component's tensors are stored. A tensor gets the width of the first matching ``keep`` rule,
    else ``vector_bits`` if it has fewer than 2 dims, else ``bits``; rules only ever keep *more* bits than
    ``bits`` (so ``bits=32`` stores everything losslessly)."""

    bits: int = 4  # default width for matrices: 2, 4, 8 (quantized) or 16, 32 (raw fp16/fp32)
    group_size: int = 64  # values per scale/zero group along the last dim
    method: str = "rtn"  # "rtn" (round to nearest) or "hqq" (half-quadratic, lower error, slower)
    keep: tuple[tuple[str, int], ...] = field(default=DEFAULT_KEEP)  # (fnmatch glob on name, bits) rules
    vector_bits: int = 32  # width for 0-D and 1-D tensors (norm gains, biases, scalars)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_group_size(self.group_size)
        check_method(self.method)
        check_bits(self.vector_bits)
        if not isinstance(self.keep, (tuple, list)):
            raise ConfigError(f"keep={self.keep!r} must be a sequence of (glob, bits) pairs: (('*x*', 32),)")
        for rule in self.keep:
            if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
                raise ConfigError(f"keep rule {rule!r} must be a (glob string, bits) pair: ('*norm*', 32)")
            check_bits(rule[1])
        keep = tuple((p, b) for p, b in self.keep)
        object.__setattr__(self, "keep", keep)  # lists (e.g. from JSON) become tuples

    def for_component(self, component: str) -> QuantPolicy:
        """The policy for one component's tensors. A rule whose glob has a ``/`` names the component too
        (``"voice/*"``, ``"heads/text/out.*"``) and applies only inside matching components; the others
        apply everywhere."""
        keep = []
        for pattern, b in self.keep:
            if "/" not in pattern:
                keep.append((pattern, b))
            elif pattern.startswith(component + "/"):
                keep.append((pattern[len(component) + 1 :], b))
            else:
                comp, _, rest = pattern.rpartition("/")
                if fnmatchcase(component, comp):
                    keep.append((rest, b))
        return replace(self, keep=tuple(keep))

    def bits_for(self, name: str, tensor: torch.Tensor) -> int:
        """The width ``name`` is stored at."""
        for pattern, b in self.keep:
            if fnmatchcase(name, pattern):
                return max(b, self.bits)
        if tensor.dim() < 2:
            return max(self.vector_bits, self.bits)
        return self.bits

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the ``quantization.policy`` entry of metadata.json)."""
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "method": self.method,
            "keep": [[p, b] for p, b in self.keep],
            "vector_bits": self.vector_bits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantPolicy:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        unknown = set(d) - {"bits", "group_size", "method", "keep", "vector_bits"}
        if unknown:
            raise ConfigError(
                f"unknown QuantPolicy keys {sorted(unknown)}; "
                "allowed: bits, group_size, method, keep, vector_bits"
            )
        return cls(**d)
