"""Train the byte-level BPE tokenizer (training-side only; inference uses ``arrowdiff.tokenizer``)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from arrowdiff.errors import ConfigError
from arrowdiff.tokenizer import SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, show_progress: bool = False) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (pass the TRAIN split only).

    Every string round-trips exactly (all 256 bytes are in the initial alphabet; no normaliser, no prefix
    space). Special tokens ``<pad>``, ``<mask>``, ``<eot>`` get ids 0, 1, 2. Deterministic for a fixed
    input order. ``vocab_size`` must leave room for the 256 byte tokens and fit in uint16 shards.
    """
    if not 256 + len(SPECIAL_TOKENS) <= vocab_size <= 65536:
        raise ConfigError(f"vocab_size={vocab_size} must be in [259, 65536] (259 = 256 bytes + 3 specials)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
