"""Packed pretraining: rows of several sequences, each attending only to itself, train exactly as padded batches do
(tiny grid model, CPU; the GPU's FlexAttention kernel is checked against the same padded loss by the GPU lane)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from testtime.core.config import ConfigError
from testtime.data.encode import GridCodec, encode_example, grid_positions
from testtime.data.pretrain_data import (
    PAD_DOCUMENT,
    PackedStream,
    Prefetcher,
    SequenceSampler,
    collate,
    first_fit,
    pack,
)
from testtime.data.sources import TaskSource
from testtime.model.attention import (
    DOCUMENT_ATTENTION,
    dense_document_mask,
    document_spans,
    packed_mask,
    span_attention,
    tile_options,
    use_document_attention,
)
from testtime.model.loading import ModelConfig, save_model
from testtime.model.tiny_lm import byte_bpe_tokenizer, save_tiny, tiny_causal_lm
from testtime.recipes.pretrain import PretrainConfig, pretrain, read_log
from testtime.recipes.pretrain_step import loss_sum

CODEC = GridCodec()


def _sequences(flip_task, shapes):
    out = []
    for i, shape in enumerate(shapes):
        t = flip_task(i, f"t{i}", shape)
        out.append(encode_example(CODEC, list(t.train)[:2], t.train[2]))
    return out


def test_a_packed_row_restarts_positions_at_each_document():
    a = np.concatenate([CODEC.bos(), CODEC.input_piece(np.array([[1, 2], [3, 4]], dtype=np.uint8))])
    b = np.concatenate([CODEC.bos(), CODEC.input_piece(np.array([[5]], dtype=np.uint8))])
    alone = [grid_positions(torch.tensor(x)[None])[0] for x in (a, b)]
    packed = grid_positions(torch.tensor(np.concatenate([a, b]))[None])[0]
    assert torch.equal(packed, torch.cat(alone))


def test_first_fit_packs_every_sequence_once_within_the_row_length(flip_task):
    seqs = _sequences(flip_task, [(3, 4), (5, 5), (2, 2), (6, 3), (4, 4), (2, 5)])
    rows = first_fit(seqs, 256)
    assert sorted(id(s) for r in rows for s in r) == sorted(id(s) for s in seqs)
    assert all(sum(len(s) for s in r) <= 256 for r in rows)
    assert len(rows) < len(seqs)  # some row holds several sequences
    with pytest.raises(ValueError, match="do not fit a row of 64"):
        pack([seqs[:1]], 64)


@pytest.mark.parametrize("kind", ["flex", "varlen"])
def test_packed_loss_and_gradients_equal_the_padded_batch(tiny_grid_model, flip_task, kind):
    """The same sequences, padded one per row or packed several per row, give one loss and one gradient: no token
    sees another sequence, every position and target is the same; whether the packed rows attend through the
    document mask or through document spans (`"attention": "varlen"`)."""
    seqs = _sequences(flip_task, [(3, 4), (5, 5), (2, 2), (6, 3), (4, 4)])
    rows = first_fit(seqs, 256)
    assert max(len(r) for r in rows) >= 2
    padded, packed = collate(seqs, 16), pack(rows, 256)
    assert (padded.n_real, padded.n_targets, padded.n_attended) == (packed.n_real, packed.n_targets, packed.n_attended)
    assert (packed.doc_ids == PAD_DOCUMENT).any()  # the rows end in padding of their own
    grads = []
    for batch in (padded, packed):
        model = tiny_grid_model(0)
        with use_document_attention(model):
            mask = None if batch.doc_ids is None else packed_mask(batch.doc_ids, "cpu", kind)
            loss = loss_sum(model, batch.input_ids, batch.labels, mask)
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in model.parameters()]))
    (a, ga), (b, gb) = grads
    assert torch.allclose(a, b, rtol=1e-5)
    assert all(float((x - y).norm() / x.norm()) < 1e-5 for x, y in zip(ga, gb, strict=True))


@pytest.mark.parametrize("block", [128, 64])
def test_the_block_mask_matches_the_dense_mask(tiny_grid_model, flip_task, block):
    """FlexAttention's block mask (the GPU's path, forward only on a CPU) gives the dense mask's loss, whatever its
    blocks (`attention_block`: which pairs the kernel computes, never which it keeps)."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    seqs = _sequences(flip_task, [(3, 4), (5, 5), (2, 2), (6, 3)])
    batch = pack(first_fit(seqs, 256), 256)
    doc = batch.doc_ids

    def same_document_causal(b, h, q, k):
        return (doc[b, q] == doc[b, k]) & (k <= q)

    mask = flex.create_block_mask(same_document_causal, doc.shape[0], None, 256, 256, device="cpu", BLOCK_SIZE=block)
    model = tiny_grid_model(1)
    with torch.no_grad(), use_document_attention(model):
        dense = loss_sum(model, batch.input_ids, batch.labels, dense_document_mask(doc))
        sparse = loss_sum(model, batch.input_ids, batch.labels, mask)
    assert torch.allclose(dense, sparse, rtol=1e-5)


