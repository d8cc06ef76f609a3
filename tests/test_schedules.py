"""schedules/: masking schedules m(t), the NELBO weight, the forward masking process, Gaussian schedules
(a(t), s(t)), add_noise and inference timestep spacing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError
from arrowdiff.schedules import (
    DISCRETE_SCHEDULES,
    GAUSSIAN_SCHEDULES,
    SPACINGS,
    add_noise,
    get_gaussian_schedule,
    get_mask_schedule,
    mask_tokens,
    nelbo_weight,
    timesteps,
)

DISCRETE = sorted(DISCRETE_SCHEDULES)  # cosine, linear, loglinear
GAUSSIAN = sorted(GAUSSIAN_SCHEDULES)  # cosine, flow, linear
unit = st.floats(0.0, 1.0, allow_nan=False)

# ---- discrete (masking) schedules ----------------------------------------------------------------------


@pytest.mark.parametrize("name", DISCRETE)
def test_mask_schedule_endpoints(name: str) -> None:
    m = get_mask_schedule(name)
    ends = m(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends[0].item() == pytest.approx(0.0, abs=1e-12)
    assert ends[1].item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", DISCRETE)
@settings(max_examples=60, deadline=None)
@given(a=unit, b=unit)
def test_mask_schedule_monotone_and_in_unit_interval(name: str, a: float, b: float) -> None:
    m = get_mask_schedule(name)
    lo, hi = sorted((a, b))
    m_lo, m_hi = m(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
    assert m_lo <= m_hi + 1e-12
    assert -1e-12 <= m_lo <= 1 + 1e-12 and -1e-12 <= m_hi <= 1 + 1e-12


@settings(max_examples=50, deadline=None)
@given(t=st.floats(1e-3, 1.0))
def test_nelbo_weight_loglinear_is_one_over_t(t: float) -> None:
    w = nelbo_weight(get_mask_schedule("loglinear"), torch.tensor([t], dtype=torch.float64))
    assert w.item() == pytest.approx(1.0 / t, rel=1e-9)


def test_nelbo_weight_cosine_matches_closed_form() -> None:
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    w = nelbo_weight(get_mask_schedule("cosine"), t)
    expected = (0.5 * math.pi * torch.sin(0.5 * math.pi * t)) / (1 - torch.cos(0.5 * math.pi * t))
    torch.testing.assert_close(w, expected, rtol=1e-9, atol=0)
    assert w.dtype == t.dtype


@pytest.mark.parametrize("name", DISCRETE)
@settings(max_examples=15, deadline=None)
@given(t=unit, seed=st.integers(0, 2**31 - 1))
def test_mask_tokens_masks_at_the_scheduled_rate(name: str, t: float, seed: int) -> None:
    m = get_mask_schedule(name)
    n, mask_id = 20_000, 1
    x0 = torch.randint(3, 100, (1, n), generator=torch.Generator().manual_seed(seed + 1))
    gen = torch.Generator().manual_seed(seed)
    x_t, is_masked = mask_tokens(x0, torch.tensor([t]), m, mask_id, generator=gen)
    p = float(m(torch.tensor(t, dtype=torch.float64)))
    sigma = math.sqrt(p * (1 - p) / n)
    # 5 sigma, plus a few counts of slack where p is so small that the normal approximation fails
    assert abs(is_masked.float().mean().item() - p) <= 5 * sigma + 5 / is_masked.numel()
    # masked positions hold the mask id, the others keep x0
    assert (x_t[is_masked] == mask_id).all()
    assert torch.equal(x_t[~is_masked], x0[~is_masked])


def test_mask_tokens_uses_each_rows_own_time_and_generator() -> None:
    m = get_mask_schedule("loglinear")
    x0 = torch.randint(3, 100, (3, 4000))
    t = torch.tensor([0.0, 0.5, 1.0])
    _, is_masked = mask_tokens(x0, t, m, 1, generator=torch.Generator().manual_seed(0))
    rates = is_masked.float().mean(-1)
    assert rates[0] == 0.0 and rates[2] == 1.0 and abs(rates[1] - 0.5) < 0.05
    again = mask_tokens(x0, t, m, 1, generator=torch.Generator().manual_seed(0))[1]
    assert torch.equal(is_masked, again)


def test_custom_mask_schedule_accepted() -> None:
    def square(t: torch.Tensor) -> torch.Tensor:
        return t**2

    assert get_mask_schedule(square) is square


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda t: t + 0.3 * torch.sin(2 * math.pi * t), id="not-monotone"),
        pytest.param(lambda t: 0.5 * t, id="m(1)!=1"),
        pytest.param(lambda t: 0.1 + 0.9 * t, id="m(0)!=0"),
        pytest.param(lambda t: 3 * t - 2 * t**2, id="above-one"),
        pytest.param(lambda t: t[:-1], id="wrong-shape"),
        pytest.param(lambda t: 1 / 0, id="raises"),
    ],
)
def test_custom_mask_schedule_rejected(fn) -> None:
    with pytest.raises(ConfigError):
        get_mask_schedule(fn)


def test_unknown_mask_schedule_name() -> None:
    with pytest.raises(ConfigError, match="loglinear"):
        get_mask_schedule("exponential")


# ---- Gaussian schedules --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_schedule_shape(name: str) -> None:
    t = torch.linspace(0, 1, 513, dtype=torch.float64)
    a, s = get_gaussian_schedule(name)(t)
    assert (s[1:] - s[:-1] >= -1e-12).all(), "noise std must increase with t"
    assert (a[1:] - a[:-1] <= 1e-12).all(), "signal must decrease with t"
    assert s[-1] > s[0] and a[-1] < a[0]
    assert a[0].item() == pytest.approx(1.0, abs=1e-6)
    assert s[0].item() == pytest.approx(0.0, abs=1e-6)
    assert a[-1].item() < 0.05 and s[-1].item() > 0.95  # t=1 is (almost) pure noise


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_gaussian_vp_schedules_preserve_variance(name: str) -> None:
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a, s = get_gaussian_schedule(name)(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(t), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", GAUSSIAN)
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_add_noise_statistics(name: str, t: float) -> None:
    schedule = get_gaussian_schedule(name)
    torch.manual_seed(0)
    n, c = 50_000, 2.0
    x0 = torch.full((2, n), c, dtype=torch.float64)
    tt = torch.tensor([t, 0.0], dtype=torch.float64)
    x_t = add_noise(x0, tt, schedule)
    a, s = (v.item() for v in schedule(torch.tensor(t, dtype=torch.float64)))
    assert x_t[0].mean().item() == pytest.approx(a * c, abs=5 * s / math.sqrt(n) + 1e-9)
    assert x_t[0].std().item() == pytest.approx(s, rel=0.03)
    torch.testing.assert_close(x_t[1], x0[1])  # row 1 is at t=0: clean


def test_add_noise_with_given_eps_is_exact_and_broadcasts_t() -> None:
    schedule = get_gaussian_schedule("cosine")
    x0 = torch.randn(3, 4, 5)
    eps = torch.randn(3, 4, 5)
    t = torch.tensor([0.2, 0.5, 0.8])
    x_t = add_noise(x0, t, schedule, eps=eps)
    a, s = schedule(t)
    torch.testing.assert_close(x_t, a[:, None, None] * x0 + s[:, None, None] * eps)


def test_custom_gaussian_schedule_accepted_and_rejected() -> None:
    def sqrt_path(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - t).sqrt(), t.sqrt()

    assert get_gaussian_schedule(sqrt_path) is sqrt_path
    with pytest.raises(ConfigError, match="increasing"):
        get_gaussian_schedule(lambda t: (t, 1 - t))  # noise decreasing: backwards in time
    with pytest.raises(ConfigError, match="start clean"):
        get_gaussian_schedule(lambda t: (0.9 * (1 - t), 0.1 + 0.9 * t))
    with pytest.raises(ConfigError):
        get_gaussian_schedule("karras")


# ---- timestep spacing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", SPACINGS)
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300))
def test_timesteps_decrease_from_one_to_zero(spacing: str, n: int) -> None:
    ts = timesteps(n, spacing)
    assert ts.shape == (n + 1,) and ts.dtype == torch.float64
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0
    assert (ts[1:] < ts[:-1]).all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 300))
def test_quadratic_spacing_gaps_shrink_towards_zero(n: int) -> None:
    gaps = -torch.diff(timesteps(n, "quadratic"))
    assert (gaps[1:] < gaps[:-1]).all()
    uniform = -torch.diff(timesteps(n, "uniform"))
    torch.testing.assert_close(uniform, torch.full_like(uniform, 1 / n))


def test_cosine_spacing_gaps_shrink_at_both_ends() -> None:
    gaps = -torch.diff(timesteps(20, "cosine"))
    assert gaps[0] < gaps[10] and gaps[-1] < gaps[10]


def test_timesteps_respect_t_range() -> None:
    ts = timesteps(8, "quadratic", t_max=0.9, t_min=0.1)
    assert ts[0].item() == pytest.approx(0.9) and ts[-1].item() == pytest.approx(0.1)


@pytest.mark.parametrize("n", [0, -3, 2.5, "4"])
def test_timesteps_bad_step_count(n) -> None:
    with pytest.raises(ConfigError, match="num_steps"):
        timesteps(n)


def test_timesteps_bad_spacing_or_range() -> None:
    with pytest.raises(ConfigError, match="uniform"):
        timesteps(4, "karras")
    with pytest.raises(ConfigError):
        timesteps(4, t_max=0.2, t_min=0.5)


@pytest.mark.parametrize("name", ["loglinear", "cosine", "linear"])
def test_nelbo_weight_is_a_constant_for_backprop(name: str) -> None:
    """The weight enters the loss as a number: backpropagating through it twice must be possible."""
    t = torch.tensor([0.3, 0.7])
    w = nelbo_weight(get_mask_schedule(name), t)
    assert not w.requires_grad
    x = torch.ones(2, requires_grad=True)
    (w * x).sum().backward()
    torch.testing.assert_close(x.grad, w)
