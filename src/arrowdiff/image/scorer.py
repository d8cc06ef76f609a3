"""A small image-caption scorer trained in the project (CLIP-style), the judge of caption faithfulness.

No CLIP weights exist offline here, so the judge is trained on the training split's caption-image pairs:

- text tower: the frozen MiniLM sentence embedding (384-d, the same embeddings that condition the image
  model) followed by one learned linear map into the joint space;
- image tower: a two-layer MLP on frozen image features (the benchmark uses EfficientNet-Lite0's 1280-d
  pooled ImageNet features), ending in the joint space;
- loss: symmetric InfoNCE (Radford et al. 2021) with a learned temperature. Several images share one
  caption (the same emoji from Noto PNG, Noto SVG and Fluent), so a batch can hold the same caption more
  than once: the loss is *multi-positive* (the target of each row is uniform over the columns with the
  same caption id), which is plain InfoNCE when every id in the batch differs.

Frozen features keep training to seconds on a CPU (only the two projections learn) and make the judge as
good as ImageNet features are at telling emoji apart; a CNN trained from scratch on ~10k 64x64 images
would be the weaker judge. Scores are cosines in the joint space.

Weights are saved through the project weight format (``save_model_dir``, fp32) with the config and the
training record in ``metadata.json``; they are a benchmark artefact under ``runs/``, not shipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir

SCORER_MODEL_TYPE = "caption_scorer"
SCORER_COMPONENT = "scorer"


@dataclass(frozen=True)
class ScorerConfig:
    image_dim: int = 1280  # frozen image features (EfficientNet-Lite0 pooled)
    text_dim: int = 384  # frozen MiniLM embeddings
    hidden_dim: int = 1024
    embed_dim: int = 256  # the joint space
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for f in ("image_dim", "text_dim", "hidden_dim", "embed_dim"):
            if getattr(self, f) < 1:
                raise ConfigError(f"ScorerConfig.{f}={getattr(self, f)} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ScorerConfig.dropout={self.dropout} must be in [0, 1)")


@dataclass(frozen=True)
class ScorerTraining:
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0


class CaptionScorer(nn.Module):
    """cos(image tower(features), text tower(caption embedding)) in a learned joint space."""

    def __init__(self, cfg: ScorerConfig = ScorerConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = nn.Sequential(
            nn.LayerNorm(cfg.image_dim),
            nn.Linear(cfg.image_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.embed_dim),
        )
        self.text = nn.Linear(cfg.text_dim, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def encode_image(self, features: Tensor) -> Tensor:
        return F.normalize(self.image(features.float()), dim=-1)

    def encode_text(self, embeddings: Tensor) -> Tensor:
        return F.normalize(self.text(embeddings.float()), dim=-1)

    def forward(self, features: Tensor, embeddings: Tensor) -> Tensor:
        """Scaled cosine logits (B_images, B_captions)."""
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return scale * self.encode_image(features) @ self.encode_text(embeddings).T


def multi_positive_info_nce(logits: Tensor, image_ids: Tensor, caption_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE where every column whose caption id equals the row's id is a positive (the target
    is uniform over them). With all ids distinct this is CLIP's loss (cross-entropy on the diagonal)."""
    pos = (image_ids[:, None] == caption_ids[None, :]).float()  # (B_i, B_c)
    if not bool((pos.sum(1) > 0).all()) or not bool((pos.sum(0) > 0).all()):
        raise ConfigError("every image needs a caption with its id in the batch, and the other way round")
    i2t = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2


def train_scorer(
    features: np.ndarray,
    captions: np.ndarray,
    caption_ids: np.ndarray,
    cfg: ScorerConfig = ScorerConfig(),
    train: ScorerTraining = ScorerTraining(),
    progress: bool = False,
) -> tuple[CaptionScorer, list[dict[str, float]]]:
    """Train on ``features`` (N, F), caption embeddings ``captions`` (N, V, E) (V caption variants per image,
    one drawn per row and step) with integer ``caption_ids`` (N, V) (equal text = equal id).

    Returns the model (eval mode) and one log row per epoch (mean loss, temperature)."""
    feats = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    caps = torch.as_tensor(np.asarray(captions), dtype=torch.float32)
    ids = torch.as_tensor(np.asarray(caption_ids), dtype=torch.long)
    n = len(feats)
    if caps.dim() != 3 or ids.shape != caps.shape[:2] or len(caps) != n:
        raise ConfigError(
            f"need features (N, F), captions (N, V, E) and caption_ids (N, V); got {tuple(feats.shape)}, "
            f"{tuple(caps.shape)}, {tuple(ids.shape)}"
        )
    g = torch.Generator().manual_seed(train.seed)
    torch.manual_seed(train.seed)  # the initial weights
    model = CaptionScorer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    batch = min(train.batch_size, n)
    steps_per_epoch = max(n // batch, 1)
    total = train.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr, total_steps=total, pct_start=0.1)
    log = []
    model.train()
    for epoch in range(train.epochs):
        perm = torch.randperm(n, generator=g)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * batch : (s + 1) * batch]
            v = torch.randint(0, caps.shape[1], (len(idx),), generator=g)
            cid = ids[idx, v]
            loss = multi_positive_info_nce(model(feats[idx], caps[idx, v]), cid, cid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "temperature": 1 / model.logit_scale.exp().item(),
        }
        log.append(row)
        if progress:
            print(f"scorer epoch {row['epoch']}: loss {row['loss']:.4f}")
    return model.eval(), log


