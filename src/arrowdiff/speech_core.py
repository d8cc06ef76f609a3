"""SpeechCore: text-to-speech by latent Gaussian (flow) diffusion on the shared backbone (R3, R12.7).

Data flow: text -> phones (flite's lexicon and letter-to-sound rules) -> speaker embedding (a built-in
voice, or the reference encoder over >= 1 s of reference audio: zero-shot cloning) -> frames per phone
(duration predictor) -> phones repeated per frame -> the start of the flow: N(0, I) mel frames at t = 1,
or, when the model carries a mel prior, shallow diffusion (DiffSinger, Liu et al. 2022) from the noised
prior mel at t = ``start_time`` -> Euler flow sampler with the audio head + speaker conditioner on the
SAME backbone as text and images (classifier-free guidance on the speaker, batched) -> log-mel ->
neural vocoder -> 16 kHz float32 waveform.
Each stage is a method of its own so benchmarks can time them apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from arrowdiff.errors import ConfigError
from arrowdiff.network.heads.audio import frame_phones
from arrowdiff.network.model import UnifiedModel
from arrowdiff.samplers import initial_noise, sample_euler
from arrowdiff.schedules import timesteps
from arrowdiff.speech.mel import MelConfig, log_mel
from arrowdiff.speech.phones import phone_ids, text_to_phones
from arrowdiff.speech.prior import MelPrior
from arrowdiff.speech.voice_match import match_statistics, mel_statistics
from arrowdiff.speech.wav import read_wav, write_wav

ReferenceAudio = str | Path | np.ndarray | tuple  # a WAV path, (wave, sample_rate) or a 16 kHz array
MIN_REFERENCE_S = 1.0  # shortest reference accepted (5 s recommended)
MAX_FRAMES = 2048  # 32 s of speech per call
SHALLOW_START = 0.1  # default start of shallow diffusion from the mel prior (benchmarks/tts_quality.py)


class Speech(NamedTuple):
    """A mono float32 waveform in [-1, 1] and its sample rate (unpacks as ``wave, sr = speech``)."""

    waveform: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class SpeechOptions:
    """How to sample speech; validated once for every entry point."""

    num_steps: int = 16  # steps of the whole path from t = 1; from start_time k: ceil(k * num_steps)
    guidance_scale: float = 1.5  # classifier-free guidance on the speaker: 1 = off, 0 = no speaker
    pace: float = 1.0  # > 1 speaks slower (scales the predicted durations)
    spacing: str = "uniform"
    start_time: float | None = None  # shallow diffusion from the mel prior at this t (None: the model's)
    voice_match: float = 1.0  # cloning: AdaIN strength toward the reference's mel statistics (0 = off)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.num_steps, int)
            or isinstance(self.num_steps, bool)
            or not 1 <= self.num_steps <= 1000
        ):
            raise ConfigError(f"num_steps={self.num_steps!r} must be an integer in [1, 1000] (try 8 or 16)")
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise ConfigError(f"guidance_scale={self.guidance_scale} must be in [0, 20] (1 = no guidance)")
        if not 0.25 <= self.pace <= 4.0:
            raise ConfigError(f"pace={self.pace} must be in [0.25, 4] (1 = the voice's own pace)")
        if self.start_time is not None and not 0.0 <= self.start_time <= 1.0:
            raise ConfigError(
                f"start_time={self.start_time} must be in [0, 1] (1 = from pure noise, 0 = the prior alone)"
            )
        if not 0.0 <= self.voice_match <= 1.0:
            raise ConfigError(f"voice_match={self.voice_match} must be in [0, 1] (0 = off, 1 = full match)")


def check_reference(wave: np.ndarray, sample_rate: int, expected_rate: int) -> np.ndarray:
    """Validate reference audio for voice cloning: rate, length, silence. Returns float32 mono."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] <= 8 else x.mean(axis=0)
    if x.ndim != 1:
        raise ConfigError(f"reference audio of shape {np.shape(wave)}: expected mono (N,) samples")
    if sample_rate != expected_rate:
        raise ConfigError(
            f"reference audio is at {sample_rate} Hz; the model takes {expected_rate} Hz: resample it "
            f"(e.g. `sox in.wav -r {expected_rate} out.wav`)"
        )
    if not np.isfinite(x).all():
        raise ConfigError("reference audio contains NaN or infinite samples")
    seconds = len(x) / sample_rate
    if seconds < MIN_REFERENCE_S:
        raise ConfigError(
            f"reference audio is {seconds:.2f} s long: voice cloning needs at least {MIN_REFERENCE_S:.0f} s "
            "(5 s recommended) of the voice speaking"
        )
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms < 1e-3:
        raise ConfigError(
            f"reference audio is silent (RMS {rms:.1e}): record or pass the voice speaking (5 s recommended)"
        )
    return x


