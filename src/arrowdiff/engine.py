"""ArrowEngine: the public entry point (R12). It routes requests to DiffusionCore (``diffuse``,
``mode="diffusion"``) or to the autoregressive InferenceCore (``generate(mode="ar")``), and validates
the parameters common to both modes in one place (R17.5)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from arrowdiff.ar_core import stream_autoregressive
from arrowdiff.config import MODALITIES
from arrowdiff.diffusion_core import DiffusionCore, SamplingOptions
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.loading import LoadedModel, load_model

TOKEN_MODALITIES = ("text", "code")


@dataclass(frozen=True)
class CommonParams:
    """Parameters that mean the same in both modes (R17.5)."""

    max_length: int
    temperature: float
    seed: int | None

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length < 1:
            raise ConfigError(f"length={self.max_length!r} must be an integer >= 1")
        if self.max_length > 4096:
            raise ConfigError(f"length={self.max_length} is absurd for these models; use at most 4096 tokens")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError(f"temperature={self.temperature} must be in [0, 5] (0 = greedy)")
        if self.seed is not None and not (isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer or None")


class ArrowEngine:
    """Loads models and serves ``diffuse`` (diffusion) and ``generate`` (AR or diffusion) requests.

    A diffusion model and an AR model can be loaded side by side (R17.2).
    """

    def __init__(self, diffusion: LoadedModel | None = None, ar: LoadedModel | None = None) -> None:
        if diffusion is None and ar is None:
            raise ConfigError("ArrowEngine needs at least one model; use ArrowEngine.from_pretrained()")
        self.diffusion = diffusion
        self.ar = ar
        self._core = (
            DiffusionCore(diffusion.model, diffusion.tokenizer, diffusion.context_length)
            if diffusion is not None
            else None
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        ar_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> ArrowEngine:
        """Load a model directory (default: the shipped model). ``model_type`` in its metadata.json
        decides whether it serves diffusion or AR; ``ar_path`` adds an AR model beside it."""
        if threads:
            torch.set_num_threads(threads)
        first = load_model(path)
        engine_models: dict[str, LoadedModel] = {}
        engine_models["ar" if first.model.cfg.objective == "ar" else "diffusion"] = first
        if ar_path is not None:
            second = load_model(ar_path)
            if second.model.cfg.objective != "ar":
                raise ConfigError(f"ar_path={str(ar_path)!r} is a diffusion model, not an AR model")
            engine_models["ar"] = second
        return cls(**engine_models)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.diffusion.model.cfg.modalities) if self.diffusion else ()

    def diffuse(
        self,
        prompt: str = "",
        modality: str = "text",
        num_steps: int | None = None,
        guidance_scale: float = 1.0,
        memory_guided: bool = False,
        seed: int | None = None,
        length: int = 64,
        suffix: str | None = None,
        temperature: float = 1.0,
        sampler: str = "confidence",
        confidence_noise: float = 3.0,
        block_size: int = 0,
        spacing: str = "uniform",
        progress: bool = False,
    ) -> str:
        """Generate with the diffusion model (R12.3). Text and code return a decoded string (R12.5).

        ``suffix`` turns the call into infilling: ``prompt`` and ``suffix`` are kept exactly and the
        returned string is the ``length``-token middle (R1.4)."""
        if modality not in MODALITIES:
            raise ModalityError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
        if self._core is None or self.diffusion is None:
            raise ConfigError("no diffusion model is loaded in this engine")
        if modality not in self.modalities:
            raise ModalityError(
                f"modality {modality!r} is not supported by the loaded model "
                f"({self.diffusion.path.name}: {', '.join(self.modalities)})"
            )
        if memory_guided:
            raise ConfigError(
                "memory_guided=True needs an ArrowStorage memory store, which this engine has none of"
            )
        common = CommonParams(length, temperature, seed)
        opts = SamplingOptions(
            num_steps=num_steps
            if num_steps is not None
            else self.diffusion.model.cfg.schedule.num_inference_steps,
            sampler=sampler,
            temperature=temperature,
            guidance_scale=guidance_scale,
            block_size=block_size,
            confidence_noise=confidence_noise,
            spacing=spacing,
        )
        return self._core.generate(prompt, modality, common.max_length, opts, common.seed, suffix, progress)

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """AR generation as an iterator of text pieces (R12.1)."""
        if self.ar is None:
            raise ConfigError("mode='ar' needs an autoregressive model: pass ar_path= to from_pretrained()")
        common = CommonParams(max_new_tokens, temperature, seed)
        tok = self.ar.tokenizer
        gen = torch.Generator().manual_seed(common.seed if common.seed is not None else torch.seed() % 2**63)
        ids: list[int] = []
        text_so_far = ""
        for nxt in stream_autoregressive(
            self.ar.model,
            tok.encode(prompt),
            common.max_length,
            "text",
            temperature,
            top_k,
            top_p,
            self.ar.context_length,
            gen,
            banned_ids=(tok.pad_id, tok.mask_id),
        ):
            if nxt == tok.eot_id:
                break
            ids.append(nxt)
            text = tok.decode(ids)
            yield text[len(text_so_far) :]
            text_so_far = text

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        mode: str = "ar",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        **diffusion_kwargs: object,
    ) -> str:
        """Text continuation: ``mode="ar"`` uses InferenceCore, ``mode="diffusion"`` DiffusionCore (R12.2)."""
        if mode == "diffusion":
            return self.diffuse(
                prompt, "text", length=max_new_tokens, temperature=temperature, seed=seed, **diffusion_kwargs
            )  # type: ignore[arg-type]
        if mode != "ar":
            raise ConfigError(f"mode={mode!r}: expected 'ar' or 'diffusion'")
        return "".join(self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed))
