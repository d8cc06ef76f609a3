"""The mel prior and shallow diffusion: length regulator, shapes and errors, training + export + attach,
and the speech pipeline starting from the noised prior."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError
from arrowdiff.speech.prior import MelPrior, MelPriorConfig, regulate
from arrowdiff.speech_core import SpeechOptions


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=12), st.integers(0, 8))
def test_regulate_copies_each_phone_for_its_frames(durations: list[int], extra: int) -> None:
    d = torch.tensor([durations])
    total = sum(durations)
    idx, pos = regulate(d, total + extra)
    expected = torch.repeat_interleave(torch.arange(len(durations)), d[0])
    assert torch.equal(idx[0, :total], expected)
    assert bool(((pos >= 0) & (pos <= 1)).all())
    if total:
        last = max(i for i, n in enumerate(durations) if n > 0)
        assert bool((idx[0, total:] == last).all()) and bool((pos[0, total:] == 1).all())
        starts = torch.cumsum(d[0], 0) - d[0]
        assert bool((pos[0, starts[d[0] > 0]] == 0).all())  # every phone's first frame is at position 0


def test_prior_shapes_and_errors() -> None:
    torch.manual_seed(0)
    prior = MelPrior(MelPriorConfig(channels=32, encoder_layers=1, decoder_layers=2))
    phones, durations = torch.randint(1, 40, (2, 7)), torch.tensor([[3] * 7, [2] * 5 + [0, 0]])
    spk = torch.randn(2, 192)
    assert prior(phones, durations, spk, 22).shape == (2, 22, 80)
    with pytest.raises(ConfigError, match="multiple of frames_per_token=2"):
        prior(phones, durations, spk, 21)
    with pytest.raises(ConfigError, match="speaker of shape"):
        prior(phones, durations, spk[:1], 22)
    with pytest.raises(ConfigError, match="must both be"):
        prior(phones, durations[:, :3], spk, 22)
    with pytest.raises(ConfigError, match="kernel=4 must be odd"):
        MelPriorConfig(kernel=4)
    with pytest.raises(ConfigError, match="start_time=1.5"):
        SpeechOptions(start_time=1.5)
    # padding phones (zero frames) do not change the real frames
    a = prior.eval()(phones[1:, :5], durations[1:, :5], spk[1:], 10)
    b = prior(phones[1:], durations[1:], spk[1:], 10)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def prior_run(speech_run: Path, speech_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arrowdiff.speech.train_prior import main

    out = tmp_path_factory.mktemp("prior") / "run"
    argv = ["--data", str(speech_folder), "--model", str(speech_run / "model"), "--out", str(out),
            "--steps", "60", "--batch-size", "8", "--channels", "64", "--decoder-layers", "2",
            "--lr", "3e-3", "--warmup", "5", "--log-every", "20", "--eval-every", "60",
            "--ckpt-every", "30"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_prior_training_learns_and_exports(prior_run: Path, speech_run: Path) -> None:
    from arrowdiff.speech.prior_io import load_prior

    log = [json.loads(line) for line in (prior_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["l1"] < 0.7 * log[0]["l1"]  # it learns the synthetic voices' mels
    assert np.isfinite(log[-1]["val_l1"])
    prior = load_prior(prior_run / "model")
    assert prior is not None and prior.cfg.channels == 64
    meta = json.loads((prior_run / "model" / "metadata.json").read_text())
    assert meta["prior"]["speaker_encoder"]["model"] == str(speech_run / "model")
    assert "train_prior" in meta["prior"]["training"]["command"]
    assert load_prior(speech_run / "model") is None  # a model without a prior component


def test_resume_continues_where_it_stopped(prior_run: Path, speech_run: Path, speech_folder: Path) -> None:
    from arrowdiff.speech.train_prior import main

    base = ["--data", str(speech_folder), "--model", str(speech_run / "model"), "--batch-size", "4",
            "--channels", "32", "--decoder-layers", "1", "--steps", "6", "--log-every", "1",
            "--ckpt-every", "3"]  # fmt: skip
    out = prior_run.parent / "resumed"
    assert main([*base, "--out", str(out), "--stop-at", "3"]) == 0
    assert main([*base, "--out", str(out), "--resume"]) == 0
    once = prior_run.parent / "once"
    assert main([*base, "--out", str(once)]) == 0
    logs = [[json.loads(x)["l1"] for x in (d / "log.jsonl").read_text().splitlines()] for d in (out, once)]
    assert np.allclose(logs[0], logs[1], rtol=1e-5)  # batches are functions of (seed, step)


def test_shallow_diffusion_starts_from_the_noised_prior(
    prior_run: Path, speech_run: Path, tmp_path: Path
) -> None:
    from arrowdiff import ArrowEngine
    from arrowdiff.weights.attach import attach_component

    no_prior = ArrowEngine.from_pretrained(speech_run / "model")
    with pytest.raises(ConfigError, match="no mel prior"):
        no_prior.diffuse("Hi there.", modality="audio", voice_id="mid", num_steps=2, start_time=0.5)
    out = tmp_path / "with_prior"
    attach_component(speech_run / "model", prior_run / "model", "prior", out, ("prior_config", "prior"))
    core = ArrowEngine.from_pretrained(out).speech_core()
    assert core.prior is not None and core.start_time() == 0.1
    phones = core.phonemes("Good morning.")
    spk = core.speaker(voice_id="low")
    dur = core.durations(phones, spk)
    frames = -(-int(dur.sum()) // 2) * 2
    prior_mel = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(0), start_time=0.0)
    expected = core.prior(torch.tensor([phones]), dur[None], spk, frames)[0]
    assert prior_mel.shape == (80, frames)
    assert torch.allclose(prior_mel, core.model.head("audio").denormalize(expected).T, atol=1e-5)
    a = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(1), start_time=0.3)
    b = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(1), start_time=0.3)
    c = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(1), start_time=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a shallow start stays closer to the prior than diffusion from pure noise
    assert (a - prior_mel).abs().mean() < (c - prior_mel).abs().mean()
    calls = []  # from start k the sampler takes ceil(k * num_steps) steps of the full path's size
    forward = core.model.forward
    core.model.forward = lambda *a, **kw: calls.append(float(a[1][0])) or forward(*a, **kw)
    core.sample_mel(phones, dur, spk, 8, 1.0, torch.Generator().manual_seed(1), start_time=0.25)
    assert calls == [0.25, 0.125]
    del core.model.forward
    speech = ArrowEngine.from_pretrained(out).diffuse("Hello.", modality="audio", num_steps=2, seed=0)
    assert speech.sample_rate == 16000 and speech.waveform.dtype == np.float32
