"""InferenceCore: autoregressive generation from a :class:`LlamaModel` with a KV cache.

One prefill pass over the prompt fills the cache, then each new token costs one single-position forward
(that is where the packed INT4 kernel pays off). Sampling: temperature 0 = greedy; otherwise logits are
divided by the temperature, filtered by top-k and nucleus top-p (Holtzman et al. 2020) and sampled from a
seeded ``torch.Generator``, so a fixed seed gives the same text. Generation stops at ``max_new_tokens``,
at an end-of-sequence token, or where a stop string appears (the stop string itself is not returned).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from tokenizers import Tokenizer

from arrowdiff.ar.llama import LlamaModel
from arrowdiff.ar_core import filter_logits
from arrowdiff.errors import ConfigError

END_TOKENS = ("<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end_of_text|>")


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> int:
    """One token id from next-token logits (V,)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still begin a stop string (so must not be emitted)."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return hold


def stop_filtered(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass text pieces through until a stop string appears (it and everything after it are dropped).

    Text that could still be the start of a stop string is held back until it is decided."""
    text, emitted = "", 0
    for piece in pieces:
        text += piece
        cut = min((i for i in (text.find(s, emitted) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            if cut > emitted:
                yield text[emitted:cut]
            return
        end = len(text) - _held_back(text, stop)
        if end > emitted:
            yield text[emitted:end]
            emitted = end
    if len(text) > emitted:
        yield text[emitted:]


class InferenceCore:
    """Prefill + cached decode over one LLaMA model and its tokenizer."""

    def __init__(self, model: LlamaModel, tokenizer: Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        ends = {vocab[t] for t in END_TOKENS if t in vocab}
        if model.cfg.eos_id is not None:
            ends.add(int(model.cfg.eos_id))
        self.end_ids = frozenset(ends)
        self.last_timing: dict[str, float] = {}  # prefill_s, decode_s, new_tokens of the last call

    @property
    def context_length(self) -> int:
        return self.model.cfg.max_seq_len

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """Yield new token ids one at a time (an end token is yielded, then generation stops)."""
        if not prompt_ids:
            raise ConfigError("the prompt is empty; AR generation needs at least one prompt token")
        room = self.context_length - max_new_tokens
        if room < 1:
            raise ConfigError(
                f"max_new_tokens={max_new_tokens} leaves no room in the {self.context_length} context"
            )
        ids = list(prompt_ids)[-room:]
        cache = self.model.new_cache(1, len(ids) + max_new_tokens)
        self.last_timing = {"prefill_s": 0.0, "decode_s": 0.0, "new_tokens": 0}
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(torch.tensor([ids]), cache, last_only=True)[0, -1]
        self.last_timing["prefill_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, top_p, generator)
            self.last_timing["new_tokens"] = i + 1
            yield nxt
            if nxt in self.end_ids or i == max_new_tokens - 1:
                break
            with torch.inference_mode():
                logits = self.model(torch.tensor([[nxt]]), cache)[0, -1]
            self.last_timing["decode_s"] = time.perf_counter() - t0

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Iterator[str]:
        """Yield the continuation of ``prompt`` as text pieces; the pieces join to the full continuation."""
        gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        ids = self.stream_ids(self.encode(prompt), max_new_tokens, temperature, top_k, top_p, gen)
        return stop_filtered(self._pieces(ids), stop)

    def _pieces(self, ids: Iterator[int]) -> Iterator[str]:
        new: list[int] = []
        emitted = 0
        for tok in ids:
            if tok in self.end_ids:
                break
            new.append(tok)
            text = self.tokenizer.decode(new, skip_special_tokens=False)
            end = len(text) - 1 if text.endswith("\ufffd") else len(text)  # wait for a UTF-8 tail
            if end > emitted:
                yield text[emitted:end]
                emitted = end
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        if len(text) > emitted:
            yield text[emitted:]

    def generate(self, prompt: str, max_new_tokens: int = 64, **kwargs: object) -> str:
        """The whole continuation as one string (see :meth:`stream`)."""
        return "".join(self.stream(prompt, max_new_tokens, **kwargs))  # type: ignore[arg-type]
