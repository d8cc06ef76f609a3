"""ArrowQuant: the weight format (spec in FORMAT.md). Math in ``quantize``, file I/O in ``parquet`` and
``model_dir``; importing this package has no side effects."""

from arrowdiff.weights.lazy_linear import QuantLinear
from arrowdiff.weights.model_dir import LoadedModel, load_into, load_model_dir, read_metadata, save_model_dir
from arrowdiff.weights.parquet import FORMAT_VERSION, StoredTensor, read_component, write_component
from arrowdiff.weights.policy import QuantPolicy
from arrowdiff.weights.quantize import QuantizedTensor, dequantize, pack, quantize, unpack

__all__ = [
    "FORMAT_VERSION",
    "LoadedModel",
    "QuantLinear",
    "QuantPolicy",
    "QuantizedTensor",
    "StoredTensor",
    "dequantize",
    "load_into",
    "load_model_dir",
    "pack",
    "quantize",
    "read_component",
    "read_metadata",
    "save_model_dir",
    "unpack",
    "write_component",
]
