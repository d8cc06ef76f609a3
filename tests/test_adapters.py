"""LoRA adapters: merged == unmerged, storage round trip, the router's isolation between AR and diffusion
models (R17.3, R17.4), per-request switching in the engine, and a trained toy adapter that raises the
likelihood of its training phrase."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_ar_llama import tiny_model, tiny_tokenizer

from arrowdiff import ArrowEngine
from arrowdiff.adapters.lora import Adapter, LoRAConfig, LoRALinear, inject_lora, load_adapter, save_adapter
from arrowdiff.adapters.router import AdapterRouter
from arrowdiff.ar.load import save_llama
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.training.lora_ar import fit_lora, sequence_nll
from arrowdiff.weights import QuantPolicy

PHRASE = "the cat sat on the mat"


def random_adapter(model: torch.nn.Module, kind: str = "ar", base: str = "tiny", seed: int = 1) -> Adapter:
    torch.manual_seed(seed)
    cfg = LoRAConfig(r=4, alpha=8.0)
    for layer in inject_lora(model, cfg).values():
        torch.nn.init.normal_(layer.lora_B, std=0.1)
    return Adapter.from_model(model, f"rand{seed}", kind, base, cfg)


def test_merged_equals_unmerged() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    layer = LoRALinear(base, r=4, alpha=8.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 16)
    w0 = base.weight.detach().clone()
    with torch.no_grad():
        unmerged = layer(x)
        layer.merge()
        merged = layer(x)
        layer.unmerge()
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(base.weight, w0, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(unmerged, base(x))  # the adapter does change the output


def test_fresh_adapter_is_identity() -> None:
    model = tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6))
    with torch.no_grad():
        before = model(ids)
        inject_lora(model, LoRAConfig())
        torch.testing.assert_close(model(ids), before)


def test_adapter_save_load_round_trip(tmp_path: Path) -> None:
    adapter = random_adapter(tiny_model())
    back = load_adapter(save_adapter(adapter, tmp_path / "a"))
    assert (back.name, back.kind, back.base_model, back.config) == ("rand1", "ar", "tiny", adapter.config)
    assert back.tensors.keys() == adapter.tensors.keys()
    for k, v in adapter.tensors.items():
        torch.testing.assert_close(back.tensors[k], v)
    assert (tmp_path / "a" / "lora.parquet").is_file()


def test_router_isolation_and_switching() -> None:
    model = tiny_model()
    ar_adapter = random_adapter(tiny_model())
    diffusion_router = AdapterRouter(torch.nn.Sequential(torch.nn.Linear(4, 4)), "diffusion", "tiny")
    with pytest.raises(ModalityError, match="'ar' adapter .* 'diffusion' model"):
        diffusion_router.add(ar_adapter)
    ar_router = AdapterRouter(model, "ar", "tiny")
    diff_adapter = Adapter("d", "diffusion", "tiny", LoRAConfig(), {})
    with pytest.raises(ModalityError, match="'diffusion' adapter .* 'ar' model"):
        ar_router.add(diff_adapter)
    with pytest.raises(ConfigError, match="base model 'tiny', but this 'ar' model is 'other'"):
        AdapterRouter(model, "ar", "other").add(ar_adapter)
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6))
    with torch.no_grad():
        base = model(ids)
        ar_router.add(ar_adapter, "x")
        ar_router.add(random_adapter(tiny_model(), seed=2), "y")
        ar_router.activate("x")
        out_x = model(ids)
        ar_router.activate("y")
        out_y = model(ids)
        with ar_router.using("x"):
            torch.testing.assert_close(model(ids), out_x)
        torch.testing.assert_close(model(ids), out_y)  # restored after the request
        ar_router.remove("y")
        torch.testing.assert_close(model(ids), base)  # removing the active adapter restores the base
    assert not torch.allclose(out_x, base) and not torch.allclose(out_x, out_y)
    with pytest.raises(ConfigError, match="no adapter named 'y'"):
        ar_router.activate("y")


def test_trained_adapter_raises_phrase_likelihood() -> None:
    """A few dozen steps of LoRA on one phrase make that phrase much more likely; off, the base is back."""
    model, tok = tiny_model(), tiny_tokenizer()
    ids = tok.encode(PHRASE, add_special_tokens=False).ids
    before = sequence_nll(model, ids)
    adapter = fit_lora(model, [ids], LoRAConfig(r=4, alpha=8.0), "cat", "tiny", steps=40, lr=2e-2)
    after = sequence_nll(model, ids)
    assert after < 0.5 * before, (before, after)
    router = AdapterRouter(model, "ar", "tiny")
    router.add(adapter)
    router.activate(None)
    assert abs(sequence_nll(model, ids) - before) < 1e-4
    router.activate("cat")
    assert abs(sequence_nll(model, ids) - after) < 1e-3


def test_engine_routes_adapters_per_request(tmp_path: Path) -> None:
    """The engine holds a diffusion model and an AR model; the AR adapter applies per request and is
    refused by the diffusion model."""
    model, tok = tiny_model(), tiny_tokenizer()
    save_llama(model, tok, tmp_path / "ar", QuantPolicy(bits=32))
    engine = ArrowEngine.from_pretrained(ar_path=tmp_path / "ar", ar_compute="fp32")
    assert engine.diffusion is not None and engine.ar is not None  # both kinds loaded at once (R17.2)
    ids = tok.encode(PHRASE, add_special_tokens=False).ids
    adapter = fit_lora(model, [ids], LoRAConfig(r=4, alpha=8.0), "cat", engine.base_model_id("ar"), steps=40)
    name = engine.load_adapter(save_adapter(adapter, tmp_path / "cat"))
    with pytest.raises(ModalityError):
        engine.load_adapter(adapter, mode="diffusion")
    plain = engine.generate("the", 5, temperature=0)
    tuned = engine.generate("the", 5, temperature=0, adapter=name)
    assert tuned.startswith(" cat") and tuned != plain
    assert engine.generate("the", 5, temperature=0) == plain  # only that request used the adapter
    engine.apply_adapter(name)
    assert engine.generate("the", 5, temperature=0) == tuned
    engine.remove_adapter(name)
    assert engine.generate("the", 5, temperature=0) == plain
