"""Frozen configuration dataclasses, one per component, and the named presets.

Every field is validated in ``__post_init__``; a bad value raises ``ConfigError`` naming the value, the
allowed range and the fix. Configs round-trip through plain dicts so they live inside ``metadata.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from arrowdiff.errors import ConfigError

# Modality ids are part of the weight format: never renumber, only append.
MODALITIES: tuple[str, ...] = ("text", "code", "image", "audio")
# Conditioners a model may carry: each turns an external signal into cross-attention context tokens.
CONDITIONERS: tuple[str, ...] = ("memory", "caption", "speaker")
MEMORY_EMBED_DIM = 384  # MiniLM sentence embeddings key the memory store
SPEAKER_EMBED_DIM = 192  # the voice model's speaker embedding (reference audio -> one vector)
CONDITIONER_EMBED_DIMS = {
    "memory": MEMORY_EMBED_DIM,
    "caption": MEMORY_EMBED_DIM,
    "speaker": SPEAKER_EMBED_DIM,
}


def modality_id(name: str) -> int:
    """Return the embedding index of a modality name."""
    if name not in MODALITIES:
        raise ConfigError(f"unknown modality {name!r}: expected one of {', '.join(MODALITIES)}")
    return MODALITIES.index(name)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class BackboneConfig:
    """The shared transformer score network (R4)."""

    dim: int = 384  # D, width of every token
    num_layers: int = 8  # transformer blocks
    num_heads: int = 6  # attention heads; dim must divide evenly
    mlp_dim: int = 1024  # SwiGLU hidden width
    cond_dim: int = 384  # width of cross-attention context tokens (MiniLM embeddings are 384-d)
    time_dim: int = 256  # width of the sinusoidal time embedding and of the adaLN conditioning
    num_modalities: int = 8  # rows of the modality embedding table (room for later heads)
    max_seq_len: int = 4096  # longest sequence RoPE tables are built for
    rope_base: float = 10000.0  # RoPE frequency base (Su et al. 2021)

    def __post_init__(self) -> None:
        for f in ("dim", "num_layers", "num_heads", "mlp_dim", "cond_dim", "time_dim", "max_seq_len"):
            _check(getattr(self, f) >= 1, f"BackboneConfig.{f}={getattr(self, f)} must be >= 1")
        _check(
            self.dim % self.num_heads == 0 and (self.dim // self.num_heads) % 2 == 0,
            f"BackboneConfig.dim={self.dim} must be divisible by num_heads={self.num_heads} into an even "
            "head width (RoPE rotates pairs); pick e.g. dim=384, num_heads=6",
        )
        _check(self.time_dim % 2 == 0, f"BackboneConfig.time_dim={self.time_dim} must be even")
        _check(self.num_modalities >= len(MODALITIES), f"num_modalities must be >= {len(MODALITIES)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class TextHeadConfig:
    """Token embedding + output projection for text and code (they share the tokenizer)."""

    vocab_size: int = 4096  # V, includes the <pad>, <mask>, <eot> specials
    mask_id: int = 1  # id of <mask>: the absorbing state of masked diffusion
    pad_id: int = 0
    eot_id: int = 2

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 8, f"TextHeadConfig.vocab_size={self.vocab_size} must be >= 8")
        for f in ("mask_id", "pad_id", "eot_id"):
            v = getattr(self, f)
            _check(0 <= v < self.vocab_size, f"TextHeadConfig.{f}={v} outside [0, {self.vocab_size})")


@dataclass(frozen=True)
class ImageHeadConfig:
    """Image head over VAE latents: patch size, latent channels and the training latent size."""

    latent_channels: int = 4  # channels of the VAE latent
    patch: int = 1  # p x p latent patches per backbone token
    latent_size: int = 8  # h = w of training latents (64x64 pixels through an 8x VAE)
    downsample: int = 8  # VAE pixel/latent ratio (pixels = latent_size * downsample)

    def __post_init__(self) -> None:
        for f in ("latent_channels", "patch", "latent_size", "downsample"):
            _check(getattr(self, f) >= 1, f"ImageHeadConfig.{f}={getattr(self, f)} must be >= 1")
        _check(
            self.latent_size % self.patch == 0,
            f"ImageHeadConfig.latent_size={self.latent_size} must be a multiple of patch={self.patch}",
        )

    @property
    def image_size(self) -> int:
        return self.latent_size * self.downsample


@dataclass(frozen=True)
class AudioHeadConfig:
    """Audio head over log-mel frames (16 kHz, hop 256: 62.5 frames/s) with frame-aligned phones."""

    n_mels: int = 80
    frames_per_token: int = 2  # mel frames per backbone token (31.25 tokens per second)
    num_phones: int = 64  # rows of the phone tables (arrowdiff.speech.phones has 48; room to append)
    mel_mean: float = -5.5  # log-mel normalisation: x = (log_mel - mean) / std
    mel_std: float = 2.2
    sample_rate: int = 16_000
    hop: int = 256
    crop_frames: int = 256  # training window (4.1 s); shorter utterances are padded with silence

    def __post_init__(self) -> None:
        for f in ("n_mels", "frames_per_token", "num_phones", "sample_rate", "hop", "crop_frames"):
            _check(getattr(self, f) >= 1, f"AudioHeadConfig.{f}={getattr(self, f)} must be >= 1")
        _check(self.mel_std > 0, f"AudioHeadConfig.mel_std={self.mel_std} must be > 0")
        _check(
            self.crop_frames % self.frames_per_token == 0,
            f"AudioHeadConfig.crop_frames={self.crop_frames} must be a multiple of frames_per_token",
        )


@dataclass(frozen=True)
class VoiceConfig:
    """The speech front end beside the score network: reference encoder and duration predictor."""

    channels: int = 256  # reference encoder width
    embed_dim: int = SPEAKER_EMBED_DIM  # speaker embedding (input of the speaker conditioner)
    duration_channels: int = 192  # duration predictor width
    reference_frames: int = 160  # reference crop in training (2.6 s; any length >= 32 frames at inference)
    voices: tuple[str, ...] = ()  # built-in voice ids, rows of the stored voice table

    def __post_init__(self) -> None:
        for f in ("channels", "embed_dim", "duration_channels", "reference_frames"):
            _check(getattr(self, f) >= 1, f"VoiceConfig.{f}={getattr(self, f)} must be >= 1")
        object.__setattr__(self, "voices", tuple(self.voices))


@dataclass(frozen=True)
class ScheduleConfig:
    """Noise schedule used in training and, by default, in sampling (R11, R15.3)."""

    discrete: str = "loglinear"  # masking schedule: loglinear | linear | cosine
    continuous: str = "cosine"  # Gaussian schedule for image/audio latents
    num_train_steps: int = 0  # 0 = continuous time (MDLM); >0 = that many discrete training levels
    num_inference_steps: int = 64  # default sampler step count
    eps: float = 1e-3  # smallest t drawn in training: avoids the 1/t blow-up of the NELBO weight

    def __post_init__(self) -> None:
        from arrowdiff.schedules import DISCRETE_SCHEDULES, GAUSSIAN_SCHEDULES

        _check(
            self.discrete in DISCRETE_SCHEDULES,
            f"ScheduleConfig.discrete={self.discrete!r}: expected one of {sorted(DISCRETE_SCHEDULES)}",
        )
        _check(
            self.continuous in GAUSSIAN_SCHEDULES,
            f"ScheduleConfig.continuous={self.continuous!r}: expected one of {sorted(GAUSSIAN_SCHEDULES)}",
        )
        _check(self.num_train_steps >= 0, "ScheduleConfig.num_train_steps must be >= 0")
        _check(self.num_inference_steps >= 1, "ScheduleConfig.num_inference_steps must be >= 1")
        _check(0.0 < self.eps < 0.5, f"ScheduleConfig.eps={self.eps} must be in (0, 0.5)")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model: backbone, heads, schedule and training objective."""

    backbone: BackboneConfig = BackboneConfig()
    text: TextHeadConfig = TextHeadConfig()
    image: ImageHeadConfig = ImageHeadConfig()
    audio: AudioHeadConfig = AudioHeadConfig()
    voice: VoiceConfig = VoiceConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    objective: str = "mdlm"  # mdlm (masked diffusion) | ar (causal baseline, same backbone)
    modalities: tuple[str, ...] = ("text", "code")  # heads this model carries
    conditioners: tuple[str, ...] = ()  # e.g. ("memory",): cross-attention conditioners it carries

    def __post_init__(self) -> None:
        _check(self.objective in ("mdlm", "ar"), f"objective={self.objective!r}: expected 'mdlm' or 'ar'")
        for m in self.modalities:
            modality_id(m)
        for c in self.conditioners:
            _check(
                c in CONDITIONERS, f"conditioner {c!r} is unknown: expected one of {', '.join(CONDITIONERS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["conditioners"] = list(self.conditioners)
        d["voice"]["voices"] = list(self.voice.voices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        def build(kind: type, sub: dict[str, Any]) -> Any:
            known = {f.name for f in fields(kind)}
            unknown = set(sub) - known
            if unknown:
                raise ConfigError(
                    f"unknown {kind.__name__} keys {sorted(unknown)}: the file is newer "
                    "than this arrowdiff; upgrade the package"
                )
            return kind(**sub)

        return cls(
            backbone=build(BackboneConfig, d.get("backbone", {})),
            text=build(TextHeadConfig, d.get("text", {})),
            image=build(ImageHeadConfig, d.get("image", {})),
            audio=build(AudioHeadConfig, d.get("audio", {})),
            voice=build(VoiceConfig, d.get("voice", {})),
            schedule=build(ScheduleConfig, d.get("schedule", {})),
            objective=d.get("objective", "mdlm"),
            modalities=tuple(d.get("modalities", ("text", "code"))),
            conditioners=tuple(d.get("conditioners", ())),
        )


# ---- presets: plain named functions -------------------------------------------------------------------


def preset_tiny(vocab_size: int = 4096) -> ModelConfig:
    """2 layers, width 32: for tests and smoke runs (seconds on CPU)."""
    return ModelConfig(
        backbone=BackboneConfig(dim=32, num_layers=2, num_heads=2, mlp_dim=64, cond_dim=32, time_dim=32),
        text=TextHeadConfig(vocab_size=vocab_size),
        audio=AudioHeadConfig(crop_frames=64),
        voice=VoiceConfig(channels=32, duration_channels=32, reference_frames=48),
    )


def preset_mini(vocab_size: int = 4096) -> ModelConfig:
    """~2M parameters, width 128: for CPU ablations that must train in minutes."""
    return ModelConfig(
        backbone=BackboneConfig(dim=128, num_layers=4, num_heads=4, mlp_dim=352, cond_dim=128, time_dim=64),
        text=TextHeadConfig(vocab_size=vocab_size),
    )


def preset_small(vocab_size: int = 4096) -> ModelConfig:
    """~12M parameters: trains on a 2-core CPU in a few hours."""
    return ModelConfig(
        backbone=BackboneConfig(dim=256, num_layers=8, num_heads=4, mlp_dim=704, cond_dim=384, time_dim=128),
        text=TextHeadConfig(vocab_size=vocab_size),
    )


def preset_base(vocab_size: int = 4096) -> ModelConfig:
    """~25M parameters: the shipped default (trained on one GPU in minutes, same command as CPU)."""
    return ModelConfig(backbone=BackboneConfig(), text=TextHeadConfig(vocab_size=vocab_size))


def preset_workstation(vocab_size: int = 4096) -> ModelConfig:
    """~350M parameters: the R1.7/R7.3 latency size (random init for latency unless trained)."""
    return ModelConfig(
        backbone=BackboneConfig(
            dim=1024, num_layers=20, num_heads=16, mlp_dim=2816, cond_dim=384, time_dim=256
        ),
        text=TextHeadConfig(vocab_size=vocab_size),
    )


PRESETS = {
    "tiny": preset_tiny,
    "mini": preset_mini,
    "small": preset_small,
    "base": preset_base,
    "workstation": preset_workstation,
}


def get_preset(name: str, vocab_size: int = 4096) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name](vocab_size)
