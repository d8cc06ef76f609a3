"""Inference-side text tokenizer: a thin wrapper over a byte-level BPE ``tokenizers.Tokenizer``.

Special tokens have fixed ids: ``<pad>`` = 0, ``<mask>`` = 1, ``<eot>`` = 2. ``encode`` never adds them and
treats their literal spelling in input text as ordinary text, so ``decode(encode(s)) == s`` for any string.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from arrowdiff.errors import WeightFormatError

SPECIAL_TOKENS: tuple[str, str, str] = ("<pad>", "<mask>", "<eot>")


class TextTokenizer:
    """Byte-level BPE tokenizer with fixed special ids (pad=0, mask=1, eot=2)."""

    def __init__(self, tokenizer: Tokenizer, *, origin: str = "<memory>") -> None:
        ids = [tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS]
        if ids != [0, 1, 2]:
            got = dict(zip(SPECIAL_TOKENS, ids, strict=True))
            raise WeightFormatError(
                f"tokenizer {origin}: special token ids are {got}; expected <pad>=0, <mask>=1, <eot>=2. "
                "Retrain it with arrowdiff.training.tokenizer_train.train_tokenizer."
            )
        # Literal "<mask>" etc. inside user text must stay text, not become special ids.
        tokenizer.encode_special_tokens = True
        self._tok = tokenizer
        self.pad_id, self.mask_id, self.eot_id = ids
        self._special = frozenset(ids)

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Load a ``tokenizer.json``; raise ``WeightFormatError`` naming ``path`` if missing or invalid."""
        path = Path(path)
        if not path.is_file():
            raise WeightFormatError(
                f"tokenizer file {path} does not exist; build it with: python -m arrowdiff.training.corpus"
            )
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise WeightFormatError(f"tokenizer file {path} is not a valid tokenizers JSON: {exc}") from exc
        return cls(tok, origin=str(path))

    @classmethod
    def from_str(cls, data: str) -> TextTokenizer:
        """Build from the JSON string produced by :meth:`to_str`."""
        try:
            tok = Tokenizer.from_str(data)
        except Exception as exc:
            raise WeightFormatError(f"embedded tokenizer JSON is invalid: {exc}") from exc
        return cls(tok, origin="<string>")

    def to_file(self, path: str | Path) -> None:
        """Write the tokenizer as ``tokenizer.json``."""
        self._tok.save(str(path))

    def to_str(self) -> str:
        """Serialise to a JSON string (for embedding in other files)."""
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` over many texts (parallel in the Rust backend)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; pad/mask/eot ids are skipped."""
        return self._tok.decode(
            [int(i) for i in ids if int(i) not in self._special], skip_special_tokens=False
        )