def test_document_spans_cut_the_flattened_rows_at_each_document_and_row():
    """Spans of the B*T flattened tokens: a new one where the document changes and at each row's start (a document
    ending one row and one starting the next are two spans even under one id; padding is a span of its own), then
    empty spans up to a power of two of offsets."""
    doc = torch.tensor([[0, 0, 0, 1, 1, -1], [1, 1, 2, 2, 2, 2]])
    spans = document_spans(doc)
    assert spans.cu.tolist() == [0, 3, 5, 6, 8, 12, 12, 12] and spans.cu.dtype == torch.int32
    assert spans.longest == 6
    assert document_spans(torch.zeros(1, 4, dtype=torch.long)).cu.tolist() == [0, 4]
    with pytest.raises(ValueError, match="flex, varlen"):
        packed_mask(doc, "cpu", "dense")
    with pytest.raises(ConfigError, match="attention"):
        PretrainConfig(attention="flash")


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_span_attention_equals_the_dense_document_mask(kv_heads):
    """Attention within spans (the CPU's span-by-span SDPA, the GPU kernel's stand-in) gives what SDPA gives under
    the dense document mask, over rows of documents of many lengths ending in padding, grouped keys included."""
    torch.manual_seed(0)
    doc = torch.full((2, 40), -1)
    for row, lengths in enumerate([[7, 1, 12, 9], [20, 3, 17]]):
        at = 0
        for d, n in enumerate(lengths):
            doc[row, at: at + n] = d
            at += n
    q = torch.randn(2, 4, 40, 8)
    k, v = (torch.randn(2, kv_heads, 40, 8) for _ in range(2))
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4 // kv_heads, 1), v.repeat_interleave(4 // kv_heads, 1),
        attn_mask=dense_document_mask(doc), scale=0.3).transpose(1, 2)
    got = span_attention(q, k, v, document_spans(doc), 0.3)
    assert got.shape == (2, 40, 4, 8) and torch.allclose(got, want, atol=1e-6)


def test_small_blocks_get_tiles_that_divide_them():
    """FlexAttention refuses tiles that do not divide the mask's blocks: 64-token blocks get tiles that do, on a GPU;
    128-token blocks and a CPU keep the kernel's own; another size is refused, saying which exist."""
    tiles = tile_options(64, "cuda")
    assert tiles and all(64 % v == 0 for v in tiles.values())
    assert tile_options((64, 64), "cuda") == tiles
    assert tile_options(128, "cuda") is None and tile_options(64, "cpu") is None
    with pytest.raises(ValueError, match="64 or 128"):
        tile_options(32, "cuda")
    with pytest.raises(ConfigError, match="attention_block"):
        PretrainConfig(attention_block=100)


def test_no_mask_is_causal_attention(tiny_grid_model, flip_task):
    """Whole sequences with no mask take SDPA's is_causal path; it equals the mask transformers builds."""
    seqs = _sequences(flip_task, [(3, 4), (2, 2)])
    batch = collate(seqs, 16)
    model = tiny_grid_model(2)
    with torch.no_grad():
        fast = model.model(input_ids=batch.input_ids, use_cache=False).last_hidden_state
        built = model.model(input_ids=batch.input_ids, attention_mask=torch.ones_like(batch.input_ids),
                            use_cache=False).last_hidden_state
    assert torch.allclose(fast, built, atol=1e-5)


def test_document_attention_is_restored_and_never_saved(tiny_grid_model, tmp_path):
    model = tiny_grid_model(0)
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError), use_document_attention(model):
        assert model.config._attn_implementation == DOCUMENT_ATTENTION
        save_model(model, None, tmp_path / "m")
        raise RuntimeError("a step failed")
    assert model.config._attn_implementation == before
    assert DOCUMENT_ATTENTION not in (tmp_path / "m" / "config.json").read_text()


