"""The vocoder (R3.2): output length and finiteness, the weight format round trip, the Griffin-Lim baseline,
the loss, a few optimisation steps, and the training CLI on a tiny synthetic speech folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.speech.discriminator import MultiResolutionDiscriminator
from arrowdiff.speech.griffin_lim import griffin_lim
from arrowdiff.speech.mel import MelConfig, log_mel
from arrowdiff.speech.vocoder import Vocoder, VocoderConfig, tiny_vocoder_config
from arrowdiff.speech.vocoder_data import SegmentSampler, load_wave_split
from arrowdiff.speech.vocoder_io import load_vocoder, save_vocoder, vocoder_metadata, vocoder_state_dict
from arrowdiff.speech.vocoder_loss import (
    VocoderLossWeights,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    reconstruction_loss,
)
from arrowdiff.weights import QuantPolicy, save_model_dir

SR = 16_000


def sawtooth(seconds: float = 1.0, f0: float = 200.0, seed: int = 0) -> np.ndarray:
    """A band-rich harmonic test signal: a sawtooth at ``f0`` with 5 Hz vibrato and faded ends."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    freq = f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, 2 * np.pi)))
    cycles = np.cumsum(freq) / SR
    wave = 0.3 * (2 * (cycles % 1.0) - 1) * np.minimum(1.0, np.minimum(t, t[-1] - t) * 20)
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def tiny() -> Vocoder:
    torch.manual_seed(0)
    model = Vocoder(tiny_vocoder_config())
    with torch.no_grad():  # larger weights, so every layer changes the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_default_size_and_config_round_trip() -> None:
    cfg = VocoderConfig()
    assert (cfg.dim, cfg.layers, cfg.intermediate, cfg.n_fft, cfg.hop) == (384, 8, 1152, 1024, 256)
    assert Vocoder(cfg).num_parameters() == 7_735_938  # the count stated in the vocoder's docstring
    assert VocoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.mel_config() == MelConfig()
    with pytest.raises(ConfigError, match="unknown VocoderConfig keys"):
        VocoderConfig.from_dict({"width": 3})
    with pytest.raises(ConfigError, match="n_fft"):
        VocoderConfig(n_fft=300)
    with pytest.raises(ConfigError, match="layers"):
        VocoderConfig(layers=0)


@pytest.mark.parametrize("frames", [2, 7, 63])
def test_output_length_is_hop_times_frames_minus_one(tiny: Vocoder, frames: int) -> None:
    mel = torch.randn(2, 80, frames) * 2 - 5
    with torch.no_grad():
        wave = tiny(mel)
    assert wave.shape == (2, 256 * (frames - 1)) and wave.dtype == torch.float32
    assert torch.isfinite(wave).all()
    single = tiny.vocode(mel[0].numpy())
    assert single.dtype == np.float32 and single.shape == (256 * (frames - 1),)
    np.testing.assert_allclose(single, wave[0].numpy(), atol=1e-5)


def test_mel_length_matches_the_wave_it_came_from(tiny: Vocoder) -> None:
    wave = sawtooth(0.5)[: 256 * 30]
    mel = log_mel(wave)
    assert tiny.vocode(mel).shape == wave.shape  # a hop-aligned wave comes back at its own length


def test_wrong_mel_shape_is_refused(tiny: Vocoder) -> None:
    with pytest.raises(ConfigError, match=r"\(B, 80, F\)"):
        tiny(torch.zeros(1, 64, 10))
    with pytest.raises(ConfigError, match="F >= 2"):
        tiny(torch.zeros(1, 80, 1))


def test_save_load_round_trip(tiny: Vocoder, tmp_path: Path) -> None:
    mel = log_mel(sawtooth(0.5))[None]
    with torch.no_grad():
        ref = tiny(mel)
    exact = load_vocoder(save_vocoder(tiny, tmp_path / "v32", bits=32))
    half = load_vocoder(save_vocoder(tiny, tmp_path / "v16", {"steps": 3}, bits=16))
    assert not exact.training and exact.cfg == tiny.cfg
    with torch.no_grad():
        assert torch.equal(exact(mel), ref)
        err = (half(mel) - ref).abs().max() / ref.abs().max()
    assert float(err) < 1e-2
    meta = json.loads((tmp_path / "v16" / "metadata.json").read_text())
    assert meta["model_type"] == "vocoder" and meta["components"] == {"vocoder": "vocoder.parquet"}
    v = meta["vocoder"]
    assert v["sample_rate"] == 16_000 and v["mel"] == MelConfig().to_dict() and "Vocos" in v["paper"]
    assert v["parameters"] == tiny.num_parameters() and v["training"] == {"steps": 3}


