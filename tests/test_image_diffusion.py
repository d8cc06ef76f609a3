"""Latent Gaussian diffusion for images: head shapes, flow-matching loss, continuous samplers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.config import get_preset
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.network.heads.image import patchify, sincos_2d, unpatchify
from arrowdiff.network.model import UnifiedModel
from arrowdiff.samplers import initial_noise, sample_euler, sample_stochastic
from arrowdiff.schedules import timesteps
from arrowdiff.training.losses import flow_loss


def image_model(patch: int = 1) -> UnifiedModel:
    cfg = get_preset("tiny", 300)
    cfg = replace(
        cfg,
        modalities=("text", "code", "image"),
        conditioners=("caption",),
        image=replace(cfg.image, patch=patch),
    )
    torch.manual_seed(0)
    return UnifiedModel(cfg).eval()


@given(p=st.sampled_from([1, 2, 4]), h=st.integers(1, 4), w=st.integers(1, 4), c=st.integers(1, 5))
@settings(max_examples=25, deadline=None)
def test_patchify_round_trip(p: int, h: int, w: int, c: int) -> None:
    x = torch.randn(2, c, h * p, w * p)
    tokens = patchify(x, p)
    assert tokens.shape == (2, h * w, c * p * p)
    assert torch.equal(unpatchify(tokens, c, h * p, w * p, p), x)


def test_position_embedding_is_distinct_per_position() -> None:
    pos = sincos_2d(8, 8, 32)
    assert pos.shape == (64, 32)
    assert torch.cdist(pos, pos).add(torch.eye(64) * 9).min() > 1e-3


@pytest.mark.parametrize("patch", [1, 2])
def test_latent_forward_shapes_and_zero_init(patch: int) -> None:
    model = image_model(patch)
    x = torch.randn(3, 4, 8, 8)
    v = model(x, torch.rand(3), "image", caption=torch.randn(3, 1, 384))
    assert v.shape == x.shape
    assert v.abs().max() == 0  # the zero-initialised output layer: no velocity before training
    v16 = model(torch.randn(1, 4, 16, 8), torch.rand(1), "image")  # any latent size works
    assert v16.shape == (1, 4, 16, 8)
    assert model.parameter_split()["heads/image"] < 10_000_000


def test_bad_latents_are_rejected() -> None:
    model = image_model(2)
    with pytest.raises(ConfigError, match=r"expected \(B, 4, h, w\)"):
        model(torch.randn(1, 3, 8, 8), torch.rand(1), "image")
    with pytest.raises(ConfigError, match="multiples of the patch size 2"):
        model(torch.randn(1, 4, 7, 8), torch.rand(1), "image")
    with pytest.raises(ModalityError, match="no memory conditioner"):
        model(torch.randn(1, 4, 8, 8), torch.rand(1), "image", memory=torch.randn(1, 2, 384))


def test_flow_loss_trains_the_image_path() -> None:
    model = image_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 4, 4) * 0.5 + 1.0
    losses = []
    for _ in range(60):
        loss, stats = flow_loss(model, x0, "image", g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["flow_mse"])
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def gaussian_velocity(mu: float, sigma: float):
    """The exact flow-matching velocity E[eps - x0 | x_t] for x0 ~ N(mu, sigma^2), eps ~ N(0, 1)."""

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        var = (1 - t) ** 2 * sigma**2 + t**2
        cov = t - (1 - t) * sigma**2
        return -mu + cov / var * (x - (1 - t) * mu)

    return v


@pytest.mark.parametrize("sampler", ["euler", "stochastic"])
def test_samplers_recover_an_analytic_gaussian(sampler: str) -> None:
    mu, sigma = 1.5, 0.4
    g = torch.Generator().manual_seed(0)
    x1 = initial_noise((20000, 1), g).double()
    times = timesteps(100, "uniform")
    if sampler == "euler":
        x0 = sample_euler(gaussian_velocity(mu, sigma), x1, times)
    else:
        x0 = sample_stochastic(gaussian_velocity(mu, sigma), x1, times, eta=1.0, generator=g)
    assert abs(x0.mean().item() - mu) < 0.02
    assert abs(x0.std().item() - sigma) < 0.03


def test_initial_noise_is_standard_normal() -> None:
    x = initial_noise((4, 4, 64, 64), torch.Generator().manual_seed(1))
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


def test_stochastic_with_eta_zero_is_euler() -> None:
    v = gaussian_velocity(0.3, 0.7)
    x1 = initial_noise((64, 3), torch.Generator().manual_seed(2)).double()
    times = timesteps(7, "cosine")
    torch.testing.assert_close(sample_euler(v, x1, times), sample_stochastic(v, x1, times, eta=0.0))


def test_sampler_arguments_are_validated() -> None:
    v = gaussian_velocity(0.0, 1.0)
    with pytest.raises(ConfigError, match="decreasing"):
        sample_euler(v, torch.zeros(2, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(ConfigError, match="eta=2"):
        sample_stochastic(v, torch.zeros(2, 1), timesteps(4), eta=2)
