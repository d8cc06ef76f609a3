"""DiffusionCore: text and code by masked diffusion, from prompt to decoded string (R1, R12.5).

Data flow: prompt/suffix -> token ids -> x = [prefix | <mask> * length | suffix] -> denoiser (+ guidance
wrappers) -> DiscreteSampler -> ids -> text. Code goes through exactly the same process (R1.6); only the
head differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from arrowdiff.ar_core import filter_logits
from arrowdiff.errors import ConfigError
from arrowdiff.guidance import classifier_free, prompt_dropped
from arrowdiff.network.denoiser import Cond, Denoiser, MaskedDenoiser
from arrowdiff.network.model import UnifiedModel
from arrowdiff.samplers import SAMPLERS, sample_blocks
from arrowdiff.schedules import get_mask_schedule, timesteps
from arrowdiff.tokenizer import TextTokenizer

MAX_LENGTH = 4096


def forbid_tokens(denoiser: Denoiser, token_ids: list[int]) -> Denoiser:
    """Wrap a denoiser so the given tokens are never proposed for masked positions."""

    def wrapped(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        logp = denoiser(x_t, t, cond)
        masked = torch.isfinite(logp).sum(-1, keepdim=True) > 1  # carried-over rows are one-hot
        banned = torch.zeros(logp.shape[-1], dtype=torch.bool, device=logp.device)
        banned[token_ids] = True
        logp = torch.where(masked & banned, torch.full_like(logp, float("-inf")), logp)
        return torch.log_softmax(logp, dim=-1)

    return wrapped


def with_cond(denoiser: Denoiser, cond: Cond) -> Denoiser:
    """Bind a fixed conditioning (e.g. retrieved memories) to a denoiser."""

    def wrapped(x_t: Tensor, t: Tensor, _: Cond | None = None) -> Tensor:
        return denoiser(x_t, t, cond)

    return wrapped


def filter_denoiser(denoiser: Denoiser, top_k: int = 0, top_p: float = 1.0) -> Denoiser:
    """Wrap a denoiser so each position's token distribution is cut to its top-k / top-p (nucleus) set,
    exactly as the AR path filters next-token logits (R17.5: the parameters mean the same in both modes)."""
    if top_k <= 0 and top_p >= 1.0:
        return denoiser

    def wrapped(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        return torch.log_softmax(filter_logits(denoiser(x_t, t, cond), top_k, top_p), dim=-1)

    return wrapped


@dataclass(frozen=True)
class SamplingOptions:
    """How to run the reverse process; validated once for every entry point (API, CLI, server)."""

    num_steps: int = 64
    sampler: str = "confidence"  # confidence | ancestral
    temperature: float = 1.0  # token sampling temperature (0 = argmax)
    # Gumbel noise scale on the confidence ranking (confidence sampler only). Measured on the shipped
    # model (32 steps, 4 x 64 tokens): noise 1 -> distinct bigrams 0.48-0.54 (repetition), 3 -> 0.78.
    confidence_noise: float = 3.0
    spacing: str = "uniform"  # inference timestep spacing (R11.5)
    # classifier-free guidance: on the memories when memory-guided, else on the prompt. 1 = off, 0 = uncond.
    guidance_scale: float = 1.0
    block_size: int = 0  # > 0: semi-autoregressive blocks of this many tokens
    top_k: int = 0  # keep the k most likely tokens per position (0 = all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p (1 = all)

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool) or self.num_steps < 1:
            raise ConfigError(f"num_steps={self.num_steps!r} must be an integer >= 1 (try 4, 16 or 64)")
        if self.num_steps > 4096:
            raise ConfigError(f"num_steps={self.num_steps} is more than 4096; use at most one step per token")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError(f"temperature={self.temperature} must be in [0, 5]")
        if self.confidence_noise < 0:
            raise ConfigError(f"confidence_noise={self.confidence_noise} must be >= 0")
        if not 0.0 <= self.guidance_scale <= 20.0:  # checked here too: CFG only runs when there is a prompt
            raise ConfigError(f"guidance_scale={self.guidance_scale} must be in [0, 20] (1.0 = no guidance)")
        if self.block_size < 0:
            raise ConfigError(f"block_size={self.block_size} must be >= 0 (0 = whole sequence at once)")


class DiffusionCore:
    """Runs masked diffusion for token modalities with one model and its tokenizer."""

    def __init__(self, model: UnifiedModel, tokenizer: TextTokenizer, context_length: int) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.schedule = get_mask_schedule(model.cfg.schedule.discrete)

    def sample_ids(
        self,
        prefix: list[int],
        length: int,
        suffix: list[int],
        modality: str,
        opts: SamplingOptions,
        seed: int | None = None,
        batch: int = 1,
        progress: bool = False,
        memory: Cond | None = None,
    ) -> Tensor:
        """Token ids (batch, len(prefix) + length + len(suffix)); prefix and suffix are kept exactly.

        ``memory`` (a Cond carrying retrieved memory embeddings) steers generation; guidance then acts on
        the memories (unconditioned = the same model with no memories)."""
        total = len(prefix) + length + len(suffix)
        if not isinstance(length, int) or length < 1:
            raise ConfigError(f"length={length!r} must be an integer >= 1")
        if total > self.context_length:
            raise ConfigError(
                f"prompt ({len(prefix)} tokens) + length ({length}) + suffix ({len(suffix)}) = {total} "
                "tokens "
                f"exceeds this model's context of {self.context_length} tokens; shorten the prompt or length"
            )
        mask_id = self.model.cfg.text.mask_id
        row = prefix + [mask_id] * length + suffix
        x = torch.tensor([row] * batch, dtype=torch.long)
        denoiser: Denoiser = MaskedDenoiser(self.model, modality)
        if memory is not None:
            denoiser = classifier_free(with_cond(denoiser, memory), denoiser, opts.guidance_scale)
        elif prefix and opts.guidance_scale != 1.0:
            fixed = torch.zeros_like(x, dtype=torch.bool)
            fixed[:, : len(prefix)] = True
            denoiser = classifier_free(
                denoiser, prompt_dropped(denoiser, fixed, mask_id), opts.guidance_scale
            )
        banned = [self.tokenizer.pad_id] + ([self.tokenizer.eot_id] if suffix else [])
        denoiser = filter_denoiser(forbid_tokens(denoiser, banned), opts.top_k, opts.top_p)
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        times = timesteps(opts.num_steps, opts.spacing)
        sampler = SAMPLERS[opts.sampler]
        kwargs: dict[str, object] = {
            "schedule": self.schedule,
            "temperature": opts.temperature,
            "generator": generator,
        }
        if opts.sampler == "confidence":
            kwargs["confidence_noise"] = opts.confidence_noise
        bar = tqdm(
            total=opts.num_steps * _num_blocks(length, opts.block_size),
            disable=not progress,
            desc=f"diffuse {modality}",
            leave=False,
        )
        kwargs["callback"] = _tick(bar)
        with torch.inference_mode():
            if opts.block_size:
                out = sample_blocks(sampler, denoiser, x, times, opts.block_size, mask_id=mask_id, **kwargs)
            else:
                out = sampler(denoiser, x, times, mask_id=mask_id, **kwargs)
        bar.close()
        return out

    def generate(
        self,
        prompt: str,
        modality: str,
        length: int,
        opts: SamplingOptions,
        seed: int | None = None,
        suffix: str | None = None,
        progress: bool = False,
        memory: Cond | None = None,
    ) -> str:
        """The generated middle as text: after ``prompt`` (and before ``suffix`` when infilling).

        Without a suffix the text ends at the first end-of-text token the model places."""
        if suffix is not None and not suffix and not prompt:
            raise ConfigError("infilling needs a non-empty prefix or suffix; give --prompt and/or --suffix")
        prefix_ids = self.tokenizer.encode(prompt) if prompt else []
        suffix_ids = self.tokenizer.encode(suffix) if suffix else []
        ids = self.sample_ids(
            prefix_ids, length, suffix_ids, modality, opts, seed, progress=progress, memory=memory
        )[0]
        middle = ids[len(prefix_ids) : len(prefix_ids) + length].tolist()
        if suffix is None and self.tokenizer.eot_id in middle:
            middle = middle[: middle.index(self.tokenizer.eot_id)]
        return self.tokenizer.decode(middle)


def _num_blocks(length: int, block_size: int) -> int:
    return 1 if block_size <= 0 else -(-length // block_size)


def _tick(bar: tqdm) -> Callable[[int, Tensor], None]:
    return lambda i, x: bar.update(1)