def test_vocoder_component_inside_another_model_dir(tiny: Vocoder, tmp_path: Path) -> None:
    other = {"w": torch.ones(4, 4)}
    meta = {"config": {}, **vocoder_metadata(tiny)}
    save_model_dir(
        tmp_path / "m", {"backbone": other, "vocoder": vocoder_state_dict(tiny)}, meta, QuantPolicy(32)
    )
    mel = torch.randn(1, 80, 9)
    with torch.no_grad():
        assert torch.equal(load_vocoder(tmp_path / "m")(mel), tiny(mel))
    save_model_dir(tmp_path / "n", {"backbone": other}, {"config": {}}, QuantPolicy(32))
    with pytest.raises(WeightFormatError, match="no vocoder here"):
        load_vocoder(tmp_path / "n")


def test_griffin_lim_reconstructs_a_harmonic_signal() -> None:
    wave = sawtooth(1.0)
    mel = log_mel(wave)
    recon = griffin_lim(mel)  # 32 fast Griffin-Lim iterations
    random_phase = griffin_lim(mel, n_iter=0)
    assert recon.shape == (256 * (mel.shape[-1] - 1),) and torch.isfinite(recon).all()
    err = float((log_mel(recon) - mel).abs().mean())
    err_random = float((log_mel(random_phase) - mel).abs().mean())
    assert err < 0.2  # measured 0.11 (random phase: 0.67)
    assert err < 0.5 * err_random
    assert torch.equal(griffin_lim(mel), recon)  # seeded: deterministic
    batch = griffin_lim(torch.stack([mel, mel]), n_iter=2)
    assert batch.shape == (2, recon.shape[0])


def test_griffin_lim_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="momentum"):
        griffin_lim(torch.zeros(80, 5), momentum=1.0)
    with pytest.raises(ConfigError, match="80"):
        griffin_lim(torch.zeros(64, 5))


def test_loss_is_zero_for_identical_waves_and_positive_otherwise() -> None:
    a = torch.from_numpy(np.stack([sawtooth(0.5, 200), sawtooth(0.5, 150, seed=1)]))
    b = a + 0.01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    zero, terms = reconstruction_loss(a, a)
    assert float(zero) == 0.0 and all(float(v) == 0.0 for v in terms.values())
    loss, terms = reconstruction_loss(b, a)
    assert float(loss) > 0 and all(float(v) > 0 for v in terms.values())
    mel_only, _ = reconstruction_loss(b, a, VocoderLossWeights(stft=0.0))
    assert 0 < float(mel_only) < float(loss)
    with pytest.raises(ConfigError, match="must be >= 0"):
        VocoderLossWeights(mel=-1.0)


def test_adversarial_losses() -> None:
    disc = MultiResolutionDiscriminator(channels=4)
    wave = torch.from_numpy(sawtooth(0.25))[None]
    scores, fmaps = disc(wave)
    assert len(scores) == len(fmaps) == 3 and all(len(f) == 6 for f in fmaps)
    assert float(feature_matching_loss(fmaps, fmaps).detach()) == 0.0
    ones = [torch.ones(1, 1, 4, 4)] * 3
    assert float(discriminator_hinge_loss(ones, [-o for o in ones])) == 0.0  # both sides past the margin
    assert float(generator_hinge_loss(ones)) == 0.0 and float(generator_hinge_loss([-o for o in ones])) == 2.0
    generator_hinge_loss(scores).backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    vocoder = Vocoder(tiny_vocoder_config())
    wave = torch.from_numpy(sawtooth(0.5)[: 256 * 31])[None]
    mel = log_mel(wave)
    opt = torch.optim.AdamW(vocoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = reconstruction_loss(vocoder(mel), wave, target_mel=mel)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def write_tiny_speech_set(root: Path, n: dict[str, int] | None = None) -> Path:
    """A speech folder in the data set's format (``S_utts.parquet`` + ``S_wave.npy`` int16), no heldout."""
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (n or {"train": 4, "val": 2}).items():
        waves = [sawtooth(0.3 + 0.1 * i, 120 + 40 * i, seed=i) for i in range(count)]
        lengths = np.array([len(w) for w in waves], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        table = pa.table(
            {
                "utt_id": [f"{split}-{i}" for i in range(count)],
                "n_samples": lengths,
                "wave_offset": offsets,
            }
        )
        pq.write_table(table, root / f"{split}_utts.parquet")
        pcm = (np.concatenate(waves) * 32767).astype(np.int16)
        np.save(root / f"{split}_wave.npy", pcm, allow_pickle=False)
    return root


def test_segments_are_hop_aligned_crops_of_one_utterance(tmp_path: Path) -> None:
    split = load_wave_split(write_tiny_speech_set(tmp_path / "s", {"train": 3}), "train")
    sampler = SegmentSampler(split, 2048, 256, "cpu")
    batch = sampler.sample(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 2048) and batch.abs().max() <= 1.0
    utts = [torch.from_numpy(split.utterance(i)) for i in range(len(split))]
    for row in batch:  # every crop is a hop-aligned window of some utterance (quantised to int16)
        assert any(
            torch.allclose(row, u[s : s + 2048], atol=1 / 32768)
            for u in utts
            for s in range(0, len(u) - 2047, 256)
        )
    short = SegmentSampler(split, 256 * 40, 256, "cpu").sample(2, torch.Generator().manual_seed(0))
    assert short.shape == (2, 256 * 40) and (short[:, -256:] == 0).all()  # longer than any utterance: padded
    with pytest.raises(ConfigError, match="multiple of the hop"):
        SegmentSampler(split, 1000, 256, "cpu")


TINY_ARGS = ["--dim", "16", "--intermediate", "32", "--layers", "1", "--batch-size", "2", "--segment", "2048"]
TINY_ARGS += ["--threads", "1", "--warmup", "1", "--eval-every", "2", "--ckpt-every", "2", "--log-every", "1"]
TINY_ARGS += ["--gl-iters", "2", "--samples", "1"]


def test_training_cli_writes_log_and_a_loadable_model(tmp_path: Path) -> None:
    from arrowdiff.speech.train_vocoder import main

    data = write_tiny_speech_set(tmp_path / "speech")
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), "--steps", "3", *TINY_ARGS]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["elapsed_s"] >= 0 and np.isfinite(r["loss"]) for r in log)
    for key in ("val_mel_l1", "val_stft_sc", "gl_mel_l1", "gl_stft_mag"):
        assert key in log[-1] and key in log[1]
    vocoder = load_vocoder(out / "model")
    assert vocoder.cfg == VocoderConfig(dim=16, intermediate=32, layers=1)
    t = json.loads((out / "model" / "metadata.json").read_text())["vocoder"]["training"]
    assert t["steps"] == 3 and "arrowdiff.speech.train_vocoder" in t["command"]
    assert set(t["data"]["splits"]) == {"train", "val"}  # no heldout split: tolerated
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "0_griffin_lim.wav",
        "0_reference.wav",
        "0_vocoder.wav",
    ]


