"""Per-component quantisation rules and attaching a component from another model directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arrowdiff.errors import ConfigError
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir
from arrowdiff.weights.attach import attach_component


def test_component_rules_apply_only_inside_their_component() -> None:
    p = QuantPolicy(bits=4, keep=(("out.*", 8), ("voice/*", 16), ("heads/*/inp.*", 8)))
    assert p.for_component("voice").keep == (("out.*", 8), ("*", 16))
    assert p.for_component("heads/audio").keep == (("out.*", 8), ("inp.*", 8))
    assert p.for_component("backbone").keep == (("out.*", 8),)
    w = torch.zeros(8, 64)
    assert p.for_component("voice").bits_for("encoder.inp.weight", w) == 16
    assert p.for_component("backbone").bits_for("encoder.inp.weight", w) == 4


def _dir(path: Path, comps: dict[str, dict[str, torch.Tensor]], meta: dict, bits: int) -> Path:
    save_model_dir(path, comps, {"model_type": "test", **meta}, QuantPolicy(bits=bits, keep=()))
    (path / "tokenizer.json").write_text("{}")
    return path


def test_attach_copies_tensors_exactly_and_carries_metadata(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    model = _dir(tmp_path / "m", {"backbone": {"w": torch.randn(16, 64, generator=g)}}, {"a": 1}, 4)
    voc = {"vocoder": {"conv.weight": torch.randn(32, 64, generator=g), "norm.weight": torch.ones(32)}}
    source = _dir(tmp_path / "v", voc, {"vocoder_config": {"dim": 32}}, 8)
    meta = attach_component(model, source, "vocoder", tmp_path / "out", ("vocoder_config",))
    out = load_model_dir(tmp_path / "out", verify=True)
    src, base = load_model_dir(source), load_model_dir(model)
    for name, st in src.components["vocoder"].items():
        assert (
            out.components["vocoder"][name].sha256 == st.sha256
            and out.components["vocoder"][name].bits == st.bits
        )
    assert out.components["backbone"]["w"].sha256 == base.components["backbone"]["w"].sha256
    assert meta["vocoder_config"] == {"dim": 32} and meta["a"] == 1
    assert meta["attached"][0]["component"] == "vocoder"
    assert ["vocoder/*", 8] in json.loads((tmp_path / "out" / "metadata.json").read_text())["quantization"][
        "policy"
    ]["keep"]
    assert (tmp_path / "out" / "tokenizer.json").exists()
    for name in ("backbone.parquet", "vocoder.parquet"):  # untouched components are copied byte for byte
        assert (tmp_path / "out" / name).read_bytes() == (
            model if name == "backbone.parquet" else source
        ).joinpath(name).read_bytes()
    with pytest.raises(ConfigError, match="not empty"):
        attach_component(model, source, "vocoder", tmp_path / "out")
    with pytest.raises(ConfigError, match="no component 'vae'"):
        attach_component(model, source, "vae", tmp_path / "out2")
    with pytest.raises(ConfigError, match="lacks"):
        attach_component(model, source, "vocoder", tmp_path / "out3", ("missing_key",))


def test_init_provenance_counts_the_whole_chain(tmp_path: Path) -> None:
    from arrowdiff.training.export import init_provenance

    w = {"backbone": {"w": torch.zeros(4, 64)}}
    d = _dir(tmp_path / "a", w, {"training": {"command": "x", "tokens_seen": 100}}, 8)
    prov = init_provenance(d, 50)
    assert prov["tokens_seen_total"] == 150 and prov["init_from"]["training"]["command"] == "x"
    d = _dir(tmp_path / "b", w, {"training": {"tokens_seen": 100, "tokens_seen_total": 400}}, 8)
    assert init_provenance(d, 50)["tokens_seen_total"] == 450