class SpeechCore:
    """Speaks with one UnifiedModel (audio head, speaker conditioner, voice model), its vocoder and, when
    it has one, its mel prior (then sampling starts at ``start_time``, :data:`SHALLOW_START` by default)."""

    def __init__(
        self, model: UnifiedModel, vocoder: Callable[[Tensor], Tensor], prior: MelPrior | None = None
    ) -> None:
        if model.voice is None or "audio" not in model.heads:
            raise ConfigError("this model has no audio head: it was not trained for speech (--speech)")
        self.model = model.eval()
        self.vocoder = vocoder
        self.prior = prior.eval() if prior is not None else None
        self.cfg = model.cfg.audio
        self.mel_cfg = MelConfig(sample_rate=self.cfg.sample_rate, hop=self.cfg.hop, n_mels=self.cfg.n_mels)

    def voices(self) -> list[str]:
        return list(self.model.cfg.voice.voices)

    def phonemes(self, text: str) -> list[int]:
        """Text -> phone ids (with pauses at the ends and at punctuation)."""
        ids = phone_ids(text_to_phones(text))
        if len(ids) > MAX_FRAMES // 4:
            raise ConfigError(f"text of {len(ids)} phones is too long for one call: split it into sentences")
        return ids

    def reference_mel(self, reference: ReferenceAudio) -> Tensor:
        """Log-mel (n_mels, F) of reference audio (a WAV path, (wave, sr), or a 16 kHz array), checked
        and brought to the training loudness (-20 dBFS)."""
        if isinstance(reference, (str, Path)):
            wave, sr = read_wav(reference)
        elif isinstance(reference, tuple):
            wave, sr = reference
        else:
            wave, sr = reference, self.cfg.sample_rate
        x = check_reference(wave, int(sr), self.cfg.sample_rate)
        x = x / max(1e-4, float(np.sqrt(np.mean(x**2)))) * 0.1
        return log_mel(np.clip(x, -1, 1), self.mel_cfg)

    @torch.inference_mode()
    def speaker(
        self,
        voice_id: str | None = None,
        reference: ReferenceAudio | None = None,
        reference_mel: Tensor | None = None,
    ) -> Tensor:
        """(1, E) speaker embedding: from ``reference`` audio (a WAV path, (wave, sr), or a 16 kHz
        array) or its ``reference_mel`` when given, else the built-in ``voice_id`` (default: the first
        built-in voice)."""
        if reference is not None or reference_mel is not None:
            if voice_id is not None:
                raise ConfigError("pass either voice_id or reference_audio, not both")
            mel = self.reference_mel(reference) if reference_mel is None else reference_mel
            head = self.model.head("audio")
            dtype = next(self.model.voice.parameters()).dtype
            return self.model.voice.embed_reference(head.normalize(mel[None]).to(dtype)).float()
        voices = self.voices()
        if not voices:
            raise ConfigError("this model has no built-in voices: pass reference_audio")
        return self.model.voice.voice(voice_id or voices[0]).float()

    @torch.inference_mode()
    def durations(self, phones: list[int], speaker: Tensor, pace: float = 1.0) -> Tensor:
        """Frames per phone (P,), at least one each."""
        ph = torch.tensor([phones], dtype=torch.long)
        return self.model.voice.predict_durations(ph, speaker, pace)[0]

    @torch.inference_mode()
    def sample_mel(
        self,
        phones: list[int],
        durations: Tensor,
        speaker: Tensor,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        spacing: str = "uniform",
        progress: bool = False,
        start_time: float | None = None,
    ) -> Tensor:
        """Log-mel (n_mels, F) for the phones at the given durations, in the speaker's voice (``None``
        options take the :class:`SpeechOptions` defaults; ``start_time`` k < 1 starts from the mel prior
        noised to that time and runs ceil(k * num_steps) Euler steps, DiffSinger's k of T steps; 0 returns
        the prior's mel itself)."""
        opts = SpeechOptions(
            num_steps=SpeechOptions.num_steps if num_steps is None else num_steps,
            guidance_scale=SpeechOptions.guidance_scale if guidance_scale is None else guidance_scale,
            start_time=start_time,
        )
        num_steps, guidance_scale = opts.num_steps, opts.guidance_scale
        start = self.start_time(opts.start_time)
        k = self.cfg.frames_per_token
        total = int(durations.sum())
        F = min(MAX_FRAMES, -(-total // k) * k)
        per_frame = frame_phones(torch.tensor(phones), durations, F)[None]
        x = initial_noise((1, F, self.cfg.n_mels), generator)
        if start < 1.0:  # shallow diffusion: x_k = (1 - k) prior + k eps on the flow path
            assert self.prior is not None
            ph = torch.tensor([phones], dtype=torch.long)
            prior = self.prior(ph, durations[None].long(), speaker.to(ph.device), F)
            if start == 0.0:
                return self.model.head("audio").denormalize(prior[0]).T.float()
            x = (1.0 - start) * prior + start * x
        spk = speaker[:, None, :]
        model = self.model

        def v(x: Tensor, t: Tensor) -> Tensor:
            if guidance_scale == 1.0:
                return model(x, t, "audio", phones=per_frame, speaker=spk)
            if guidance_scale == 0.0:
                return model(x, t, "audio", phones=per_frame)
            mask = torch.tensor([[True], [False]])
            out = model(
                torch.cat([x, x]),
                torch.cat([t, t]),
                "audio",
                phones=per_frame.expand(2, -1),
                speaker=spk.expand(2, -1, -1),
                speaker_mask=mask,
            )
            return out[1:] + guidance_scale * (out[:1] - out[1:])

        num_steps = max(1, math.ceil(num_steps * start - 1e-9))  # the same step size as from t = 1
        times = timesteps(num_steps, spacing, t_max=start).float()
        bar = tqdm(total=num_steps, disable=not progress, desc="diffuse speech", leave=False)
        mel = sample_euler(v, x, times, callback=lambda i, x: bar.update(1))
        bar.close()
        return self.model.head("audio").denormalize(mel[0]).T.float()

    def start_time(self, requested: float | None = None) -> float:
        """Where sampling starts: ``requested``, else :data:`SHALLOW_START` with a mel prior and 1 without."""
        if requested is None:
            return SHALLOW_START if self.prior is not None else 1.0
        if requested < 1.0 and self.prior is None:
            raise ConfigError(
                f"start_time={requested}: this model has no mel prior, so speech diffusion starts from "
                "pure noise (start_time=1); attach one trained by python -m arrowdiff.speech.train_prior"
            )
        return float(requested)

    @torch.inference_mode()
    def vocode(self, mel: Tensor) -> np.ndarray:
        """Log-mel (n_mels, F) -> float32 waveform."""
        wave = self.vocoder(mel[None].float())[0]
        return wave.clamp(-1, 1).cpu().numpy().astype(np.float32)

    def speak_mel(
        self,
        text: str,
        opts: SpeechOptions,
        voice_id: str | None = None,
        reference: ReferenceAudio | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """The log-mel (n_mels, F) that :meth:`speak` vocodes."""
        phones = self.phonemes(text)
        ref_mel = None if reference is None else self.reference_mel(reference)
        spk = self.speaker(voice_id, reference_mel=ref_mel)
        dur = self.durations(phones, spk, opts.pace)
        g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        mel = self.sample_mel(
            phones, dur, spk, opts.num_steps, opts.guidance_scale, g, opts.spacing, progress, opts.start_time
        )
        if ref_mel is not None and opts.voice_match > 0.0:
            mel = match_statistics(mel, mel_statistics(ref_mel), opts.voice_match)
        return mel

    def speak(
        self,
        text: str,
        opts: SpeechOptions,
        voice_id: str | None = None,
        reference: ReferenceAudio | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> Speech:
        mel = self.speak_mel(text, opts, voice_id, reference, seed, progress)
        return Speech(self.vocode(mel), self.cfg.sample_rate)


__all__ = ["Speech", "SpeechCore", "SpeechOptions", "check_reference", "read_wav", "write_wav"]
