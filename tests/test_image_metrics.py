"""SSIM and PSNR: agreement with scikit-image within 1e-3, and their basic properties."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from arrowdiff.errors import ConfigError
from arrowdiff.image.metrics import mean_finite, psnr, ssim

# scikit-image comes with `.[dev]`; skip without it, except in CI, where it must be there.
if not os.environ.get("CI"):
    pytest.importorskip("skimage")
from skimage import data as skimage_data  # noqa: E402
from skimage import metrics as skimage_metrics  # noqa: E402


def _images() -> list[np.ndarray]:
    gray = skimage_data.camera()[::4, ::4]
    return [
        skimage_data.astronaut()[100:228, 150:310],
        skimage_data.chelsea()[::2, ::2],
        skimage_data.coffee()[50:150, 200:330],
        np.repeat(gray[..., None], 3, axis=2),
    ]


def _distort(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float64)
    if kind == "noise":
        x = x + rng.normal(0, 12, x.shape)
    elif kind == "blur":
        x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, (1, 1), (0, 1))) / 4
    elif kind == "shift":
        x = x * 0.8 + 30
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["noise", "blur", "shift"])
def test_matches_scikit_image(kind: str) -> None:
    rng = np.random.default_rng(0)
    for img in _images():
        other = _distort(img, kind, rng)
        ref = skimage_metrics.structural_similarity(
            img,
            other,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert ssim(img, other).item() == pytest.approx(ref, abs=1e-3)
        ref_psnr = skimage_metrics.peak_signal_noise_ratio(img, other, data_range=255)
        assert psnr(img, other).item() == pytest.approx(ref_psnr, abs=1e-3)


def test_identical_images_give_ssim_1_and_infinite_psnr() -> None:
    img = _images()[0]
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(psnr(img, img).item())
    assert mean_finite(psnr(img, img), cap_db=100.0) == 100.0


def test_more_noise_lowers_both() -> None:
    img = _images()[1]
    rng = np.random.default_rng(1)
    s, p = [], []
    for sigma in (2, 8, 32):
        noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
        s.append(ssim(img, noisy).item())
        p.append(psnr(img, noisy).item())
    assert 1 > s[0] > s[1] > s[2] and p[0] > p[1] > p[2]


def test_float_inputs_batches_and_gradients() -> None:
    a = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    s = ssim(a, b, data_range=1.0)
    assert s.shape == (3,) and (s < 1).all()
    assert torch.allclose(s, ssim(a * 255, b * 255, data_range=255.0))  # scale-free when data_range follows
    a8 = (a * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    b8 = (b * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.allclose(s, ssim(a8, b8), atol=5e-3)  # uint8 input: range 255 implied
    x = b.clone().float().requires_grad_(True)
    (1 - ssim(x, a.float(), data_range=1.0).mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="data_range"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="one shape"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ConfigError, match="smaller than the 11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
