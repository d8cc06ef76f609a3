"""The caption scorer: multi-positive InfoNCE, retrieval and pairwise rates, training, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arrowdiff.errors import ConfigError
from arrowdiff.image.scorer import (
    CaptionScorer,
    ScorerConfig,
    ScorerTraining,
    embed_captions,
    embed_images,
    load_scorer,
    multi_positive_info_nce,
    pairwise_rates,
    retrieval_accuracy,
    save_scorer,
    train_scorer,
)


def test_info_nce_is_clip_loss_when_ids_differ() -> None:
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(6)
    clip = (F.cross_entropy(logits, ids) + F.cross_entropy(logits.T, ids)) / 2
    assert multi_positive_info_nce(logits, ids, ids).item() == pytest.approx(clip.item(), rel=1e-6)


def test_info_nce_shares_the_target_between_duplicate_captions() -> None:
    """Rows 0 and 1 carry the same caption, so columns 0 and 1 are both right for either: the
    multi-positive loss prefers equal logits there, where plain CLIP would push them apart."""
    ids = torch.tensor([0, 0, 1])
    balanced = torch.tensor([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    split = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 5.0]])

    def plain(logits: torch.Tensor) -> float:
        return (
            (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
        ).item()

    assert (
        multi_positive_info_nce(balanced, ids, ids).item() < multi_positive_info_nce(split, ids, ids).item()
    )
    assert plain(split) < plain(balanced)
    with pytest.raises(ConfigError):
        multi_positive_info_nce(balanced, ids, torch.tensor([0, 0, 2]))


def test_retrieval_and_pairwise_rates() -> None:
    sim = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.5, 0.5, 0.1]])
    truth = np.array([0, 1, 1])
    # ranks: image 0 first; image 1 last (0.2 < 0.3, 0.8); image 2 tied with column 0 -> ranks second
    assert retrieval_accuracy(sim, truth, ks=(1, 2)) == {
        "top1": pytest.approx(1 / 3),
        "top2": pytest.approx(2 / 3),
    }
    r = pairwise_rates(sim, truth)
    assert r["pairwise_rate"] == pytest.approx((1.0 + 0.0 + 0.75) / 3)
    assert r["matched_cos"] == pytest.approx((0.9 + 0.2 + 0.5) / 3)
    assert r["mismatched_cos"] == pytest.approx((0.15 + 0.55 + 0.3) / 3)


def test_a_random_judge_scores_one_half() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(2000, 50))
    r = pairwise_rates(sim, rng.integers(0, 50, 2000))
    assert abs(r["pairwise_rate"] - 0.5) < 4 * r["pairwise_rate_se"] + 1e-3


def _toy_pairs(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image features = a class code through a fixed random linear map + noise; captions = the unit class
    codes. The codes and the map are the same for every ``seed``; labels and noise differ."""
    fixed = np.random.default_rng(1234)
    codes = fixed.normal(size=(classes, 16))
    mix = fixed.normal(size=(16, 32))
    rng = np.random.default_rng(seed)
    label = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)])
    feats = codes[label] @ mix + 0.1 * rng.normal(size=(n, 32))
    text = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    caps = np.stack([text[label], text[label]], 1)  # two identical variants
    ids = np.stack([label, label], 1)
    return feats.astype(np.float32), caps.astype(np.float32), ids


def test_training_learns_a_toy_pairing_and_round_trips(tmp_path) -> None:
    feats, caps, ids = _toy_pairs(400, 10, seed=0)
    cfg = ScorerConfig(image_dim=32, text_dim=16, hidden_dim=64, embed_dim=16, dropout=0.0)
    model, log = train_scorer(feats, caps, ids, cfg, ScorerTraining(epochs=30, batch_size=64, lr=3e-3))
    assert log[-1]["loss"] < log[0]["loss"]
    test_feats, test_caps, test_ids = _toy_pairs(100, 10, seed=1)  # held out: fresh labels and noise
    img = embed_images(model, test_feats)
    unique = test_caps[np.unique(test_ids[:, 0], return_index=True)[1], 0]
    sim = img @ embed_captions(model, unique).T
    assert retrieval_accuracy(sim, test_ids[:, 0])["top1"] > 0.9
    assert pairwise_rates(sim, test_ids[:, 0])["pairwise_rate"] > 0.95

    save_scorer(model, tmp_path / "scorer", training={"note": "toy"})
    again = load_scorer(tmp_path / "scorer")
    assert isinstance(again, CaptionScorer)
    np.testing.assert_allclose(embed_images(again, test_feats), img, atol=1e-6)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ConfigError):
        train_scorer(np.zeros((4, 8)), np.zeros((4, 16)), np.zeros((4,), int))
    with pytest.raises(ConfigError):
        ScorerConfig(dropout=1.0)
