"""Vocoder fine-tuning on the model's own mels (HiFi-GAN section 4.4): the predicted mels are frame-aligned
with the real audio, swapped in for the input of the chosen rows only, and a run trains with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from arrowdiff.speech.dataset import SpeechSet
from arrowdiff.speech.mel import log_mel
from arrowdiff.speech.predicted_mels import main as predict_main
from arrowdiff.speech.predicted_mels import predicted_mel_path
from arrowdiff.speech.vocoder_data import PredictedMels, SegmentSampler, load_wave_split


@pytest.fixture(scope="module")
def predicted_folder(speech_run: Path, speech_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predicted") / "speech"
    shutil.copytree(speech_folder, folder)
    argv = ["--model", str(speech_run / "model"), "--data", str(folder), "--split", "train", "--threads", "1"]
    assert predict_main(argv) == 0
    return folder


def test_predicted_mels_cover_every_frame_of_the_split(predicted_folder: Path, speech_run: Path) -> None:
    data = SpeechSet.load(predicted_folder, "train")
    mels = np.load(predicted_mel_path(predicted_folder, "train"))
    assert mels.dtype == np.float16 and mels.shape == (int(data.index["n_frames"].sum()), 80)
    assert np.isfinite(mels).all()
    assert not (mels == 0).all(axis=1).any()  # every frame was written (0 would be a loud frame)
    record = json.loads(predicted_mel_path(predicted_folder, "train").with_suffix(".json").read_text())
    assert record["utterances"] == len(data) and sum(record["speaker_inputs"].values()) == len(data)
    assert record["model"] == str(speech_run / "model")


def test_mix_lines_up_with_the_crops(predicted_folder: Path, tmp_path: Path) -> None:
    """With the split's own real mels stored as the "predicted" ones, a fully mixed batch must equal the
    crops' own mels (up to the uint8 storage and the crops' edge frames): frame alignment is exact."""
    folder = tmp_path / "speech"
    shutil.copytree(predicted_folder, folder)
    data = SpeechSet.load(folder, "train")
    real = np.concatenate([data.mel(i).T for i in range(len(data))]).astype(np.float16)
    np.save(predicted_mel_path(folder, "train"), real, allow_pickle=False)
    pred = PredictedMels(folder, "train", 256, 80, "cpu")
    sampler = SegmentSampler(load_wave_split(folder, "train"), 2048, 256, "cpu")
    x, utt, rel = sampler.sample_positions(8, torch.Generator().manual_seed(1))
    mel = log_mel(x)
    mixed = pred.mix(mel, utt, rel, 1.0, torch.Generator())
    interior = slice(2, mel.shape[-1] - 2)
    loud = mel[:, :, interior] > -9  # the uint8 storage is coarse near the floor
    err = (mixed[:, :, interior] - mel[:, :, interior]).abs()[loud]
    assert err.median() < 0.05 and err.quantile(0.95) < 0.3
    shifted = pred.mix(mel, utt, rel + 256, 1.0, torch.Generator())  # one frame off: clearly worse
    assert (shifted[:, :, interior] - mel[:, :, interior]).abs()[loud].median() > 3 * err.median()
    half = pred.mix(mel, utt, rel, 0.5, torch.Generator().manual_seed(3))
    again = pred.mix(mel, utt, rel, 0.5, torch.Generator().manual_seed(3))
    kept = [b for b in range(8) if torch.equal(half[b], mel[b])]
    assert torch.equal(half, again) and 0 < len(kept) < 8


def test_mix_swaps_aligned_frames_of_the_chosen_rows(predicted_folder: Path) -> None:
    data = SpeechSet.load(predicted_folder, "train")
    pred = PredictedMels(predicted_folder, "train", 256, 80, "cpu")
    sampler = SegmentSampler(load_wave_split(predicted_folder, "train"), 2048, 256, "cpu")
    x, utt, rel = sampler.sample_positions(6, torch.Generator().manual_seed(0))
    mel = log_mel(x)
    assert torch.equal(pred.mix(mel, utt, rel, 0.0, torch.Generator()), mel)
    mixed = pred.mix(mel, utt, rel, 1.0, torch.Generator())
    mels = np.load(predicted_mel_path(predicted_folder, "train"))
    for b in range(6):
        u, start = int(utt[b]), int(rel[b]) // 256
        n = int(data.index["n_frames"][u])
        inside = min(mel.shape[-1], n - start)
        o = int(data.index["mel_offset"][u]) + start
        want = torch.from_numpy(mels[o : o + inside].astype(np.float32)).T
        assert torch.equal(mixed[b, :, :inside], want)
        assert torch.equal(mixed[b, :, inside:], mel[b, :, inside:])  # the crop's padding stays real


def test_training_with_predicted_mels(
    predicted_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arrowdiff.speech.train_vocoder import main

    tiny = ["--dim", "16", "--intermediate", "32", "--layers", "1", "--batch-size", "2", "--segment", "2048"]
    tiny += ["--threads", "1", "--warmup", "1", "--eval-every", "2", "--log-every", "1", "--gl-iters", "2"]
    out = tmp_path / "run"
    args = ["--data", str(predicted_folder), "--out", str(out), "--steps", "2", "--samples", "0", *tiny]
    assert main([*args, "--predicted-mel-p", "0.5"]) == 0
    meta = json.loads((out / "model" / "metadata.json").read_text())["vocoder"]["training"]
    assert meta["predicted_mel_p"] == 0.5
    missing = tmp_path / "nopred"
    shutil.copytree(predicted_folder, missing)
    predicted_mel_path(missing, "train").unlink()
    assert main(["--data", str(missing), "--out", str(tmp_path / "r2"), "--steps", "1", *tiny,
                 "--predicted-mel-p", "1"]) == 2  # fmt: skip
    assert "train_predicted_mel.npy is missing" in capsys.readouterr().err
