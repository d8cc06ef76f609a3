"""Training data for text-to-image latent diffusion: VAE latents + MiniLM caption embeddings.

Images are encoded once by the project's VAE (posterior mean and log-variance, so every epoch can draw a
fresh posterior sample) and their captions once by MiniLM, the sentence encoder that also keys memories.
Captions enter the score network through cross-attention (``conditioners/caption``), not through the
model's own text tokens: a frozen sentence encoder gives paraphrase-robust conditioning from a few thousand
pairs, which a 4k-token BPE embedding trained on prose cannot, and it keeps the text head untouched.

Each image carries ``CAPTION_VARIANTS`` captions (the data set's caption, the bare name, name + subcategory),
one drawn per training step. Layout of a latent directory::

    {split}_latents.npy    float16 (N, 2, C, h, w): VAE posterior mean and log-variance (unscaled)
    {split}_captions.npy   int8 (N, CAPTION_VARIANTS, 384): unit-norm MiniLM embeddings x 127
    {split}_captions.json  the caption texts, same order
    manifest.json          VAE path and scale factor, image set manifest sha256, counts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.training.memory_data import dequantize_embeddings, quantize_embeddings

CAPTION_VARIANTS = 3


def caption_variants(row: dict) -> list[str]:
    name = row["name"]
    sub = (row.get("subcategory") or "").replace("-", " ")
    return [row["caption"], name, f"{name}, {sub}" if sub else name]


def build_captions(images: Path, out: Path) -> dict:
    """Embed every split's caption variants with MiniLM (CPU is fine: ~30k short texts, minutes)."""
    from arrowdiff.encoder import SentenceEncoder
    from arrowdiff.image.shards import read_captions

    encoder = SentenceEncoder(batch_size=256).load()
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val"):
        texts = [caption_variants(r) for r in read_captions(images, split).to_pylist()]
        flat = [t for group in texts for t in group]
        emb = encoder.encode(flat).reshape(len(texts), CAPTION_VARIANTS, -1)
        np.save(out / f"{split}_captions.npy", quantize_embeddings(emb))
        (out / f"{split}_captions.json").write_text(json.dumps(texts))
        counts[split] = len(texts)
    return counts


def build_latents(images: Path, vae_dir: Path, out: Path, device: str = "cpu", batch_size: int = 256) -> dict:
    """Encode every split with the VAE (posterior mean and log-variance) and write the manifest."""
    from arrowdiff.image.shards import open_images
    from arrowdiff.image.vae_io import load_vae

    vae = load_vae(vae_dir, device=device)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "format_version": 1,
        "vae": str(vae_dir),
        "scale_factor": float(vae.scale_factor),
        "downsample": vae.cfg.downsample,
        "caption_variants": CAPTION_VARIANTS,
        "images_manifest_sha256": hashlib.sha256((images / "manifest.json").read_bytes()).hexdigest(),
        "splits": {},
    }
    for split in ("train", "val"):
        pixels = open_images(images, split)
        moments = []
        with torch.no_grad():
            for i in tqdm(range(0, len(pixels), batch_size), desc=f"vae encode {split}"):
                mean, logvar = vae.encode(np.asarray(pixels[i : i + batch_size]))
                moments.append(torch.stack([mean, logvar], 1).half().cpu().numpy())
        np.save(out / f"{split}_latents.npy", np.concatenate(moments))
        manifest["splits"][split] = {"images": len(pixels), "latent_shape": list(moments[0].shape[2:])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build(images: Path, vae_dir: Path, out: Path, device: str = "cpu") -> dict:
    """Captions, then latents: a complete latent directory."""
    build_captions(images, out)
    return build_latents(images, vae_dir, out, device)


@dataclass
class LatentSet:
    """One split of a latent directory, ready to draw training batches from."""

    moments: np.ndarray  # (N, 2, C, h, w) float16
    captions: np.ndarray  # (N, V, 384) float32 unit norm
    scale_factor: float
    downsample: int = 8

    @classmethod
    def load(cls, directory: str | Path, split: str) -> LatentSet:
        d = Path(directory)
        try:
            manifest = json.loads((d / "manifest.json").read_text())
            moments = np.load(d / f"{split}_latents.npy", allow_pickle=False)
            captions = dequantize_embeddings(np.load(d / f"{split}_captions.npy", allow_pickle=False))
        except FileNotFoundError as e:
            raise WeightFormatError(
                f"image latents {e.filename} are missing; build them with "
                f"`python -m arrowdiff.training.image_data --images data/images --vae <vae dir> --out {d}`"
            ) from None
        return cls(moments, captions, float(manifest["scale_factor"]), int(manifest.get("downsample", 8)))

    def __len__(self) -> int:
        return len(self.moments)

    def batch(
        self, batch_size: int, generator: torch.Generator, cond_dropout: float = 0.1
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled latents (B, C, h, w) drawn from the VAE posterior, caption embeddings (B, 1, 384) and
        their mask (B, 1): False for a ``cond_dropout`` share of rows (classifier-free guidance)."""
        idx = torch.randint(0, len(self), (batch_size,), generator=generator).numpy()
        variant = torch.randint(0, self.captions.shape[1], (batch_size,), generator=generator).numpy()
        m = torch.from_numpy(self.moments[idx].astype(np.float32))
        mean, logvar = m[:, 0], m[:, 1]
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
        caption = torch.from_numpy(self.captions[idx, variant])[:, None, :]
        keep = torch.rand(batch_size, generator=generator) >= cond_dropout
        return z * self.scale_factor, caption, keep[:, None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arrowdiff.training.image_data", description=__doc__)
    p.add_argument("--images", default="data/images")
    p.add_argument("--vae", default=None, help="VAE model directory (python -m arrowdiff.image.train_vae)")
    p.add_argument("--out", default="data/image_latents")
    p.add_argument("--part", default="all", choices=["all", "captions", "latents"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part != "captions" and not args.vae:
        raise ConfigError(f"--part {args.part} needs --vae <model dir>")
    images, out = Path(args.images), Path(args.out)
    if args.part == "captions":
        print(json.dumps(build_captions(images, out)))
    elif args.part == "latents":
        print(json.dumps(build_latents(images, Path(args.vae), out, args.device)["splits"]))
    else:
        print(json.dumps(build(images, Path(args.vae), out, args.device)["splits"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
