"""QuantLinear: every compute form matches fp32 F.linear on the dequantized weight."""

import pytest
import torch
import torch.nn.functional as F
from conftest import require_q4avx2

from arrowdiff.errors import ConfigError
from arrowdiff.weights import QuantPolicy, read_component, write_component
from arrowdiff.weights.lazy_linear import QuantLinear

N, K = 48, 128  # (out_features, in_features)


def _stored(tmp_path, bits, method="rtn", group_size=32):
    g = torch.Generator().manual_seed(bits)
    path = tmp_path / "layer.parquet"
    tensors = {"weight": torch.randn(N, K, generator=g) / K**0.5, "bias": torch.randn(N, generator=g)}
    write_component(path, tensors, QuantPolicy(bits=bits, group_size=group_size, method=method, keep=()))
    return read_component(path)


@pytest.mark.parametrize("compute", ["fp32", "bf16", "int8", "int4pack", "int8dyn", "q4avx2"])
@pytest.mark.parametrize("bits,method", [(4, "rtn"), (4, "hqq"), (2, "rtn"), (2, "hqq"), (8, "rtn")])
@pytest.mark.parametrize("rows", [1, 20])
def test_compute_forms_match_fp32(tmp_path, compute, bits, method, rows):
    if compute == "q4avx2":
        require_q4avx2()
    st = _stored(tmp_path, bits, method)
    if compute == "int4pack" and bits == 8:
        with pytest.raises(ConfigError, match="int4pack"):
            QuantLinear(st["weight"], st["bias"], compute)(torch.randn(2, K))
        return
    layer = QuantLinear(st["weight"], st["bias"], compute)
    assert not layer.materialized  # lazy until the first forward
    x = torch.randn(3, rows, K, generator=torch.Generator().manual_seed(7))
    ref = F.linear(x, st["weight"].to_tensor(), st["bias"].to_tensor())  # (3, rows, N)
    y = layer(x)
    assert layer.materialized and y.shape == ref.shape and y.dtype == x.dtype
    tol = {"fp32": 1e-5, "bf16": 2e-2, "int8": 3e-2, "int4pack": 2e-2, "int8dyn": 3e-2, "q4avx2": 3e-2}
    tol = tol[compute]
    assert (y - ref).abs().max() <= tol * ref.abs().max()
    assert not layer.state_dict()  # the materialized forms are not persistent state


def test_rejects_bad_arguments(tmp_path):
    st = _stored(tmp_path, 4)
    with pytest.raises(ConfigError, match="compute"):
        QuantLinear(st["weight"], compute="fp8")
    with pytest.raises(ConfigError, match="2-D"):
        QuantLinear(st["bias"])
