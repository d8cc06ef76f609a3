"""network/: the shared transformer (adaLN-Zero, cross-attention, causal mask, ControlNet residuals), the
heads and parameter split, and the SUBS parameterisation of the denoiser."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from arrowdiff.config import get_preset, preset_tiny
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.network.denoiser import Cond, MaskedDenoiser, subs_log_probs
from arrowdiff.network.heads import HEAD_PARAM_LIMIT
from arrowdiff.network.model import UnifiedModel, backbone_share

V = 64  # tiny vocabulary
B, T = 3, 12


def tiny_model(objective: str = "mdlm", seed: int = 0) -> UnifiedModel:
    torch.manual_seed(seed)
    return UnifiedModel(replace(preset_tiny(V), objective=objective)).eval()


def wake_(model: UnifiedModel, seed: int = 1, cross: bool = False) -> UnifiedModel:
    """Give the zero-initialised layers (adaLN, and cross-attention outputs if ``cross``) random weights,
    as training would, so that blocks stop being the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and getattr(m, "zero_init", False):
                if name.endswith("cross.out") and not cross:
                    continue
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
        for head in model.heads.values():
            head.bias.copy_(torch.randn(head.bias.shape, generator=g) * 0.1)
    return model


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(seed))


T_MID = torch.full((B,), 0.5)


# ---- shapes and modalities -----------------------------------------------------------------------------


@pytest.mark.parametrize("modalities", ["text", "code", ["text", "code", "text"]])
def test_output_shape(modalities) -> None:
    model = wake_(tiny_model())
    logits = model(tokens(), T_MID, modalities)
    assert logits.shape == (B, T, V)
    assert torch.isfinite(logits).all()


