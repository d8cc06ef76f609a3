"""Image quality metrics: SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) and PSNR, as plain functions.

SSIM uses the paper's settings: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances. It is computed on every RGB channel separately and averaged over channels and over the
window positions that lie fully inside the image (no padding), which is what scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
channel_axis=-1)`` returns. The functions are differentiable, so ``1 - ssim`` also serves as a loss.

Inputs: uint8 images ``(B, H, W, C)`` / ``(H, W, C)`` (numpy or torch), whose range is 255, or float
tensors ``(B, C, H, W)`` (or ``(C, H, W)``) of non-negative intensities with an explicit ``data_range``
(1.0 for [0, 1]). SSIM's luminance term assumes intensities >= 0: map [-1, 1] images to [0, 1] first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from arrowdiff.errors import ConfigError

K1, K2 = 0.01, 0.03
WINDOW, SIGMA = 11, 1.5


def _as_float(x: np.ndarray | torch.Tensor, data_range: float | None) -> tuple[torch.Tensor, float]:
    """(B, C, H, W) float tensor and its data range."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype == torch.uint8:
        t = t[None] if t.dim() == 3 else t
        if t.dim() != 4:
            raise ConfigError(f"uint8 images must be (B, H, W, C) or (H, W, C), got {tuple(t.shape)}")
        return t.permute(0, 3, 1, 2).double(), 255.0 if data_range is None else data_range
    if not t.is_floating_point():
        raise ConfigError(f"images must be uint8 or floating point, got {t.dtype}")
    if data_range is None:
        raise ConfigError("float images need data_range (1.0 for [0, 1] intensities, 255.0 for 0..255)")
    t = t[None] if t.dim() == 3 else t
    if t.dim() != 4:
        raise ConfigError(f"float images must be (B, C, H, W) or (C, H, W), got {tuple(t.shape)}")
    return t, data_range


def gaussian_window(
    size: int = WINDOW, sigma: float = SIGMA, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The normalised 1-D Gaussian taps, ``(size,)``."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def _blur(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, 'valid' positions only: (B, C, H-k+1, W-k+1)."""
    c = x.shape[1]
    x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    data_range: float | None = None,
    window: int = WINDOW,
    sigma: float = SIGMA,
) -> torch.Tensor:
    """Mean SSIM of each image pair, averaged over channels and window positions: ``(B,)``, 1 iff x == y."""
    a, rng = _as_float(x, data_range)
    b, _ = _as_float(y, data_range)
    if a.shape != b.shape:
        raise ConfigError(f"ssim needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ConfigError(f"images {tuple(a.shape[-2:])} are smaller than the {window}x{window} SSIM window")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    w = gaussian_window(window, sigma, dtype).to(a.device)
    c1, c2 = (K1 * rng) ** 2, (K2 * rng) ** 2
    mu_a, mu_b = _blur(a, w), _blur(b, w)
    var_a = _blur(a * a, w) - mu_a**2
    var_b = _blur(b * b, w) - mu_b**2
    cov = _blur(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def psnr(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float | None = None
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image pair in dB, ``10 log10(range**2 / MSE)``: ``(B,)``; ``inf`` if
    the images are identical."""
    a, rng = _as_float(x, data_range)
    b, _ = _as_float(y, data_range)
    if a.shape != b.shape:
        raise ConfigError(f"psnr needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(rng**2 / mse)  # mse == 0 -> +inf


def mean_finite(values: torch.Tensor, cap_db: float = 100.0) -> float:
    """Mean of PSNR values with ``inf`` (identical images) counted as ``cap_db``."""
    v = values.double().clamp(max=cap_db)
    return float(v.mean()) if v.numel() else math.nan
