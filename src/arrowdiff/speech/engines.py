"""Speech synthesis backends for the data builder: flite, festival and sox pitch shifting (R3.2).

Each synthesiser returns a :class:`Synth`: a float32 mono wave at 16 kHz and the phones with their END
times in seconds. flite prints them with ``-psdur`` (``pau:0.164 hh:0.255 ...``); festival writes them with
``utt.save.segs`` (``end_time 100 phone`` lines after a ``#`` line) for a whole batch of sentences per
process (festival takes about a second to start). ``stretch`` slows speech down relative to the voice's
own default (flite ``duration_stretch``, festival ``Duration_Stretch``; ``kal16``, ``kal_diphone`` and
``ked_diphone`` default to 1.1, the others to 1.0). ``pitch_shift`` runs ``sox pitch``, which moves pitch
and formants but keeps the duration, so phone times stay valid.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from arrowdiff.errors import ConfigError
from arrowdiff.speech import wav

SAMPLE_RATE = 16_000
FLITE_VOICES = ("slt", "awb", "kal16", "rms")
FESTIVAL_VOICES = ("kal", "ked")
ENGINES = ("flite", "festival")
FLITE_DEFAULT_STRETCH = {"kal16": 1.1}  # measured: kal16's phones end 1.1x later than duration_stretch=1
_PACKAGES = {"flite": "flite", "festival": "festival festvox-kallpc16k festvox-kdlpc16k", "sox": "sox"}
_TIMEOUT_S = 600


class Synth(NamedTuple):
    """A synthesised sentence: float32 samples at 16 kHz and ``(phone, end_seconds)`` pairs."""

    wave: np.ndarray
    phones: list[tuple[str, float]]


def require_tool(name: str) -> str:
    """Path of the ``name`` binary, or a ConfigError saying which package to install."""
    exe = shutil.which(name)
    if exe is None:
        raise ConfigError(
            f"the speech data builder needs the {name} binary, which is not on PATH: install it with "
            f"`apt-get install {_PACKAGES.get(name, name)}`"
        )
    return exe


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=_TIMEOUT_S)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise ConfigError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {err}")
    return proc.stdout


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    sox = require_tool("sox")
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]
    out = _run([sox, "-D", *raw, "-r", str(rate), "-", *raw, "-r", str(SAMPLE_RATE), "-"], x.tobytes())
    return np.frombuffer(out, dtype=np.float32).copy()


def read_wav(path: Path) -> np.ndarray:
    """An engine's WAV -> float32 mono in [-1, 1] at 16 kHz (sox resamples other rates)."""
    x, rate = wav.read_wav(path)
    return x if rate == SAMPLE_RATE else _resample(x, rate)


def parse_psdur(text: str) -> list[tuple[str, float]]:
    """flite ``-psdur`` output (``pau:0.164 hh:0.255 ...``) -> ``[("pau", 0.164), ("hh", 0.255), ...]``."""
    out = []
    for item in text.split():
        phone, _, end = item.rpartition(":")
        out.append((phone, float(end)))
    return out


def parse_segs(text: str) -> list[tuple[str, float]]:
    """festival ``utt.save.segs`` file -> ``[(phone, end_seconds), ...]`` (lines after the ``#`` line)."""
    lines = text.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "#"), 0)
    out = []
    for line in lines[start:]:
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[2], float(parts[0])))
    return out


def flite_synth(text: str, voice: str, stretch: float = 1.0) -> Synth:
    """Speak ``text`` with flite voice ``voice`` (``slt``, ``awb``, ``kal16``, ``rms``, ...)."""
    exe = require_tool("flite")
    dur = stretch * FLITE_DEFAULT_STRETCH.get(voice, 1.0)
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        path = Path(tmp) / "out.wav"
        setf = f"duration_stretch={dur:.6f}"
        cmd = [exe, "-voice", voice, "--setf", setf, "-psdur", "-t", text, "-o", str(path)]
        phones = parse_psdur(_run(cmd).decode("utf-8", "replace"))
        if not phones or not path.exists():
            raise ConfigError(f"flite (voice {voice}) produced no speech for {text!r}")
        return Synth(read_wav(path), phones)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_synth_batch(texts: list[str], voice: str, stretch: float = 1.0) -> list[Synth]:
    """Speak every sentence of ``texts`` with festival voice ``voice`` (``kal``, ``ked``) in ONE festival
    process; the stretch multiplies the voice's own ``Duration_Stretch``."""
    exe = require_tool("festival")
    if not texts:
        return []
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        d = Path(tmp)
        lines = [
            f"(voice_{voice}_diphone)",
            f"(Parameter.set 'Duration_Stretch (* {stretch:.6f} (Parameter.get 'Duration_Stretch)))",
        ]
        for i, text in enumerate(texts):
            lines += [
                f"(set! u (utt.synth (Utterance Text {_scheme_string(text)})))",
                f"(utt.save.wave u {_scheme_string(str(d / f'{i}.wav'))} 'riff)",
                f"(utt.save.segs u {_scheme_string(str(d / f'{i}.segs'))})",
            ]
        (d / "batch.scm").write_text("\n".join(lines) + "\n", encoding="utf-8")
        log = _run([exe, "-b", str(d / "batch.scm")]).decode("utf-8", "replace")
        out = []
        for i, text in enumerate(texts):
            wav, segs = d / f"{i}.wav", d / f"{i}.segs"
            if not wav.exists() or not segs.exists():
                raise ConfigError(f"festival (voice {voice}) produced no speech for {text!r}: {log[-500:]}")
            out.append(Synth(read_wav(wav), parse_segs(segs.read_text(encoding="utf-8"))))
        return out


def synthesize(engine: str, voice: str, texts: list[str], stretch: float = 1.0) -> list[Synth]:
    """Speak ``texts`` with ``engine`` (``flite`` or ``festival``) and ``voice``."""
    if engine == "flite":
        return [flite_synth(t, voice, stretch) for t in texts]
    if engine == "festival":
        return festival_synth_batch(texts, voice, stretch)
    raise ConfigError(f"unknown speech engine {engine!r}: expected one of {', '.join(ENGINES)}")


def pitch_shift(wave_in: np.ndarray, cents: float) -> np.ndarray:
    """Shift pitch and formants by ``cents`` with ``sox pitch`` at 16 kHz, keeping the sample count
    (sox's output is padded or trimmed to the input length; no dither, so it is deterministic)."""
    x = np.ascontiguousarray(wave_in, dtype=np.float32)
    if cents == 0:
        return x.copy()
    sox = require_tool("sox")
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE)]
    y = np.frombuffer(_run([sox, "-D", *raw, "-", *raw, "-", "pitch", f"{cents:g}"], x.tobytes()), np.float32)
    out = np.zeros_like(x)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out


__all__ = [
    "SAMPLE_RATE",
    "ENGINES",
    "FLITE_VOICES",
    "FESTIVAL_VOICES",
    "Synth",
    "require_tool",
    "read_wav",
    "parse_psdur",
    "parse_segs",
    "flite_synth",
    "festival_synth_batch",
    "synthesize",
    "pitch_shift",
]
