"""Byte-level BPE tokenizer: exact round-trip, fixed special ids, file errors. No real corpora needed."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import WeightFormatError
from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.training.tokenizer_train import train_tokenizer

SMALL_CORPUS = [
    "The quick brown fox jumps over the lazy dog.\n\nIt was the best of times, it was the worst of times.",
    "def add(a, b):\n    return a + b\n\n\nclass Foo:\n\tdef bar(self):\n\t\treturn None\n",
    "Café naïve résumé — “quotes” 日本語 😀 and tabs\tand\r\nCRLF lines.",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
] * 5


@functools.cache
def small_tokenizer() -> TextTokenizer:
    return TextTokenizer(train_tokenizer(SMALL_CORPUS, vocab_size=300))


def test_special_ids_fixed() -> None:
    tok = small_tokenizer()
    assert (tok.pad_id, tok.mask_id, tok.eot_id) == (0, 1, 2)
    assert 259 < tok.vocab_size <= 300


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_text(text: str) -> None:
    tok = small_tokenizer()
    ids = tok.encode(text)
    assert all(i > 2 for i in ids)
    assert tok.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\n\t  \n",
        "    def f():\n\treturn 1\n",
        "a <mask> b <eot><pad>",
        "\x00\x7f\ufeff",
        "😀" * 5,
    ],
)
def test_round_trip_edge_cases(text: str) -> None:
    tok = small_tokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_literal_special_strings_are_text_and_decode_skips_specials() -> None:
    tok = small_tokenizer()
    assert tok.mask_id not in tok.encode("<mask>")
    ids = tok.encode("hello")
    assert tok.decode([tok.mask_id, *ids, tok.eot_id, tok.pad_id]) == "hello"


def test_training_is_deterministic() -> None:
    a = train_tokenizer(SMALL_CORPUS, vocab_size=300)
    b = train_tokenizer(SMALL_CORPUS, vocab_size=300)
    assert a.to_str() == b.to_str()


def test_file_and_string_round_trip(tmp_path) -> None:
    tok = small_tokenizer()
    path = tmp_path / "tokenizer.json"
    tok.to_file(path)
    text = "x = {'a': 1}\n"
    for other in (TextTokenizer.from_file(path), TextTokenizer.from_str(tok.to_str())):
        assert other.encode(text) == tok.encode(text)
        assert other.vocab_size == tok.vocab_size
        assert other.encode("<eot>") == tok.encode("<eot>") != [2]


def test_missing_or_invalid_file_raises(tmp_path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(WeightFormatError, match="nope.json"):
        TextTokenizer.from_file(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WeightFormatError, match="bad.json"):
        TextTokenizer.from_file(bad)


def test_wrong_special_ids_rejected() -> None:
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE())
    tok.add_special_tokens(["<eot>", "<pad>", "<mask>"])
    with pytest.raises(WeightFormatError, match="special token ids"):
        TextTokenizer(tok)
