"""Text-to-speech on the shared backbone: audio head, voice model, training batches, loss, joint training
with export (vocoder + voice model inside the model directory) and the SpeechCore/engine/CLI path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_log

from arrowdiff.config import ModelConfig, get_preset
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.network.heads.audio import frame_phones
from arrowdiff.network.model import UnifiedModel, backbone_share
from arrowdiff.speech_core import SpeechOptions, check_reference, read_wav, write_wav
from arrowdiff.training.losses import speech_loss
from arrowdiff.training.speech_data import SpeechWindows


def audio_config() -> ModelConfig:
    cfg = get_preset("tiny")
    return replace(cfg, modalities=("text", "code", "audio"), conditioners=("speaker",))


def test_audio_head_shapes_and_zero_init_output() -> None:
    torch.manual_seed(0)
    model = UnifiedModel(audio_config())
    x, ph = torch.randn(3, 64, 80), torch.randint(0, 48, (3, 64))
    spk = torch.nn.functional.normalize(torch.randn(3, 1, 192), dim=-1)
    v = model(x, torch.rand(3), "audio", phones=ph, speaker=spk)
    assert v.shape == (3, 64, 80)
    assert torch.all(v == 0)  # the output layer starts at zero (DiT)
    with pytest.raises(ConfigError, match="multiple of 2"):
        model(torch.randn(1, 63, 80), torch.rand(1), "audio", phones=torch.zeros(1, 63, dtype=torch.long))
    with pytest.raises(ModalityError, match="phone"):
        model(x, torch.rand(3), "audio")


def test_voice_model_is_beside_the_score_network() -> None:
    cfg = replace(get_preset("base"), modalities=("text", "code", "image", "audio"),
                  conditioners=("memory", "caption", "speaker"))  # fmt: skip
    split = UnifiedModel(cfg).parameter_split()
    assert "voice" in split and split["heads/audio"] < 10_000_000
    share = backbone_share(split)
    assert share >= 0.90  # R4.2 with the audio head and speaker conditioner added
    assert share > split["backbone"] / sum(split.values())  # the voice model is not counted


def test_frame_phones_is_a_length_regulator() -> None:
    ids = frame_phones(torch.tensor([5, 6, 7]), torch.tensor([2, 0, 3]))
    assert ids.tolist() == [5, 5, 7, 7, 7]
    assert frame_phones(torch.tensor([5, 6]), torch.tensor([1, 1]), 4).tolist() == [5, 6, 6, 6]


def test_speech_batches_pair_each_window_with_another_utterance_of_its_speaker(speech_folder: Path) -> None:
    data = SpeechWindows.load(speech_folder, "train")
    g = torch.Generator().manual_seed(0)
    b = data.batch(16, 64, 40, g, speaker_dropout=0.5)
    assert b.mel.shape == (16, 64, 80) and b.phones.shape == (16, 64) and b.reference.shape == (16, 80, 40)
    assert b.utt_phones.shape == b.utt_durations.shape
    assert 0 < b.keep_speaker.float().mean() < 1
    # the silent phones (ids <= 2) are quiet frames, the others loud: the phones are aligned to the mel
    loud = b.mel.mean(-1)
    assert loud[b.phones > 2].mean() > loud[b.phones <= 2].mean() + 1.0
    # frames of one utterance's phones add up to its mel length
    assert set(b.utt_durations.sum(1).tolist()) <= set(data.n_frames.tolist())


def test_speech_loss_trains_the_reference_encoder_and_durations(speech_folder: Path) -> None:
    torch.manual_seed(0)
    model = UnifiedModel(audio_config())
    data = SpeechWindows.load(speech_folder, "train")
    b = data.batch(8, 64, 40, torch.Generator().manual_seed(1), 0.0)
    loss, stats = speech_loss(model, b, torch.Generator().manual_seed(2))
    loss.backward()
    assert np.isfinite(stats["speech_flow_mse"]) and stats["duration_mse"] > 0
    assert model.voice.durations.out.weight.grad.abs().sum() > 0
    assert model.heads["audio"].out.weight.grad.abs().sum() > 0


def test_reference_audio_errors_are_clear() -> None:
    sr = 16_000
    voice = 0.1 * np.sin(2 * np.pi * 150 * np.arange(3 * sr) / sr).astype(np.float32)
    assert check_reference(voice, sr, sr).shape == (3 * sr,)
    with pytest.raises(ConfigError, match="22050 Hz.*resample"):
        check_reference(voice, 22050, sr)
    with pytest.raises(ConfigError, match="0.50 s long"):
        check_reference(voice[: sr // 2], sr, sr)
    with pytest.raises(ConfigError, match="silent"):
        check_reference(np.zeros(2 * sr, np.float32), sr, sr)
    with pytest.raises(ConfigError, match="num_steps"):
        SpeechOptions(num_steps=0)


def test_wav_round_trip(tmp_path: Path) -> None:
    x = 0.5 * np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    y, sr = read_wav(write_wav(tmp_path / "a.wav", x, 16000))
    assert sr == 16000 and np.abs(x - y).max() < 1e-4
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wav")
    with pytest.raises(ConfigError, match="not a readable PCM WAV"):
        read_wav(tmp_path / "bad.wav")


def test_joint_speech_training_exports_voice_vocoder_and_speaks(speech_run: Path, tmp_path: Path) -> None:
    from arrowdiff import ArrowEngine
    from arrowdiff.loading import load_model

    log = read_log(speech_run)
    assert all(np.isfinite(r["speech_flow_mse"]) for r in log)
    assert log[-1]["val_audio"] < 2.0  # below the ~2.3 of predicting zero velocity
    loaded = load_model(speech_run / "model")
    cfg = loaded.model.cfg
    assert "audio" in cfg.modalities and "speaker" in cfg.conditioners
    assert sorted(cfg.voice.voices) == ["high", "low", "mid"]
    assert {"voice", "vocoder"} <= set(loaded.metadata["components"])
    engine = ArrowEngine.from_pretrained(speech_run / "model")
    assert sorted(engine.voices()) == ["high", "low", "mid"]
    a = engine.diffuse("Hello there.", modality="audio", voice_id="mid", num_steps=3, seed=1)
    b = engine.diffuse("Hello there.", modality="audio", voice_id="mid", num_steps=3, seed=1)
    wave, sr = a
    assert sr == 16000 and wave.dtype == np.float32 and wave.ndim == 1 and len(wave) > 1000
    assert np.array_equal(wave, b.waveform)  # fixed seed, same speech
    ref = write_wav(tmp_path / "ref.wav", 0.1 * np.sin(np.arange(32000) * 0.07).astype(np.float32), 16000)
    cloned = engine.diffuse("Hello there.", modality="audio", reference_audio=str(ref), num_steps=2, seed=1)
    assert cloned.sample_rate == 16000
    with pytest.raises(ConfigError, match="unknown voice_id 'nobody'"):
        engine.diffuse("Hi.", modality="audio", voice_id="nobody", num_steps=2)


def test_speech_sampler_starts_from_seeded_unit_noise(speech_run: Path) -> None:
    """The mel sampler starts from N(0, I) frames (rounded up to whole tokens) drawn from the given
    generator: the same generator gives the same mel, another one a different mel."""
    from arrowdiff import ArrowEngine
    from arrowdiff.samplers import initial_noise

    core = ArrowEngine.from_pretrained(speech_run / "model").speech_core()
    phones = core.phonemes("Good morning.")
    spk = core.speaker(voice_id="low")
    dur = core.durations(phones, spk)
    assert dur.shape == (len(phones),) and int(dur.min()) >= 1
    a = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(3))
    b = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(3))
    c = core.sample_mel(phones, dur, spk, 2, 1.0, torch.Generator().manual_seed(4))
    frames = -(-int(dur.sum()) // 2) * 2
    assert a.shape == (80, frames) and torch.equal(a, b) and not torch.equal(a, c)
    noise = initial_noise((64, frames, 80), torch.Generator().manual_seed(0))
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
