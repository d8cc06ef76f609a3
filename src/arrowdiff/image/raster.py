"""Pictures to RGB uint8 arrays: SVG rasterisation (cairosvg), PNG decoding, compositing on white, resizing.

Needs the ``images`` extra (``pip install 'arrowdiff[images]'``: cairosvg and Pillow); imported only by
the data builder and benchmarks, never by inference code.
"""

from __future__ import annotations

import io

import numpy as np

from arrowdiff.errors import ConfigError


def _pil():  # noqa: ANN202 - the PIL.Image module
    try:
        from PIL import Image
    except ImportError as e:
        raise ConfigError("Pillow is not installed; run: pip install 'arrowdiff[images]'") from e
    return Image


def rasterize_svg(svg: bytes, size: int) -> np.ndarray:
    """Render an SVG to ``(size, size, 4)`` RGBA uint8 (non-square view boxes are centred, aspect kept)."""
    try:
        import cairosvg
    except ImportError as e:
        raise ConfigError("cairosvg is not installed; run: pip install 'arrowdiff[images]'") from e
    png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    return decode_png(png)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``(H, W, 4)`` RGBA uint8."""
    with _pil().open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA")).copy()


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite straight (non-premultiplied) RGBA uint8 onto white: ``rgb * a + 255 * (1 - a)``."""
    if rgba.ndim != 3 or rgba.shape[-1] != 4 or rgba.dtype != np.uint8:
        raise ConfigError(f"expected (H, W, 4) uint8 RGBA, got {rgba.shape} {rgba.dtype}")
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_lanczos(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 to ``(size, size, 3)`` with Lanczos (a no-op at the same size)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    Image = _pil()
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS))


def render(kind: str, data: bytes, size: int, hflip: bool = False) -> np.ndarray:
    """One picture (``kind`` ``"svg"`` or ``"png"``) as ``(size, size, 3)`` uint8 RGB on white.

    SVGs are rasterised at ``size`` directly; PNGs are composited first, then resized with Lanczos
    (resizing straight RGBA would bleed the colour of transparent pixels into the edges).
    """
    if kind == "svg":
        rgb = composite_on_white(rasterize_svg(data, size))
    elif kind == "png":
        rgb = resize_lanczos(composite_on_white(decode_png(data)), size)
    else:
        raise ConfigError(f"picture kind {kind!r} is not 'svg' or 'png'")
    return np.ascontiguousarray(rgb[:, ::-1]) if hflip else rgb