def test_packed_stream_has_one_shape_and_resumes_exactly(flip_task):
    sources = [TaskSource([flip_task(i, f"t{i}", (2 + i % 5, 3 + i % 4)) for i in range(12)])]
    stream = PackedStream(SequenceSampler(sources, 512, seed=0), token_budget=2048, pool_size=40, row_len=512)
    first = [stream.next() for _ in range(3)]
    assert {tuple(b.input_ids.shape) for b in first} == {(4, 512)}
    assert sum(b.n_real for b in first) > 0.6 * sum(b.n_padded for b in first)  # rows are mostly full
    state = stream.state_dict()
    expected = [stream.next() for _ in range(5)]
    again = PackedStream(SequenceSampler(sources, 512, seed=0), token_budget=2048, pool_size=40, row_len=512)
    again.load_state_dict(state)
    for a, b in zip(expected, [again.next() for _ in range(5)], strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.doc_ids, b.doc_ids)


def test_packed_pretraining_learns_resumes_exactly_and_exports_a_plain_model(tmp_path, flip_task):
    tasks = [flip_task(i, f"t{i}", (2 + i % 4, 3)) for i in range(8)]
    src = [TaskSource(tasks)]
    cfg = PretrainConfig(model=dataclasses.replace(ModelConfig.tiny(), grid_positions=True), packing=True, max_len=512, token_budget=2048, pool_size=24,
                         pad_multiple=64, lr=3e-3, warmup_steps=1, total_steps=8, log_every=1, device="cpu", seed=2,
                         checkpoint_minutes=100)
    straight = pretrain(cfg, tmp_path / "a", progress=False, sources=src)
    log = read_log(tmp_path / "a")
    assert straight.finished and log[-1]["loss"] < log[0]["loss"]
    assert log[0]["padded_tokens_per_s"] > 0 and all(r["tokens"] > 0 for r in log)
    assert all(0 <= r["data_wait"] <= 1 for r in log)  # a share of each interval
    pretrain(cfg, tmp_path / "b", progress=False, sources=src, stop_at=3)
    resumed = pretrain(cfg, tmp_path / "b", progress=False, sources=src)
    assert resumed.last_loss == straight.last_loss
    assert DOCUMENT_ATTENTION not in (tmp_path / "a" / "model" / "config.json").read_text()
    pretrain(dataclasses.replace(cfg, attention="varlen"), tmp_path / "c", progress=False, sources=src)
    spans = [r["loss"] for r in read_log(tmp_path / "c")]  # the same run through document spans
    assert np.allclose(spans, [r["loss"] for r in log], rtol=1e-4)


def test_packing_is_refused_for_a_model_of_another_kind(tmp_path):
    tok = byte_bpe_tokenizer(pad=True)
    folder = save_tiny(tiny_causal_lm("qwen3", tok), tok, tmp_path / "llm")
    cfg = PretrainConfig(packing=True, init_from=str(folder), max_len=512, token_budget=2048, device="cpu")
    with pytest.raises(ConfigError, match="packing needs our grid model"):
        pretrain(cfg, tmp_path / "run", progress=False, sources=[])
    with pytest.raises(ConfigError, match="packing needs our grid model"):
        PretrainConfig(packing=True, model=ModelConfig.tiny(), max_len=1024, token_budget=4096)  # flat positions


def test_the_prefetcher_counts_the_seconds_the_loop_waited_for_data(flip_task):
    """`Prefetcher.waited` is what the pretraining log's `data_wait` reports: the training loop starved of batches."""
    sources = [TaskSource([flip_task(i, f"t{i}", (2 + i % 5, 3 + i % 4)) for i in range(12)])]
    stream = PackedStream(SequenceSampler(sources, 512, seed=3), token_budget=2048, pool_size=40, row_len=512)
    plain = PackedStream(SequenceSampler(sources, 512, seed=3), token_budget=2048, pool_size=40, row_len=512)
    built = stream.next

    def slow():  # a stream slower than the loop: every batch is waited for
        time.sleep(0.05)
        return built()

    stream.next = slow
    prefetch = Prefetcher(stream, depth=2, pin=False)
    try:
        for _ in range(6):
            batch, _ = prefetch.get()
            assert torch.equal(batch.input_ids, plain.next().input_ids)
        assert 0.2 < prefetch.waited < 5
        prefetch.waited = 0.0
        time.sleep(0.3)  # the queue fills while the loop is busy elsewhere: the next batch is not waited for
        prefetch.get()
        assert prefetch.waited < 0.04
    finally:
        prefetch.close()
