"""Text and code heads: token embedding in, vocabulary logits out.

Text and code share the tokenizer and the token-embedding table (owned and counted by the text head);
each head has its own output normalisation and output bias, so the two modalities keep separate
vocabulary statistics. The output projection is tied to the embedding (Press & Wolf 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.config import TextHeadConfig
from arrowdiff.network.heads.base import Head, register_head


class TokenHead(Head):
    def __init__(self, cfg: TextHeadConfig, dim: int, shared: TokenHead | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if shared is None:
            self.embedding = nn.Embedding(cfg.vocab_size, dim)
            nn.init.normal_(self.embedding.weight, std=0.02)
        # a shared table is referenced, not registered, so it is stored and counted once (in the text head)
        object.__setattr__(self, "_shared", shared)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    @property
    def table(self) -> nn.Embedding:
        return self.embedding if self._shared is None else self._shared.embedding

    def embed(self, x: Tensor) -> Tensor:
        """Token ids (B, T) -> (B, T, D)."""
        return self.table(x)

    def project(self, h: Tensor) -> Tensor:
        """(B, T, D) -> logits (B, T, V)."""
        return F.linear(self.norm(h), self.table.weight, self.bias)


@register_head("text")
def build_text_head(cfg: TextHeadConfig, dim: int, shared: TokenHead | None = None) -> TokenHead:
    head = TokenHead(cfg, dim, shared=None)
    head.modality = "text"
    return head


@register_head("code")
def build_code_head(cfg: TextHeadConfig, dim: int, shared: TokenHead | None = None) -> TokenHead:
    head = TokenHead(cfg, dim, shared=shared)
    head.modality = "code"
    return head
