"""Rebuild a Hugging Face ``tokenizers`` Tokenizer from a GGUF file's ``tokenizer.ggml.*`` metadata.

Only byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``, as GPT-2, LLaMA-3 and SmolLM use) are
supported: the vocabulary and merges are taken verbatim, control tokens (token_type 3) become special added
tokens so that ``<|im_start|>`` etc. stay whole, and the pre-tokenizer follows ``tokenizer.ggml.pre``:
``smollm`` splits digits one by one before the GPT-2 byte-level regex, exactly like SmolLM2's own
``tokenizer.json`` and llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from arrowdiff.errors import WeightFormatError

CONTROL = 3  # llama.cpp token type of control tokens (<|endoftext|>, <|im_start|>, ...)
USER_DEFINED = 4
# pre-tokenizers whose split is "digits one by one, then GPT-2's byte-level regex"
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact")


def tokenizer_from_gguf_fields(fields: dict[str, Any]) -> Tokenizer:
    """Build the tokenizer from plain metadata values: ``fields[key]`` for keys ``tokenizer.ggml.*``."""
    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise WeightFormatError(
            f"GGUF tokenizer model {kind!r} is not supported; only byte-level BPE ('gpt2') vocabularies are"
        )
    tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    types = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise WeightFormatError("GGUF tokenizer has duplicate tokens; cannot build a BPE vocabulary")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre in DIGIT_SPLIT_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    typed = list(zip(tokens, types, strict=True))
    special = [AddedToken(t, special=True, normalized=False) for t, k in typed if k == CONTROL]
    added = [AddedToken(t, special=False, normalized=False) for t, k in typed if k == USER_DEFINED]
    tok.add_special_tokens(special)
    if added:
        tok.add_tokens(added)
    if tok.get_vocab_size() != len(tokens):
        raise WeightFormatError(
            f"rebuilt tokenizer has {tok.get_vocab_size()} tokens, the GGUF lists {len(tokens)}"
        )
    return tok
