"""``arrowdiff quantize`` / requantize_model_dir and load_model(compute=...) on the tiny trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arrowdiff.cli import main as cli_main
from arrowdiff.engine import ArrowEngine
from arrowdiff.errors import ConfigError
from arrowdiff.loading import load_model
from arrowdiff.weights import QuantLinear, QuantPolicy, load_model_dir
from arrowdiff.weights.requantize import requantize_model_dir


def _bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*.parquet"))


@pytest.fixture(scope="module")
def quantized(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The tiny model re-quantized through the CLI at 8, 4 (hqq) and 2 bits, group size 32."""
    root = tmp_path_factory.mktemp("quantized")
    out = {}
    for bits, method in ((8, "rtn"), (4, "hqq"), (2, "rtn")):
        out[bits] = root / f"int{bits}"
        argv = ["quantize", str(tiny_model_dir), "--bits", str(bits), "--group-size", "32"]
        assert cli_main([*argv, "--method", method, "--out", str(out[bits])]) == 0
    return out


def test_quantized_dirs_load_and_record_bits(tiny_model_dir: Path, quantized: dict[int, Path]) -> None:
    src_meta = json.loads((tiny_model_dir / "metadata.json").read_text())
    for bits, d in quantized.items():
        policy = QuantPolicy(bits=bits, group_size=32)
        lm = load_model(d)  # the complete directory loads through the normal path
        assert lm.tokenizer.vocab_size == lm.model.cfg.text.vocab_size
        meta = lm.metadata
        assert meta["quantization"]["bit_width"] == bits and meta["quantization"]["group_size"] == 32
        assert meta["quantized_from"]["path"] == str(tiny_model_dir.resolve())
        assert meta["quantized_from"]["bit_width"] == src_meta["quantization"]["bit_width"]
        assert meta["model_config"] == src_meta["model_config"]
        for f in ("tokenizer.json", "training_log.jsonl"):
            assert (d / f).is_file() == (tiny_model_dir / f).is_file()
        stored = load_model_dir(d, verify=True)
        for tensors in stored.components.values():
            for name, st in tensors.items():
                if "norm" in name or name.endswith("bias") or len(st.shape) < 2:
                    assert st.bits == 32, name
                elif "embed" in name:
                    assert st.bits == max(8, bits), name
                else:
                    assert (st.bits, st.group_size) == (bits, 32), name
                assert st.bits == policy.bits_for(name, torch.empty(st.shape))
    sizes = [_bytes(quantized[b]) for b in (8, 4, 2)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_same_settings_copy_tensors_verbatim(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = load_model_dir(tiny_model_dir)
    q = src.metadata["quantization"]
    policy = QuantPolicy(bits=q["bit_width"], group_size=q["group_size"], method=q["method"])
    requantize_model_dir(tiny_model_dir, tmp_path / "copy", policy)
    copy = load_model_dir(tmp_path / "copy", verify=True)
    for comp, tensors in src.components.items():
        assert {n: st.sha256 for n, st in tensors.items()} == {
            n: st.sha256 for n, st in copy.components[comp].items()
        }


def test_error_grows_as_bits_shrink(tiny_model_dir: Path, quantized: dict[int, Path]) -> None:
    src = load_model_dir(tiny_model_dir).components["backbone"]
    names = [n for n, st in src.items() if len(st.shape) == 2 and "embed" not in n]
    ref = torch.cat([src[n].to_tensor().flatten() for n in names])
    werr = {}
    for bits, d in quantized.items():
        q = load_model_dir(d).components["backbone"]
        werr[bits] = (
            (torch.cat([q[n].to_tensor().flatten() for n in names]) - ref).norm() / ref.norm()
        ).item()
    assert werr[8] < 0.01 < werr[4] < werr[2] < 0.6, werr
    x = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        y = load_model(tiny_model_dir).model(x, t, "text")
        err = {
            b: ((load_model(d).model(x, t, "text") - y).abs().max() / y.abs().max()).item()
            for b, d in quantized.items()
        }
    assert err[8] < 0.02 and err[2] > err[8], err


@pytest.mark.parametrize("argv,message", [
    (["--bits", "3"], "--bits 3"),
    (["--bits", "4", "--group-size", "0"], "--group-size 0"),
    (["--bits", "4", "--method", "gptq"], "method='gptq'"),
])  # fmt: skip
def test_bad_arguments_exit_2_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert cli_main(["quantize", str(tiny_model_dir), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arrowdiff: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_missing_model_and_existing_output_exit_2(
    tiny_model_dir: Path, quantized: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["quantize", str(tmp_path / "nope"), "--bits", "4", "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["quantize", str(tiny_model_dir), "--bits", "4", "--out", str(quantized[8])]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_model_dir(quantized[8]).metadata["quantization"]["bit_width"] == 8  # untouched


@pytest.mark.parametrize("compute,tol", [("bf16", 2e-2), ("int8", 5e-2)])
def test_compute_forms_match_fp32(quantized: dict[int, Path], compute: str, tol: float) -> None:
    x = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        ref = load_model(quantized[4]).model(x, t, "code")
        lm = load_model(quantized[4], compute=compute)
        linears = [m for m in lm.model.backbone.modules() if isinstance(m, QuantLinear)]
        assert linears and not any(isinstance(m, torch.nn.Linear) for m in lm.model.backbone.modules())
        assert not any(m.materialized for m in linears)  # lazy until first use
        y = lm.model(x, t, "code")
    assert lm.model.backbone.blocks[0].attn.qkv.materialized  # (cross-attention stays lazy: unused here)
    assert (y - ref).abs().max() <= tol * ref.abs().max()


def test_engine_compute_option(quantized: dict[int, Path]) -> None:
    engine = ArrowEngine.from_pretrained(quantized[8], compute="int8")
    assert isinstance(engine.diffuse("the", seed=0, num_steps=2, length=4), str)
    with pytest.raises(ConfigError, match="compute"):
        load_model(quantized[8], compute="int4")
