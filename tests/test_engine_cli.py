"""ArrowEngine and the ``arrowdiff`` CLI on the tiny trained model (``tiny_model_dir`` in conftest.py):
outputs, reproducibility, infilling, and one-line errors for every bad argument."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from arrowdiff.cli import main as cli_main
from arrowdiff.diffusion_core import DiffusionCore, SamplingOptions
from arrowdiff.engine import ArrowEngine
from arrowdiff.errors import ConfigError, ModalityError, WeightFormatError
from arrowdiff.loading import load_model
from arrowdiff.weights.tensor_index import read_index

FAST = {"num_steps": 4, "length": 8}


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> ArrowEngine:
    return ArrowEngine.from_pretrained(tiny_model_dir)


# ---- diffuse -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["text", "code"])
def test_diffuse_returns_text(engine: ArrowEngine, modality: str) -> None:
    out = engine.diffuse("the cat" if modality == "text" else "def add(", modality=modality, seed=0, **FAST)
    assert isinstance(out, str)
    assert "<mask>" not in out and "<pad>" not in out


def test_same_seed_same_output(engine: ArrowEngine) -> None:
    runs = [engine.diffuse("the", seed=s, temperature=1.0, num_steps=4, length=16) for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len(set(runs[1:])) > 1  # other seeds give other samples


@pytest.mark.parametrize("sampler", ["confidence", "ancestral"])
@pytest.mark.parametrize("block_size", [0, 3])
def test_infill_keeps_prompt_and_suffix(engine: ArrowEngine, sampler: str, block_size: int) -> None:
    prompt, suffix = "the cat sat on", " and the log.\n"
    middle = engine.diffuse(prompt, suffix=suffix, seed=1, sampler=sampler, block_size=block_size, **FAST)
    assert isinstance(middle, str)
    tok = engine.diffusion.tokenizer
    # the same call at token level: prompt and suffix ids are kept exactly, and the decoded whole is the
    # prompt + returned middle + suffix
    core = DiffusionCore(engine.diffusion.model, tok, engine.diffusion.context_length)
    pre, suf = tok.encode(prompt), tok.encode(suffix)
    ids = core.sample_ids(pre, 8, suf, "text", SamplingOptions(num_steps=4, sampler=sampler,
                                                               block_size=block_size, temperature=1.0),
                          seed=1)[0].tolist()  # fmt: skip
    assert ids[: len(pre)] == pre and ids[len(pre) + 8 :] == suf
    assert tok.decode(ids) == prompt + middle + suffix
    assert tok.eot_id not in ids and tok.pad_id not in ids  # banned while infilling


def test_guidance_scale_with_a_prompt_runs(engine: ArrowEngine) -> None:
    a = engine.diffuse("the cat", guidance_scale=2.0, seed=0, **FAST)
    assert a == engine.diffuse("the cat", guidance_scale=2.0, seed=0, **FAST)


# ---- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["image", "klingon"])
def test_unknown_or_unsupported_modality(engine: ArrowEngine, modality: str) -> None:
    with pytest.raises(ModalityError, match=modality):
        engine.diffuse("x", modality=modality, **FAST)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 0},
        {"num_steps": -3},
        {"num_steps": 2.5},
        {"length": 0},
        {"length": 10**6},
        {"length": 60},  # valid length, but prompt + length exceeds the 64-token context
        {"guidance_scale": -1.0},
        {"guidance_scale": -1.0, "prompt": ""},  # no prompt: guidance is never applied, still invalid
        {"prompt": "", "suffix": ""},
        {"temperature": -0.1},
        {"sampler": "euler"},
    ],
    ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_bad_arguments_raise_config_error(engine: ArrowEngine, kwargs: dict) -> None:
    prompt = "the cat sat on the mat and the dog sat on the log"
    args = {"prompt": prompt, "num_steps": 2, "length": 8, **kwargs}
    with pytest.raises(ConfigError):
        engine.diffuse(**args)


def test_missing_model_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="not found"):
        ArrowEngine.from_pretrained(tmp_path / "nope")


# ---- CLI -----------------------------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("arrowdiff: error:")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_diffuse(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["diffuse", "--model", str(tiny_model_dir), *"--prompt x --steps 2 --length 8 --seed 3".split()]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("x") and out.endswith("\n")
    assert cli_main(argv) == 0
    assert capsys.readouterr().out == out  # seeded: reproducible


def test_cli_diffuse_infill_writes_out_file(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "sub" / "out.txt"
    argv = ["diffuse", "--model", str(tiny_model_dir), "--prompt", "the cat", "--suffix", " the end",
            *"--steps 2 --length 6 --seed 0 --out".split(), str(target)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed == target.read_text() + "\n"
    assert printed.startswith("the cat") and printed.endswith(" the end\n")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--steps", "0"], "num_steps"),
        (["--modality", "image"], "image"),
        (["--length", "0"], "length"),
        (["--guidance-scale", "-1"], "guidance_scale"),
        (["--voice-match", "0.5"], "--voice-match are for --modality audio"),
        (["--modality", "audio", "--out", "x.wav", "--voice-match", "1"], "also give --reference"),
    ],
)
def test_cli_errors_are_one_line(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    argv = ["diffuse", "--model", str(tiny_model_dir), "--prompt", "x", "--length", "8", *extra]
    assert cli_main(argv) == 2
    assert needle in _one_line_error(capsys)


def test_cli_missing_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["diffuse", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "missing" in _one_line_error(capsys)


def test_cli_info(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    for component in ("backbone", "heads/text", "heads/code"):
        assert component in out
    share = load_model(tiny_model_dir).metadata["parameters"]["backbone_share"]
    assert f"backbone share {share:.1%}" in out
    assert "trained by   arrowdiff train" in out


def test_cli_corrupt_component(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    f = bad / "backbone.parquet"
    data = bytearray(f.read_bytes())
    offset, length = max((e["payload"] for e in read_index(f)), key=lambda span: span[1])
    mid = offset + length // 2  # inside the largest tensor's codes (bytes between tensors are never read)
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    f.write_bytes(bytes(data))
    assert cli_main(["diffuse", "--model", str(bad), "--prompt", "x", "--steps", "2", "--length", "4"]) == 2
    line = _one_line_error(capsys)
    assert "backbone.parquet" in line  # every corruption error names the file (here also the tensor)
    # the original is untouched and still loads
    assert cli_main(["diffuse", "--model", str(tiny_model_dir), "--steps", "2", "--length", "4"]) == 0