def assert_resumes_exactly(data: Path, tmp_path: Path, args: list[str]) -> tuple[Path, dict]:
    """Train 3 steps straight and 2 + resume 1 with the same ``args``; the two checkpoints must be equal.
    Returns the straight run's folder and its weights."""
    from arrowdiff.speech.train_vocoder import main

    args = [*args, "--no-export", "--steps", "3"]
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(["--data", str(data), "--out", str(straight), *args]) == 0
    assert main(["--data", str(data), "--out", str(resumed), "--stop-at", "2", *args]) == 0
    assert main(["--data", str(data), "--out", str(resumed), "--resume", *args]) == 0
    wa = load_file(str(straight / "checkpoint" / "model.safetensors"))
    wb = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    return straight, wa


def test_training_with_gan_resumes_exactly(tmp_path: Path) -> None:
    data = write_tiny_speech_set(tmp_path / "speech")
    gan = ["--gan", "--gan-start", "1", "--disc-channels", "4"]
    straight, wa = assert_resumes_exactly(data, tmp_path, [*TINY_ARGS, *gan])
    assert any(k.startswith("disc.") for k in wa)
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert "d_loss" not in log[0] and "d_loss" in log[1] and "g_fm" in log[2]


def test_training_refuses_a_missing_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arrowdiff.speech.train_vocoder import main

    data = write_tiny_speech_set(tmp_path / "speech", {"train": 2})
    assert main(["--data", str(data), "--out", str(tmp_path / "r"), "--steps", "1", *TINY_ARGS]) == 2
    assert "val_utts.parquet" in capsys.readouterr().err


def test_init_starts_from_another_runs_vocoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--init copies a model directory's vocoder before the first step: its first logged loss is the
    loss the source vocoder reached, far below a fresh start; another architecture is refused."""
    from arrowdiff.speech.train_vocoder import main

    data = write_tiny_speech_set(tmp_path / "speech")
    base = [*TINY_ARGS, "--lr", "3e-3"]
    assert main(["--data", str(data), "--out", str(tmp_path / "src"), "--steps", "12", *base]) == 0
    common = ["--data", str(data), "--steps", "1", "--no-export", *base]
    assert main([*common, "--out", str(tmp_path / "fresh")]) == 0
    assert main([*common, "--out", str(tmp_path / "init"), "--init", str(tmp_path / "src" / "model")]) == 0

    def first_loss(run: str) -> float:
        return json.loads((tmp_path / run / "log.jsonl").read_text().splitlines()[0])["loss"]

    assert first_loss("init") < 0.9 * first_loss("fresh")
    wide = [*common, "--out", str(tmp_path / "bad"), "--init", str(tmp_path / "src" / "model"), "--dim", "24"]
    assert main(wide) == 2
    assert "pass the same --dim" in capsys.readouterr().err


def test_resume_wins_over_init(tmp_path: Path) -> None:
    """A run started with --init, stopped and resumed with the same flags ends exactly where a straight run
    does: the checkpoint, not the --init source, is what the resumed run continues from."""
    from arrowdiff.speech.train_vocoder import main

    data = write_tiny_speech_set(tmp_path / "speech")
    assert main(["--data", str(data), "--out", str(tmp_path / "src"), "--steps", "2", *TINY_ARGS]) == 0
    assert_resumes_exactly(data, tmp_path, [*TINY_ARGS, "--init", str(tmp_path / "src" / "model")])
