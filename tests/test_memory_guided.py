"""Memory-guided generation: the memory projection, conditioned training data, guidance, engine wiring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_log, train_argv

from arrowdiff.config import get_preset
from arrowdiff.diffusion_core import DiffusionCore, SamplingOptions
from arrowdiff.errors import ConfigError, ModalityError
from arrowdiff.loading import load_model
from arrowdiff.network.conditioning import MemoryProjection
from arrowdiff.network.denoiser import Cond
from arrowdiff.network.model import UnifiedModel
from arrowdiff.training.memory_data import (
    MemorySet,
    build,
    dequantize_embeddings,
    document_bounds,
    memory_batch,
    quantize_embeddings,
)
from arrowdiff.training.shards import open_shard


def memory_model(seed: int = 0) -> UnifiedModel:
    torch.manual_seed(seed)
    model = UnifiedModel(replace(get_preset("tiny", 300), conditioners=("memory",))).eval()
    for block in model.backbone.blocks:  # give cross-attention a non-zero output so memories matter
        torch.nn.init.normal_(block.cross.out.weight, std=0.2)
    return model


def unit_rows(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, 384, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


def test_projection_shapes_and_null_token() -> None:
    proj = MemoryProjection(384, 32)
    ctx, mask = proj(unit_rows(6, 0).view(2, 3, 384), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool(), 2)
    assert ctx.shape == (2, 4, 32) and mask.shape == (2, 4)
    assert mask[:, 0].all() and mask[0].tolist() == [True, True, True, False]
    null, null_mask = proj(None, None, 5)
    assert null.shape == (5, 1, 32) and null_mask.all()
    assert torch.equal(null[0], ctx[0, :1])  # the same learned null token leads every row
    with pytest.raises(ConfigError, match=r"expected \(2, K, 384\)"):
        proj(torch.zeros(2, 3, 100), None, 2)


def test_fully_masked_memories_equal_no_memories() -> None:
    model = memory_model()
    x, t = torch.randint(3, 300, (2, 16)), torch.full((2,), 0.5)
    mem = unit_rows(8, 1).view(2, 4, 384)
    none = model(x, t, "text")
    masked = model(x, t, "text", memory=mem, memory_mask=torch.zeros(2, 4, dtype=torch.bool))
    steered = model(x, t, "text", memory=mem)
    torch.testing.assert_close(none, masked)
    assert (none - steered).abs().max() > 1e-3  # real memories change the prediction


def test_memories_need_a_memory_conditioner() -> None:
    model = UnifiedModel(get_preset("tiny", 300)).eval()
    with pytest.raises(ModalityError, match="no memory conditioner"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1), "text", memory=unit_rows(2, 0)[None])


def test_component_layout_includes_the_conditioner() -> None:
    model = memory_model()
    parts = model.component_state_dicts()
    assert "conditioners/memory" in parts and "null" in parts["conditioners/memory"]
    split = model.parameter_split()
    assert split["conditioners/memory"] == sum(p.numel() for p in model.conditioners.parameters())


@pytest.fixture(scope="module")
def core(tiny_data: Path) -> DiffusionCore:
    from arrowdiff.tokenizer import TextTokenizer

    return DiffusionCore(memory_model(), TextTokenizer.from_file(tiny_data.parent / "tokenizer.json"), 64)


def test_guidance_scale_zero_is_unconditioned_and_one_is_conditioned(core: DiffusionCore) -> None:
    mem = Cond(memory=unit_rows(3, 2)[None], memory_mask=torch.ones(1, 3, dtype=torch.bool))
    opts = dict(num_steps=8, temperature=1.0)
    plain = core.sample_ids([5, 6], 12, [], "text", SamplingOptions(**opts), seed=3)
    zero = core.sample_ids(
        [5, 6], 12, [], "text", SamplingOptions(**opts, guidance_scale=0.0), seed=3, memory=mem
    )
    one = core.sample_ids([5, 6], 12, [], "text", SamplingOptions(**opts), seed=3, memory=mem)
    two = core.sample_ids(
        [5, 6], 12, [], "text", SamplingOptions(**opts, guidance_scale=2.0), seed=3, memory=mem
    )
    assert torch.equal(plain, zero)
    assert not torch.equal(plain, one) or not torch.equal(one, two)  # memories steer the samples


def test_empty_retrieval_runs_unconditioned(core: DiffusionCore) -> None:
    empty = Cond(memory=torch.zeros(1, 0, 384), memory_mask=torch.zeros(1, 0, dtype=torch.bool))
    opts = SamplingOptions(num_steps=8)
    plain = core.sample_ids([5], 10, [], "text", opts, seed=1)
    assert torch.equal(plain, core.sample_ids([5], 10, [], "text", opts, seed=1, memory=empty))


def test_embedding_quantisation_round_trip() -> None:
    e = unit_rows(50, 4).numpy()
    back = dequantize_embeddings(quantize_embeddings(e))
    assert back.dtype == np.float32 and np.allclose(np.linalg.norm(back, axis=1), 1, atol=1e-5)
    assert (e * back).sum(1).min() > 0.998  # cosine to the original


@pytest.fixture(scope="module")
def memory_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory")
    build(tiny_data, out, chunk_tokens=8, per_doc=3, max_chunks=1000, batch_size=32)
    return out


def test_memory_windows_come_from_the_same_document_and_never_overlap(
    tiny_data: Path, memory_dir: Path
) -> None:
    from arrowdiff.tokenizer import TextTokenizer

    eot = TextTokenizer.from_file(tiny_data.parent / "tokenizer.json").eot_id
    stream = open_shard(tiny_data, "train", "text")
    mset = MemorySet.load(memory_dir, "train", "text", stream, eot)
    bounds = document_bounds(stream, eot)
    assert len(mset.chunks) == 3 * len(bounds) and mset.emb.shape == (len(mset.chunks), 384)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, len(stream) - 32, 17):
        idx = mset.memories_for(start, 32, 4, gen)
        assert 0 <= len(idx) <= 4
        doc = np.searchsorted(bounds[:, 0], start + 16, side="right") - 1
        for off, n, d in mset.chunks[idx].tolist():
            assert d == doc and (off + n <= start or off >= start + 32)
    starts = list(range(0, len(stream) - 32, 23))
    ctx, mask = memory_batch({"text": mset}, starts, ["text"] * len(starts), 32, 4, 0.0, gen)
    for row, start in enumerate(starts):
        doc = np.searchsorted(bounds[:, 0], start + 16, side="right") - 1
        ok = (mset.chunks[:, 2] == doc) & (
            (mset.chunks[:, 0] + mset.chunks[:, 1] <= start) | (mset.chunks[:, 0] >= start + 32)
        )
        for emb in ctx[row, mask[row]].numpy():  # every memory is an allowed chunk of the same document
            assert np.abs(mset.emb[ok] - emb).max(axis=1).min() < 1e-6
    assert mask.any(1).float().mean() > 0.9 and (mask.sum(1) > 1).any()
    ctx, mask = memory_batch({"text": mset}, [0, 40, 80], ["text", "code", "text"], 32, 4, 0.0, gen)
    assert ctx.shape == (3, 4, 384) and not mask[1].any() and mask[0].any()
    _, dropped = memory_batch({"text": mset}, [0, 40], ["text", "text"], 32, 4, 1.0, gen)
    assert not dropped.any()  # condition dropout 1.0 removes every memory


def test_memory_guided_training_exports_a_conditioned_model(
    tiny_data: Path, tiny_model_dir: Path, memory_dir: Path, tmp_path: Path
) -> None:
    from arrowdiff.training.train import main

    out = tmp_path / "run"
    argv = train_argv(
        tiny_data, out, "--memory", str(memory_dir), "--init-from", str(tiny_model_dir), steps=20
    )
    assert main([*argv, "--eval-every", "20"]) == 0
    last = read_log(out)[-1]
    assert np.isfinite(last["val_text_memory"]) and np.isfinite(last["val_text"])
    loaded = load_model(out / "model")
    assert loaded.model.cfg.conditioners == ("memory",)
    assert "conditioners/memory" in loaded.metadata["components"]


def test_memory_flag_is_validated(tiny_data: Path, memory_dir: Path, tmp_path: Path) -> None:
    from arrowdiff.training.train import main

    with pytest.raises(ConfigError, match="--objective mdlm"):
        main(train_argv(tiny_data, tmp_path / "r", "--memory", str(memory_dir), "--objective", "ar"))
    with pytest.raises(ConfigError, match="--memory-k 0"):
        main(train_argv(tiny_data, tmp_path / "r", "--memory", str(memory_dir), "--memory-k", "0"))


def test_memory_guided_needs_a_conditioned_model(tiny_model_dir: Path) -> None:
    from arrowdiff import ArrowEngine

    engine = ArrowEngine.from_pretrained(tiny_model_dir)
    with pytest.raises(ModalityError, match="no memory conditioner.*--memory"):
        engine.diffuse("the cat", num_steps=2, length=4, memory_guided=True)
