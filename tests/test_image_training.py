"""Joint text + image training through `arrowdiff train --images`: latent sets, export with the VAE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_log, train_argv

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.image.vae import VAE, tiny_vae_config
from arrowdiff.image.vae_io import load_vae, save_vae
from arrowdiff.loading import load_model
from arrowdiff.training.image_data import CAPTION_VARIANTS, LatentSet
from arrowdiff.training.memory_data import quantize_embeddings


def write_latent_set(root: Path, n: int = 40, size: int = 4) -> Path:
    """A latent directory in the real layout: a tiny VAE (saved through the weight format), latents whose
    mean depends on the caption, and unit caption embeddings."""
    torch.manual_seed(0)
    vae_dir = save_vae(VAE(tiny_vae_config()), root / "vae", training={"note": "random init (test)"})
    out = root / "latents"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        label = rng.integers(0, 2, n)
        mean = (label[:, None, None, None] * 2.0 - 1.0) + 0.1 * rng.standard_normal((n, 4, size, size))
        logvar = np.full_like(mean, -6.0)
        np.save(out / f"{split}_latents.npy", np.stack([mean, logvar], 1).astype(np.float16))
        emb = np.zeros((n, CAPTION_VARIANTS, 384), np.float32)
        emb[np.arange(n), :, label] = 1.0
        np.save(out / f"{split}_captions.npy", quantize_embeddings(emb))
    manifest = {"format_version": 1, "vae": str(vae_dir), "scale_factor": 1.0, "downsample": 2, "splits": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_latent_batches_sample_the_posterior_and_drop_captions(tmp_path: Path) -> None:
    latents = LatentSet.load(write_latent_set(tmp_path), "train")
    g = torch.Generator().manual_seed(0)
    z, cap, keep = latents.batch(512, g, cond_dropout=0.25)
    assert z.shape == (512, 4, 4, 4) and cap.shape == (512, 1, 384) and keep.shape == (512, 1)
    assert 0.15 < 1 - keep.float().mean() < 0.35
    sign = cap[:, 0, 1] * 2 - 1  # label 1 -> mean +1, label 0 -> mean -1
    assert torch.all(z.mean((1, 2, 3)) * sign > 0.5)


def test_missing_latents_name_the_builder(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="arrowdiff.training.image_data"):
        LatentSet.load(tmp_path, "train")


@pytest.fixture(scope="module")
def image_run(tiny_data: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arrowdiff.training.train import main

    tmp_path = tmp_path_factory.mktemp("image_run")
    latents = write_latent_set(tmp_path)
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--images", str(latents), "--init-from", str(tiny_model_dir), steps=30)
    assert main([*argv, "--image-batch-size", "16", "--eval-every", "30"]) == 0
    return out


def test_joint_training_exports_image_head_caption_conditioner_and_vae(image_run: Path) -> None:
    out, tmp_path = image_run, image_run.parent
    log = read_log(out)
    assert all(np.isfinite(r["flow_mse"]) for r in log)
    assert log[-1]["val_image"] < log[-1]["val_image_uncond"]  # the caption tells the sign of the latent
    loaded = load_model(out / "model")
    assert loaded.model.cfg.modalities == ("text", "code", "image")
    assert loaded.model.cfg.conditioners == ("caption",)
    assert loaded.model.cfg.schedule.continuous == "flow"
    assert "vae" in loaded.metadata["components"] and loaded.metadata["vae"]["latent_channels"] == 4
    vae = load_vae(out / "model")
    ref = load_vae(tmp_path / "vae")
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(vae.decode(vae.encode(x)[0]), ref.decode(ref.encode(x)[0]), atol=2e-2, rtol=0)


def test_images_flag_is_validated(tiny_data: Path, tmp_path: Path) -> None:
    from arrowdiff.training.train import main

    latents = write_latent_set(tmp_path)
    with pytest.raises(ConfigError, match="--objective mdlm"):
        main(train_argv(tiny_data, tmp_path / "r", "--images", str(latents), "--objective", "ar"))
    with pytest.raises(ConfigError, match="--caption-dropout 1.5"):
        main(train_argv(tiny_data, tmp_path / "r", "--images", str(latents), "--caption-dropout", "1.5"))


def test_engine_makes_images_of_any_size_through_the_vae(image_run: Path) -> None:
    from arrowdiff import ArrowEngine

    engine = ArrowEngine.from_pretrained(image_run / "model")
    img = engine.diffuse("one", modality="image", num_steps=3, seed=1)
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert np.array_equal(img, engine.diffuse("one", modality="image", num_steps=3, seed=1))  # seeded
    big = engine.diffuse("one", modality="image", num_steps=3, seed=1, height=32, width=16)
    assert big.shape == (32, 16, 3)
    uncond = engine.diffuse("", modality="image", num_steps=3, seed=2, guidance_scale=3.0)
    zero = engine.diffuse("one", modality="image", num_steps=3, seed=2, guidance_scale=0.0)
    assert np.array_equal(uncond, zero)  # guidance 0 is the unconditioned model
    with pytest.raises(ConfigError, match="multiple of 2"):
        engine.diffuse("one", modality="image", num_steps=3, height=15)
    with pytest.raises(ConfigError, match="num_steps=0"):
        engine.diffuse("one", modality="image", num_steps=0)
    with pytest.raises(ConfigError, match="sampler='confidence'"):
        engine.diffuse("one", modality="image", num_steps=2, sampler="confidence")


def test_cli_writes_a_png(image_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from arrowdiff.cli import main

    out = tmp_path / "pics" / "one.png"
    args = ["diffuse", "--model", str(image_run / "model"), "--modality", "image", "--prompt", "one"]
    assert main([*args, "--steps", "2", "--out", str(out), "--height", "16", "--width", "24"]) == 0
    with Image.open(out) as im:
        assert im.size == (24, 16) and im.mode == "RGB"
    assert main([*args, "--steps", "2"]) == 2  # an image needs a file to go to
    assert "give --out FILE.png" in capsys.readouterr().err


def test_frozen_backbone_trains_only_the_image_head(
    tiny_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from arrowdiff.training.train import main

    latents = write_latent_set(tmp_path)
    out = tmp_path / "frozen"
    argv = train_argv(tiny_data, out, "--images", str(latents), "--init-from", str(tiny_model_dir), steps=10)
    extra = ["--image-batch-size", "8", "--freeze-backbone", "--text-weight", "0", "--eval-every", "10"]
    assert main([*argv, *extra]) == 0
    before, after = load_model(tiny_model_dir).model, load_model(out / "model").model
    for name, p in before.backbone.state_dict().items():
        torch.testing.assert_close(after.backbone.state_dict()[name], p, atol=0.02, rtol=0)  # INT8 re-export
    assert after.heads["image"].out.weight.abs().max() > 0  # the zero-initialised head has learned
    assert "flow_mse" in read_log(out)[-1] and "nelbo" not in read_log(out)[-1]
    with pytest.raises(ConfigError, match="--text-weight 0 leaves nothing"):
        main(train_argv(tiny_data, tmp_path / "x", "--text-weight", "0"))