def test_mixed_batch_rows_equal_single_modality_runs() -> None:
    model = wake_(tiny_model())
    x = tokens()
    mixed = model(x, T_MID, ["text", "code", "text"])
    for i, m in enumerate(["text", "code", "text"]):
        alone = model(x[i : i + 1], T_MID[i : i + 1], m)
        torch.testing.assert_close(mixed[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    # and the modality matters: text and code heads disagree on the same tokens
    assert not torch.allclose(model(x, T_MID, "text"), model(x, T_MID, "code"), atol=1e-4)


@pytest.mark.parametrize("bad", ["image", "klingon", ["text", "audio", "text"]])
def test_unknown_modality_raises(bad) -> None:
    with pytest.raises(ModalityError):
        tiny_model()(tokens(), T_MID, bad)


def test_masked_denoiser_rejects_unsupported_modality_early() -> None:
    with pytest.raises(ModalityError, match="image"):
        MaskedDenoiser(tiny_model(), "image")


# ---- adaLN-Zero and cross-attention at init ------------------------------------------------------------


def _block_inputs(model: UnifiedModel, per_token_time: bool) -> tuple:
    g = torch.Generator().manual_seed(3)
    cfg = model.cfg.backbone
    h = torch.randn(B, T, cfg.dim, generator=g)
    c = torch.randn(B, T if per_token_time else 1, cfg.time_dim, generator=g)
    return h, c, model.backbone.rope_cos[:T], model.backbone.rope_sin[:T]


@pytest.mark.parametrize("per_token_time", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_every_block_is_identity_at_init(per_token_time: bool, causal: bool) -> None:
    model = tiny_model()
    h, c, cos, sin = _block_inputs(model, per_token_time)
    for block in model.backbone.blocks:
        assert torch.equal(block(h, c, cos, sin, causal, None, None), h)
    wake_(model)
    assert not torch.allclose(model.backbone.blocks[0](h, c, cos, sin, causal, None, None), h)


def test_cross_attention_starts_at_zero() -> None:
    model = wake_(tiny_model())  # blocks active, cross-attention outputs still zero
    x = tokens()
    context = torch.randn(B, 5, model.cfg.backbone.cond_dim)
    plain = model(x, T_MID, "text")
    assert torch.equal(model(x, T_MID, "text", context=context), plain)
    with torch.no_grad():
        nn.init.normal_(model.backbone.blocks[0].cross.out.weight, std=0.1)
    with_ctx = model(x, T_MID, "text", context=context)
    assert not torch.allclose(with_ctx, plain, atol=1e-4)
    # the context mask is honoured: masking out different context tokens changes the result
    keep = torch.ones(B, 5, dtype=torch.bool)
    keep[:, 3:] = False
    assert not torch.allclose(
        model(x, T_MID, "text", context=context, context_mask=keep), with_ctx, atol=1e-5
    )


# ---- attention direction -------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["ar", "mdlm"])
def test_causal_only_for_ar(objective: str) -> None:
    model = wake_(tiny_model(objective))
    x = tokens()
    j = 7
    y = x.clone()
    y[:, j] = (x[:, j] - 3 + 1) % (V - 3) + 3  # a different ordinary token at position j
    before, after = model(x, T_MID, "text"), model(y, T_MID, "text")
    later_changed = not torch.allclose(before[:, j:], after[:, j:], atol=1e-5)
    earlier_same = torch.allclose(before[:, :j], after[:, :j], rtol=0, atol=1e-6)
    assert later_changed
    assert earlier_same == (objective == "ar")


# ---- time conditioning ---------------------------------------------------------------------------------


def test_per_token_time() -> None:
    model = wake_(tiny_model())
    x = tokens()
    per_sample = model(x, T_MID, "text")
    per_token = model(x, T_MID[:, None].expand(B, T).contiguous(), "text")
    assert per_token.shape == (B, T, V)
    torch.testing.assert_close(per_token, per_sample, rtol=1e-5, atol=1e-5)
    varied = T_MID[:, None].expand(B, T).clone()
    varied[:, :4] = 0.05
    assert not torch.allclose(model(x, varied, "text"), per_sample, atol=1e-5)


# ---- ControlNet residuals ------------------------------------------------------------------------------


def test_controlnet_residuals() -> None:
    model = wake_(tiny_model())
    x = tokens()
    n, D = len(model.backbone.blocks), model.cfg.backbone.dim
    plain = model(x, T_MID, "text")
    for wrong in (n - 1, n + 1):
        with pytest.raises(ConfigError, match="residuals"):
            model(x, T_MID, "text", residuals=[torch.zeros(B, T, D)] * wrong)
    zeros = [torch.zeros(B, T, D) for _ in range(n)]
    torch.testing.assert_close(model(x, T_MID, "text", residuals=zeros), plain, rtol=0, atol=0)
    bumps = [torch.zeros(B, T, D) for _ in range(n)]
    bumps[-1][:, 2] = torch.randn(B, D)  # not constant over D: the output LayerNorm would remove that
    changed = model(x, T_MID, "text", residuals=bumps)
    assert not torch.allclose(changed[:, 2], plain[:, 2], atol=1e-4)
    # through the denoiser interface too (position 2 masked, so it is predicted rather than copied)
    den = MaskedDenoiser(model, "text")
    x_t = x.clone()
    x_t[:, 2] = model.cfg.text.mask_id
    assert not torch.allclose(den(x_t, T_MID, Cond(residuals=bumps))[:, 2], den(x_t, T_MID)[:, 2])


def test_sequence_longer_than_rope_tables_rejected() -> None:
    cfg = preset_tiny(V)
    model = UnifiedModel(replace(cfg, backbone=replace(cfg.backbone, max_seq_len=8)))
    with pytest.raises(ConfigError, match="max_seq_len"):
        model(torch.randint(3, V, (1, 9)), torch.zeros(1), "text")


# ---- parameter split -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["small", "base", "workstation"])
def test_parameter_split(preset: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = UnifiedModel(get_preset(preset))
    split = model.parameter_split()
    assert set(split) == {"backbone", "heads/text", "heads/code"}
    assert sum(split.values()) == sum(p.numel() for p in model.parameters())  # shared table counted once
    assert backbone_share(split) >= 0.90
    for name, n in split.items():
        if name.startswith("heads/"):
            assert n < HEAD_PARAM_LIMIT


def test_code_head_shares_the_text_embedding() -> None:
    model = tiny_model()
    assert model.heads["code"].table is model.heads["text"].table
    names = {k for k, _ in model.component_state_dicts()["heads/code"].items()}
    assert not any("embedding" in k for k in names)


# ---- SUBS ----------------------------------------------------------------------------------------------


def test_subs_log_probs() -> None:
    mask_id = 1
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, V, generator=g) * 3
    original = logits.clone()
    x_t = torch.randint(3, V, (B, T), generator=g)
    x_t[:, ::3] = mask_id
    logp = subs_log_probs(logits, x_t, mask_id)
    assert torch.equal(logits, original), "subs_log_probs must not modify its input"
    assert (logp[..., mask_id] == float("-inf")).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(B, T))
    unmasked = x_t != mask_id
    onehot = torch.nn.functional.one_hot(x_t, V).bool()
    # carried-over rows: all mass on the input token
    assert (logp[unmasked][onehot[unmasked]] == 0).all()
    assert (logp[unmasked][~onehot[unmasked]] == float("-inf")).all()
    # masked rows: the softmax of the logits with the mask token removed
    expected = original.clone()
    expected[..., mask_id] = float("-inf")
    torch.testing.assert_close(logp[~unmasked], torch.log_softmax(expected, -1)[~unmasked])
