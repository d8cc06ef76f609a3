"""The image VAE (R2.2): latent shapes at any size divisible by 8, clear size errors, the KL term, the weight
format round trip, and a tiny training run with checkpoint/resume and export. No downloaded data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.image.captions import EmojiRecord
from arrowdiff.image.shards import (
    captions_file,
    file_entry,
    images_file,
    new_image_array,
    write_captions,
    write_manifest,
)
from arrowdiff.image.vae import (
    VAE,
    VAEConfig,
    images_to_tensor,
    kl_divergence,
    tensor_to_uint8,
    tiny_vae_config,
)
from arrowdiff.image.vae_io import load_vae, save_vae, vae_metadata
from arrowdiff.weights import QuantPolicy, save_model_dir


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    model = VAE(VAEConfig())
    with torch.no_grad():  # non-zero residual branches, so every layer takes part in the outputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_default_is_kl_f8_with_4_latent_channels(vae: VAE) -> None:
    assert vae.cfg.downsample == 8 and vae.cfg.latent_channels == 4
    assert vae.latent_shape(64, 64) == (4, 8, 8)
    assert vae.latent_shape(512, 512) == (4, 64, 64)


@pytest.mark.parametrize("hw", [(64, 64), (8, 8), (16, 40), (72, 24)])
def test_any_size_divisible_by_8_encodes_to_fewer_dims(vae: VAE, hw: tuple[int, int]) -> None:
    h, w = hw
    x = torch.rand(2, 3, h, w) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        z = vae.sample(mean, logvar, torch.Generator().manual_seed(0))
        y = vae.decode(z)
    assert mean.shape == logvar.shape == z.shape == (2, 4, h // 8, w // 8)
    assert z[0].numel() < x[0].numel()  # R2.2: the latent has fewer dims than the image (48x fewer)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("hw", [(60, 60), (64, 36), (4, 8)])
def test_wrong_size_names_the_size_and_the_fix(vae: VAE, hw: tuple[int, int]) -> None:
    h, w = hw
    with pytest.raises(ConfigError) as err:
        vae.encode(torch.zeros(1, 3, h, w))
    msg = str(err.value)
    assert f"{h}x{w}" in msg and "multiple of 8" in msg and "resize or pad" in msg
    fix = msg.rsplit("to ", 1)[1].split("x")
    assert all(int(v) % 8 == 0 and int(v) > 0 for v in fix)


def test_wrong_channels_and_latents_are_refused(vae: VAE) -> None:
    with pytest.raises(ConfigError, match="channels"):
        vae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ConfigError, match=r"latents must be \(B, 4, h, w\)"):
        vae.decode(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="uint8 images"):
        vae.encode(np.zeros((2, 3, 16, 16, 1), np.uint8))


def test_uint8_and_float_inputs_agree(vae: VAE) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    x = images_to_tensor(img)
    assert x.shape == (2, 3, 16, 24) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(tensor_to_uint8(x), img)  # exact round trip
    with torch.no_grad():
        a, _ = vae.encode(img)
        b, _ = vae.encode(x)
        c, _ = vae.encode(img[0])  # one (H, W, 3) image
    assert torch.equal(a, b) and torch.allclose(a[:1], c, atol=1e-6)  # batch size may change conv kernels


def test_kl_is_zero_iff_posterior_is_the_prior() -> None:
    zeros = torch.zeros(3, 4, 2, 2)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    kl = kl_divergence(torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), -1.0))
    expected = 0.5 * (0.25 + np.exp(-1.0) - 1 + 1.0) * 16
    assert kl.item() == pytest.approx(expected, rel=1e-6) and kl.item() > 0


def test_scaled_latents_round_trip(vae: VAE) -> None:
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    vae.scale_factor.fill_(0.5)
    try:
        with torch.no_grad():
            mean, _ = vae.encode(x)
            zs = vae.to_latents(x, sample=False)
            assert torch.allclose(zs, mean * 0.5)
            assert torch.allclose(vae.from_latents(zs), vae.decode(mean))
    finally:
        vae.scale_factor.fill_(1.0)


def test_save_load_round_trip_gives_identical_outputs(vae: VAE, tmp_path: Path) -> None:
    vae.scale_factor.fill_(0.37)
    try:
        save_vae(vae, tmp_path / "vae32", {"command": "test", "steps": 0, "seed": 0}, bits=32)
    finally:
        vae.scale_factor.fill_(1.0)
    loaded = load_vae(tmp_path / "vae32")
    assert loaded.cfg == vae.cfg and float(loaded.scale_factor) == pytest.approx(0.37)
    assert not loaded.training
    x = torch.rand(2, 3, 24, 16) * 2 - 1
    with torch.no_grad():
        ref_mean, ref_logvar = vae.encode(x)
        mean, logvar = loaded.encode(x)
        assert torch.equal(mean, ref_mean) and torch.equal(logvar, ref_logvar)
        assert torch.equal(loaded.decode(mean), vae.decode(mean))
    meta = json.loads((tmp_path / "vae32" / "metadata.json").read_text())
    assert meta["model_type"] == "autoencoder_kl" and meta["components"] == {"vae": "vae.parquet"}
    assert meta["vae"]["downsample"] == 8 and meta["training"]["command"] == "test"

    save_vae(vae, tmp_path / "vae16", bits=16)  # the shipped width: fp16 weights, close outputs
    with torch.no_grad():
        y16 = load_vae(tmp_path / "vae16").decode(ref_mean)
        assert (y16 - vae.decode(ref_mean)).abs().max() < 1e-2


def test_vae_component_inside_another_model_dir(vae: VAE, tmp_path: Path) -> None:
    tiny = VAE(tiny_vae_config())
    comps = {"vae": tiny.state_dict(), "extra": {"w": torch.zeros(2, 2)}}
    save_model_dir(
        tmp_path / "m", comps, {"model_type": "unified_diffusion", **vae_metadata(tiny)}, QuantPolicy(bits=32)
    )
    assert load_vae(tmp_path / "m").cfg == tiny_vae_config()
    save_model_dir(tmp_path / "none", {"extra": {"w": torch.zeros(2, 2)}}, {}, QuantPolicy(bits=32))
    with pytest.raises(WeightFormatError, match="no VAE here"):
        load_vae(tmp_path / "none")


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="encoder_blocks"):
        VAEConfig(channels=(8, 16), encoder_blocks=(1,), decoder_blocks=(1, 1))
    with pytest.raises(ConfigError, match="norm_groups"):
        VAEConfig(channels=(8, 12), encoder_blocks=(1, 1), decoder_blocks=(1, 1), norm_groups=8)
    with pytest.raises(ConfigError, match="unknown VAEConfig keys"):
        VAEConfig.from_dict({"channels": [8], "bogus": 1})
    cfg = VAEConfig(channels=(8, 16), encoder_blocks=(1, 0), decoder_blocks=(0, 1), norm_groups=4)
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert VAE(cfg)(x)[0].shape == x.shape  # GroupNorm variant runs too


def write_tiny_image_set(root: Path, size: int = 16, n: dict[str, int] | None = None) -> Path:
    """A shard folder in the real format: smooth random blobs on white, captions, manifest."""
    n = n or {"train": 24, "val": 6}
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in n.items():
        path = root / images_file(split)
        arr = new_image_array(path, count, size)
        for i in range(count):
            cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(3, size / 2)]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            arr[i] = 255
            arr[i][inside] = rng.integers(0, 256, 3)
        arr.flush()
        del arr
        recs = [
            EmojiRecord(key=f"k{i}", name=f"blob {i}", category="Test", source="noto-png")
            for i in range(count)
        ]
        write_captions(root / captions_file(split), recs, [r.name for r in recs])
        splits[split] = {
            "count": count,
            "images": {
                **file_entry(path),
                "shape": [count, size, size, 3],
                "dtype": "uint8",
                "encoding": "npy",
            },
            "captions": file_entry(root / captions_file(split)),
        }
    write_manifest(root, {"size": size, "sources": ["test"], "splits": splits, "command": "tiny fixture"})
    return root


TINY_ARGS = ["--channels", "8,8", "--encoder-blocks", "1,1", "--decoder-blocks", "1,1", "--batch-size", "4"]
TINY_ARGS += [
    "--eval-every",
    "2",
    "--ckpt-every",
    "2",
    "--threads",
    "1",
    "--scale-images",
    "16",
    "--warmup",
    "1",
]


def test_training_resumes_exactly_and_exports(tmp_path: Path) -> None:
    from arrowdiff.image.train_vae import main

    data = write_tiny_image_set(tmp_path / "images")
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(["--data", str(data), "--out", str(straight), "--steps", "4", *TINY_ARGS]) == 0
    assert (
        main(["--data", str(data), "--out", str(resumed), "--steps", "4", "--stop-at", "2", *TINY_ARGS]) == 0
    )
    assert not (resumed / "model").exists()  # stopped early: no export yet
    assert main(["--data", str(data), "--out", str(resumed), "--steps", "4", "--resume", *TINY_ARGS]) == 0

    a, b = load_vae(straight / "model"), load_vae(resumed / "model")
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "val_ssim" in log[-1] and "val_psnr" in log[-1]
    meta = json.loads((straight / "model" / "metadata.json").read_text())
    t = meta["training"]
    assert t["steps"] == 4 and t["seed"] == 0 and "arrowdiff.image.train_vae" in t["command"]
    assert t["data"]["counts"] == {"train": 24, "val": 6} and t["data"]["recipe"] == "tiny fixture"
    assert (
        meta["vae"]["scale_factor"] == pytest.approx(float(a.scale_factor)) and float(a.scale_factor) != 1.0
    )


def test_training_refuses_bad_crop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arrowdiff.image.train_vae import main

    data = write_tiny_image_set(tmp_path / "images", n={"train": 4, "val": 2})
    assert (
        main(["--data", str(data), "--out", str(tmp_path / "r"), "--steps", "1", "--crop", "5", *TINY_ARGS])
        == 2
    )
    assert "--crop 5" in capsys.readouterr().err