@torch.no_grad()
def embed_images(model: CaptionScorer, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Joint-space unit vectors of image features (N, F) -> (N, E)."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    return torch.cat([model.encode_image(f[i : i + batch]) for i in range(0, len(f), batch)]).numpy()


@torch.no_grad()
def embed_captions(model: CaptionScorer, embeddings: np.ndarray) -> np.ndarray:
    """Joint-space unit vectors of caption embeddings (N, E_text) -> (N, E)."""
    return model.encode_text(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)).numpy()


def retrieval_accuracy(sim: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of image -> caption retrieval: ``sim`` (N_images, N_captions), ``truth`` (N_images,)
    the column of each image's caption. Ties count against the image: another caption with an equal score
    ranks ahead of its own."""
    sim = np.asarray(sim, np.float64)
    own = sim[np.arange(len(sim)), truth]
    rank = (sim >= own[:, None]).sum(1) - 1  # 0 = best; equal scores rank ahead
    return {f"top{k}": float((rank < k).mean()) for k in ks}


def pairwise_rates(sim: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """How often an image's own caption outscores another caption.

    ``sim`` (N_images, N_captions) over distinct captions, ``truth`` (N_images,) the column of each image's
    own caption. For image i the rate is the share of the other columns c that score below its own
    (ties count one half): the probability that its own caption beats a uniformly drawn other caption,
    0.5 for a judge that cannot tell. Returns the mean rate with its standard error over images, and the
    mean matched and mismatched scores."""
    sim = np.asarray(sim, np.float64)
    n, m = sim.shape
    if m < 2:
        raise ConfigError("pairwise rates need at least two distinct captions")
    own = sim[np.arange(n), truth]
    other = np.ones_like(sim, dtype=bool)
    other[np.arange(n), truth] = False
    wins = ((own[:, None] > sim) & other).sum(1) + 0.5 * ((own[:, None] == sim) & other).sum(1)
    rate = wins / (m - 1)
    mismatched = (sim * other).sum(1) / (m - 1)
    return {
        "pairwise_rate": float(rate.mean()),
        "pairwise_rate_se": float(rate.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "matched_cos": float(own.mean()),
        "mismatched_cos": float(mismatched.mean()),
        "images": int(n),
        "captions": int(m),
    }


def save_scorer(model: CaptionScorer, out_dir: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write the scorer as a model directory (fp32, lossless)."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "model_type": SCORER_MODEL_TYPE,
        "scorer_config": asdict(model.cfg),
        "training": training or {},
    }
    save_model_dir(Path(out_dir), {SCORER_COMPONENT: state}, meta, QuantPolicy(bits=32))
    return Path(out_dir)


def load_scorer(path: str | Path) -> CaptionScorer:
    """Load a scorer saved by :func:`save_scorer`, in eval mode."""
    loaded = load_model_dir(Path(path))
    if loaded.metadata.get("model_type") != SCORER_MODEL_TYPE or SCORER_COMPONENT not in loaded.components:
        raise WeightFormatError(f"{path}: not a caption scorer directory (save one with save_scorer)")
    model = CaptionScorer(ScorerConfig(**loaded.metadata["scorer_config"]))
    loaded.load_into(model, SCORER_COMPONENT)
    return model.eval()


__all__ = [
    "CaptionScorer",
    "ScorerConfig",
    "ScorerTraining",
    "embed_captions",
    "embed_images",
    "load_scorer",
    "multi_positive_info_nce",
    "pairwise_rates",
    "retrieval_accuracy",
    "save_scorer",
    "train_scorer",
]
