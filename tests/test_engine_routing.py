"""R17.5: the parameters common to AR and diffusion generation are validated in one place and mean the
same in both modes (top-k / top-p filter both the next-token and the per-position distributions)."""

from __future__ import annotations

import pytest
import torch

from arrowdiff.diffusion_core import filter_denoiser
from arrowdiff.engine import CommonParams, cut_at_stop
from arrowdiff.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": -1}, "top_k=-1"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"stop": "\n"}, "list of non-empty strings"),
        ({"stop": ("",)}, "list of non-empty strings"),
        ({"temperature": -1.0}, "temperature=-1.0"),
    ],
)
def test_common_params_reject_bad_values(kwargs: dict, message: str) -> None:
    base = {"max_length": 8, "temperature": 1.0, "seed": 0}
    with pytest.raises(ConfigError, match=message):
        CommonParams(**{**base, **kwargs})


def test_cut_at_stop() -> None:
    assert cut_at_stop("a. b\n\nc", [".", "\n\n"]) == "a"
    assert cut_at_stop("abc", []) == "abc"


def test_filter_denoiser_keeps_top_k_and_top_p() -> None:
    logits = torch.log_softmax(torch.tensor([[[3.0, 2.0, 1.0, 0.0, -1.0]]]), -1)  # (B, T, V)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        return logits

    x, t = torch.zeros(1, 1, dtype=torch.long), torch.ones(1)
    top2 = filter_denoiser(denoiser, top_k=2)(x, t)
    assert torch.isfinite(top2).sum() == 2 and torch.allclose(top2.exp().sum(), torch.tensor(1.0))
    nucleus = filter_denoiser(denoiser, top_p=0.5)(x, t)  # p(first) = 0.64 already crosses 0.5
    assert torch.isfinite(nucleus).sum() == 1
    assert filter_denoiser(denoiser) is denoiser  # no filtering, no wrapper
