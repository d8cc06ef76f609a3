"""samplers/ and guidance/ against ANALYTIC denoisers: fixed per-position categorical distributions, no
network. Checks the invariants of absorbing-state reverse processes: committed tokens never change, given
tokens are kept, the schedule sets how many tokens are revealed, and blocks fill left to right."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.guidance import classifier_free, prompt_dropped
from arrowdiff.network.denoiser import Cond, subs_log_probs
from arrowdiff.samplers import sample_ancestral, sample_blocks, sample_confidence
from arrowdiff.schedules import get_mask_schedule, timesteps

MASK = 1
V = 40
SAMPLERS = {"confidence": sample_confidence, "ancestral": sample_ancestral}
PREFIX = [5, 6, 7]
SUFFIX = [8, 9]


def categorical_logits(T: int, seed: int = 0, sharp: float = 2.0) -> Tensor:
    """A fixed, known distribution per position: (T, V) logits."""
    return torch.randn(T, V, generator=torch.Generator().manual_seed(seed)) * sharp


def analytic_denoiser(logits: Tensor, subs: bool = True, seen: list[Tensor] | None = None):
    """denoiser(x_t, t, cond) -> log p(x0 | x_t): the same per-position categorical at every step.

    With ``subs=False`` unmasked rows are NOT one-hot, so a sampler that overwrote committed tokens would
    be caught. ``seen`` collects every x_t the denoiser is shown."""

    def denoiser(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        assert t.shape == (x_t.shape[0],)
        if seen is not None:
            seen.append(x_t.clone())
        full = logits.expand(x_t.shape[0], -1, -1)
        if subs:
            return subs_log_probs(full, x_t, MASK)
        return torch.log_softmax(full.index_fill(-1, torch.tensor([MASK]), float("-inf")), -1)

    return denoiser


def infill_start(n_masked: int, batch: int = 2) -> Tensor:
    return torch.tensor([PREFIX + [MASK] * n_masked + SUFFIX] * batch)


def run(
    name: str, denoiser, x: Tensor, num_steps: int, schedule: str = "loglinear", seed: int = 0, **kwargs
) -> tuple[Tensor, list[Tensor]]:
    """Sample and return (output, [x after each step])."""
    steps: list[Tensor] = []
    out = SAMPLERS[name](
        denoiser, x, timesteps(num_steps), get_mask_schedule(schedule), MASK,
        generator=torch.Generator().manual_seed(seed), callback=lambda i, xs: steps.append(xs.clone()),
        **kwargs,
    )  # fmt: skip
    return out, steps


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("num_steps", [1, 2, 7, 64])
@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
def test_reverse_process_invariants(name: str, num_steps: int, schedule: str) -> None:
    x = infill_start(20)
    den = analytic_denoiser(categorical_logits(x.shape[1]), subs=False)
    out, steps = run(name, den, x, num_steps, schedule)
    assert 1 <= len(steps) <= num_steps
    history = [x, *steps]
    for before, after in zip(history, history[1:], strict=False):
        committed = before != MASK
        assert torch.equal(after[committed], before[committed]), "a committed token changed"
    assert torch.equal(out, steps[-1])
    assert not (out == MASK).any(), "masks remain after the final step"
    assert torch.equal(out[:, : len(PREFIX)], x[:, : len(PREFIX)])
    assert torch.equal(out[:, -len(SUFFIX) :], x[:, -len(SUFFIX) :])
    assert torch.equal(x, infill_start(20)), "the sampler must not modify its input"


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("num_steps", [3, 7, 10])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_confidence_reveals_as_many_tokens_as_the_schedule_says(
    schedule: str, num_steps: int, spacing: str
) -> None:
    n0 = 50
    x = infill_start(n0)
    m = get_mask_schedule(schedule)
    times = timesteps(num_steps, spacing)
    steps: list[Tensor] = []
    sample_confidence(
        analytic_denoiser(categorical_logits(x.shape[1])), x, times, m, MASK,
        generator=torch.Generator().manual_seed(0), callback=lambda i, xs: steps.append(xs.clone()),
    )  # fmt: skip
    expected = [round(n0 * float(m(times[i + 1]))) for i in range(num_steps - 1)] + [0]
    # the sampler stops once nothing is masked (fine spacing near t=0 can round to 0 masks early)
    assert len(steps) == expected.index(0) + 1
    for i, xs in enumerate(steps):
        assert (xs == MASK).sum(-1).tolist() == [expected[i]] * x.shape[0], f"step {i}"


@pytest.mark.parametrize("name", SAMPLERS)
def test_point_mass_denoiser_gives_its_tokens(name: str) -> None:
    x = infill_start(16)
    T = x.shape[1]
    target = torch.randint(3, V, (T,), generator=torch.Generator().manual_seed(1))
    logits = torch.full((T, V), float("-inf")).scatter_(-1, target[:, None], 0.0)
    out, _ = run(name, analytic_denoiser(logits), x, 5)
    expected = torch.where(x == MASK, target.expand_as(x), x)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", SAMPLERS)
def test_deterministic_for_a_seed(name: str) -> None:
    x = infill_start(40)
    den = analytic_denoiser(categorical_logits(x.shape[1], sharp=0.5))
    a, _ = run(name, den, x, 8, seed=123)
    b, _ = run(name, den, x, 8, seed=123)
    c, _ = run(name, den, x, 8, seed=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("block_size", [1, 4, 5])
def test_blocks_fill_left_to_right(name: str, block_size: int) -> None:
    n = 12
    x = infill_start(n)
    seen: list[Tensor] = []
    den = analytic_denoiser(categorical_logits(x.shape[1]), subs=False, seen=seen)
    cols = torch.arange(len(PREFIX), len(PREFIX) + n)
    blocks = [cols[i : i + block_size] for i in range(0, n, block_size)]
    snapshots: list[tuple[int, Tensor]] = []  # (block index, x after a step)
    block = -1

    def record(i: int, xs: Tensor) -> None:
        nonlocal block
        block += i == 0  # every block restarts the step count
        snapshots.append((block, xs.clone()))

    out = sample_blocks(
        SAMPLERS[name],
        den,
        x,
        timesteps(3),
        block_size,
        mask_id=MASK,
        schedule=get_mask_schedule("loglinear"),
        generator=torch.Generator().manual_seed(0),
        callback=record,
    )
    assert block == len(blocks) - 1
    for k, xs in snapshots:
        for j, cols_j in enumerate(blocks):
            vals = xs[:, cols_j]
            if j < k:
                assert ((vals != MASK) & (vals >= 0)).all(), f"block {j} unfinished while block {k} runs"
            elif j > k:
                assert ((vals == MASK) | (vals < 0)).all(), f"block {j} revealed while block {k} runs"
    # the denoiser always sees real ids (later blocks as masks), never the sampler's placeholder
    assert all((s >= 0).all() for s in seen)
    assert not (out == MASK).any()
    assert torch.equal(out[:, : len(PREFIX)], x[:, : len(PREFIX)])
    assert torch.equal(out[:, -len(SUFFIX) :], x[:, -len(SUFFIX) :])


def test_block_size_must_be_positive() -> None:
    x = infill_start(4)
    with pytest.raises(ConfigError, match="block_size"):
        sample_blocks(
            sample_confidence,
            analytic_denoiser(categorical_logits(x.shape[1])),
            x,
            timesteps(2),
            0,
            mask_id=MASK,
            schedule=get_mask_schedule("loglinear"),
        )


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize(
    "times",
    [
        pytest.param(torch.tensor([1.0, 0.5, 0.5, 0.0], dtype=torch.float64), id="repeated"),
        pytest.param(torch.tensor([0.0, 1.0], dtype=torch.float64), id="increasing"),
        pytest.param(torch.tensor([1.0], dtype=torch.float64), id="too-short"),
        pytest.param(torch.tensor([[1.0, 0.0]], dtype=torch.float64), id="2-d"),
    ],
)
def test_times_validation(name: str, times: Tensor) -> None:
    x = infill_start(4)
    calls: list[Tensor] = []
    with pytest.raises(ConfigError, match="times"):
        SAMPLERS[name](
            analytic_denoiser(categorical_logits(x.shape[1]), seen=calls),
            x,
            times,
            get_mask_schedule("loglinear"),
            MASK,
        )
    assert not calls  # rejected before any denoiser call


# ---- classifier-free guidance --------------------------------------------------------------------------


def _guidance_pair() -> tuple:
    x = infill_start(6, batch=1)
    T = x.shape[1]
    return (
        x,
        analytic_denoiser(categorical_logits(T, seed=1)),
        analytic_denoiser(categorical_logits(T, seed=2)),
    )


def test_cfg_scale_one_and_zero_are_the_plain_denoisers() -> None:
    x, cond, uncond = _guidance_pair()
    t = torch.ones(1)
    assert torch.equal(classifier_free(cond, uncond, 1.0)(x, t), cond(x, t))
    assert torch.equal(classifier_free(cond, uncond, 0.0)(x, t), uncond(x, t))


@pytest.mark.parametrize("scale", [0.5, 2.0, 7.5])
def test_cfg_mixes_and_renormalises(scale: float) -> None:
    x, cond, uncond = _guidance_pair()
    t = torch.ones(1)
    out = classifier_free(cond, uncond, scale)(x, t)
    lc, lu = cond(x, t), uncond(x, t)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(x.shape))
    masked = x[0] == MASK
    both = torch.isfinite(lc) & torch.isfinite(lu)
    expected = torch.log_softmax(torch.where(both, lu + scale * (lc - lu), float("-inf")), -1)
    torch.testing.assert_close(out[0, masked], expected[0, masked])
    assert torch.equal(out[0, ~masked], lc[0, ~masked])  # carried-over rows stay exactly one-hot
    assert (out[..., MASK] == float("-inf")).all()


@pytest.mark.parametrize("scale", [-1.0, -1e-9, 20.5, float("nan"), float("inf")])
def test_cfg_scale_out_of_range(scale: float) -> None:
    _, cond, uncond = _guidance_pair()
    with pytest.raises(ConfigError, match="guidance_scale"):
        classifier_free(cond, uncond, scale)


def test_prompt_dropped_hides_the_prompt_from_the_denoiser() -> None:
    x = infill_start(6, batch=1)
    seen: list[Tensor] = []
    uncond = prompt_dropped(
        analytic_denoiser(categorical_logits(x.shape[1]), seen=seen),
        torch.arange(x.shape[1])[None] < len(PREFIX),
        MASK,
    )
    out = uncond(x, torch.ones(1))
    assert (seen[0][0, : len(PREFIX)] == MASK).all()
    assert torch.equal(seen[0][0, len(PREFIX) :], x[0, len(PREFIX) :])
    for i, tok in enumerate(PREFIX):  # the prompt positions come back as one-hot carry-overs
        assert out[0, i, tok] == 0 and torch.isinf(out[0, i]).sum() == V - 1
