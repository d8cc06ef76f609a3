"""Format 1.1 groups a tensor over its flattened trailing dims (a conv kernel over in x k, not over its k
taps alone); format 1.0 files, which grouped along the last dim, still read, and copy, exactly."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from arrowdiff.weights import QuantPolicy, read_component, write_component
from arrowdiff.weights.component_writer import _table
from arrowdiff.weights.quantize import dequantize, layout, quantize, rows_cols
from arrowdiff.weights.schema import SCHEMA_1_0, WRITER_SETTINGS, checksum


def conv_kernel(seed: int = 0) -> torch.Tensor:
    return torch.randn(48, 20, 7, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_rows_cols_by_grouping() -> None:
    assert rows_cols((48, 20, 7)) == (48, 140) and rows_cols((48, 20, 7), "last") == (960, 7)
    for shape in [(5, 9), (9,), ()]:  # vectors and matrices: the two groupings agree
        assert rows_cols(shape) == rows_cols(shape, "last")


def test_a_conv_kernel_is_stored_without_padding_each_tap_row(tmp_path: Path) -> None:
    w = conv_kernel()
    path = tmp_path / "conv.parquet"
    write_component(path, {"conv.weight": w}, QuantPolicy(bits=8, group_size=64))
    st = read_component(path)["conv.weight"]
    assert st.grouping == "rows" and st.pad == 192 - 140
    assert st.nbytes == 48 * 192 + 48 * 3 * 3  # 140 -> 192 per out channel, 3 groups of fp16 s + u8 z
    payload, groups, _ = layout((48, 20, 7), 8, 64, "last")  # 1.0: 960 rows of 7 taps padded to 64
    assert st.nbytes * 6 < payload + 3 * groups
    err = (st.to_tensor() - w).abs().max()
    assert err <= st.quantized().scales.float().max() / 2 + 1e-6  # RTN: |w - w_hat| <= s / 2


def write_format_1_0(path: Path, tensors: dict[str, torch.Tensor], bits: int, group_size: int) -> None:
    """A component file as format 1.0 wrote it: no grouping column, groups along the last dim."""
    tables = []
    for name, w in tensors.items():
        q = quantize(w, bits, group_size, grouping="last")
        digest = checksum(
            q.packed.numpy(), q.scales.view(torch.uint8).numpy(), q.zeros.view(torch.uint8).numpy()
        )
        t = _table(name, q, "float32", digest)
        tables.append(pa.Table.from_arrays([t.column(n) for n in SCHEMA_1_0.names], schema=SCHEMA_1_0))
    with pq.ParquetWriter(path, SCHEMA_1_0, **WRITER_SETTINGS) as writer:
        for t in tables:
            writer.write_table(t)


def test_format_1_0_files_read_and_copy_exactly(tmp_path: Path) -> None:
    w = {"conv.weight": conv_kernel(1), "lin.weight": conv_kernel(2)[:, :, 0].contiguous()}
    old = tmp_path / "old.parquet"
    write_format_1_0(old, w, 8, 64)
    assert pq.ParquetFile(old).metadata.metadata[b"arrowdiff.format_version"] == b"1.0"
    stored = read_component(old, verify=True)
    want = {k: dequantize(quantize(v, 8, 64, grouping="last")) for k, v in w.items()}
    for k in w:
        assert stored[k].grouping == "last" and torch.equal(stored[k].to_tensor(), want[k])
    new = tmp_path / "new.parquet"  # carried into a 1.1 file: the bytes, checksum and layout are kept
    write_component(new, dict(stored), QuantPolicy(bits=4))
    copied = read_component(new, verify=True)
    assert pq.ParquetFile(new).metadata.metadata[b"arrowdiff.format_version"] == b"1.1"
    for k in w:
        assert copied[k].grouping == "last" and copied[k].sha256 == stored[k].sha256
        assert torch.equal(copied[k].to_tensor(), want[k])
    assert np.array_equal(copied["conv.weight"].payload, stored["conv.weight"].payload)
