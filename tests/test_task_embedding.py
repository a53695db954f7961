"""The per-task embedding (`ModelConfig.task_embedding`): pretraining learns a vector per training task from the task
index each sequence carries (packed rows route each document's own), test time learns a new task's vector beside its
adapter and predicts and scores with it, and a model without one is untouched (tiny models, CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from testtime.data.encode import GridCodec, encode_example
from testtime.data.pretrain_data import NO_TASK, SequenceSampler, TaskSequence, collate, first_fit, pack
from testtime.data.sources import TaskSource
from testtime.data.tasks import Example, held_out
from testtime.model.attention import document_mask, use_document_attention
from testtime.model.grid_model import task_names
from testtime.model.loading import ModelConfig, build_model, load_model
from testtime.model.lora import attach_multi_lora
from testtime.model.task_vectors import TaskVectorSlots, attach_task_vectors
from testtime.recipes.pretrain import PretrainConfig, pretrain
from testtime.recipes.pretrain_step import loss_sum
from testtime.stages.engine import greedy_generate, sequence_scores
from testtime.stages.ttt import TTTConfig, build_dataset, fresh_adapters, train_group

CODEC = GridCodec()
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=2048,
                   initializer_range=0.5, task_embedding=True)


def tiny(names=("a", "b", "c", "d", "e"), seed: int = 0):
    torch.manual_seed(seed)
    return build_model(TINY, names).eval()


def _tagged(flip_task, tasks):
    """Sequences of flip tasks of varied sizes, sequence i tagged with task row tasks[i]."""
    shapes = [(3, 4), (5, 5), (2, 2), (6, 3), (4, 4), (2, 5)]
    out = []
    for i, row in enumerate(tasks):
        t = flip_task(i, f"t{i}", shapes[i % len(shapes)])
        enc = encode_example(CODEC, list(t.train)[:2], t.train[2])
        out.append(TaskSequence(enc.input_ids, enc.loss_mask, enc.prompt_len, enc.demos_used, task=row))
    return out


def test_packed_rows_route_each_documents_task(flip_task):
    """Each token of a packed row carries its own document's task; the loss and every gradient equal the padded
    batch's (one task per row), and only the rows of the tasks present get a gradient."""
    seqs = _tagged(flip_task, [0, 1, 2, 0, 1])
    rows = first_fit(seqs, 256)
    packed, padded = pack(rows, 256), collate(seqs, 16)
    assert max(len(r) for r in rows) >= 2
    for b, row in enumerate(rows):
        docs = packed.doc_ids[b]
        for d, s in enumerate(row):
            assert set(packed.task_index[b][docs == d].tolist()) == {s.task}
        assert set(packed.task_index[b][docs == -1].tolist()) <= {NO_TASK}
    grads = []
    for batch in (padded, packed):
        model = tiny()
        with use_document_attention(model):
            mask = None if batch.doc_ids is None else document_mask(batch.doc_ids)
            loss = loss_sum(model, batch.input_ids, batch.labels, mask, batch.task_index)
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in model.parameters()], model.model.task_embedding.table.weight.grad))
    (a, ga, ta), (b, gb, tb) = grads
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert all(float((x - y).norm() / x.norm()) < 1e-5 for x, y in zip(ga, gb, strict=True))
    assert ta[:3].norm(dim=1).min() > 0 and float(ta[3:].abs().sum()) == 0
    with torch.no_grad():  # the index matters: the same tokens under the table's mean give another loss
        assert not torch.allclose(loss_sum(tiny(), padded.input_ids, padded.labels), a, rtol=1e-4)


def test_pretraining_gives_each_training_task_a_row_and_resumes_exactly(tmp_path, flip_task):
    tasks = [flip_task(i, f"t{i}", (2 + i % 4, 3)) for i in range(8)]
    src = [TaskSource(tasks)]
    sampler = SequenceSampler(src, 512, seed=0, task_rows={"t3": 1})
    for _ in range(10):
        enc, tid = sampler.next()
        assert enc.task == (1 if tid == "t3" else NO_TASK)
    dropping = SequenceSampler(src, 512, seed=0, task_rows={f"t{i}": i for i in range(8)}, task_dropout=0.5)
    tags = [(enc.task, int(tid[1:])) for enc, tid in (dropping.next() for _ in range(60))]
    assert all(row in (NO_TASK, i) for row, i in tags) and 10 < sum(row == NO_TASK for row, _ in tags) < 50
    cfg = PretrainConfig(model=dataclasses.replace(TINY, initializer_range=0.02), packing=True, max_len=512,
                         token_budget=2048, pool_size=24, pad_multiple=64, lr=3e-3, warmup_steps=1, total_steps=6,
                         log_every=1, device="cpu", seed=2, holdout=2, val_every=6, checkpoint_minutes=100,
                         task_dropout=0.2)
    straight = pretrain(cfg, tmp_path / "a", progress=False, sources=src)
    held = {t.id for t in held_out(tasks, 2)}
    model = load_model(straight.model_dir).model
    assert task_names(model) == sorted({t.id for t in tasks} - held)
    torch.manual_seed(cfg.seed)
    init = build_model(cfg.model, task_names(model)).model.task_embedding.table.weight
    trained = straight.trained.model.task_embedding.table.weight
    assert (trained - init).norm(dim=1).min() > 0  # every row trained
    pretrain(cfg, tmp_path / "b", progress=False, sources=src, stop_at=3)
    resumed = pretrain(cfg, tmp_path / "b", progress=False, sources=src)
    assert resumed.last_loss == straight.last_loss


def test_a_new_task_learns_its_vector_at_test_time_and_predicts_and_scores_with_it(flip_task):
    model = tiny(seed=1)
    task_list = [flip_task(0, "x0", (2, 3)), flip_task(1, "x1", (3, 2))]
    cfg = TTTConfig(samples=4, epochs=3, rank=2, lr=5e-2)
    lora = fresh_adapters(model, None, [t.id for t in task_list], cfg)
    slots = [m for m in lora.layers.values() if isinstance(m, TaskVectorSlots)]
    assert len(slots) == 1 and any(p is slots[0].vectors for p in lora.parameters())
    mean = model.model.task_embedding.base.mean().detach()
    assert torch.equal(slots[0].vectors.detach(), mean.expand(2, -1))
    seqs = [encode_example(CODEC, list(t.train)[:2], t.train[2]) for t in task_list]
    prompts = [encode_example(CODEC, list(t.train), Example(t.test[0].input)).input_ids for t in task_list]

    def outputs():
        from testtime.model.lora import Adapters

        ad = Adapters.per_item(lora, 2)
        scores = [s.logprob for s in sequence_scores(model, seqs, CODEC.pad_id, adapters=ad)]
        return scores, [g.logprob for g in greedy_generate(model, prompts, [8, 8], CODEC, adapters=ad)]

    base = ([s.logprob for s in sequence_scores(model, seqs, CODEC.pad_id)],
            [g.logprob for g in greedy_generate(model, prompts, [8, 8], CODEC)])
    np.testing.assert_allclose(outputs(), base, rtol=1e-5)  # fresh slots change nothing
    train_group(model, lora, [build_dataset(t, CODEC, cfg) for t in task_list], cfg, pad_id=CODEC.pad_id,
                task_ids=[t.id for t in task_list])
    assert (slots[0].vectors.detach() - mean).norm(dim=1).min() > 0
    trained = outputs()
    with torch.no_grad():  # the same adapters with the vectors put back at the mean: other scores, other decoding
        slots[0].vectors.copy_(mean.expand(2, -1))
    without = outputs()
    assert not np.allclose(trained[0], without[0], rtol=1e-4) and not np.allclose(trained[1], without[1], rtol=1e-4)
    lora.detach()
    assert type(model.model.task_embedding).__name__ == "TaskEmbedding"


def test_a_model_without_a_task_embedding_is_untouched(tiny_grid_model):
    model = tiny_grid_model()
    lora = attach_multi_lora(model, 2)
    names = set(lora.layers)
    assert not attach_task_vectors(lora) and set(lora.layers) == names and model.model.task_embedding is None
    with pytest.raises(ValueError, match="task_index"):
        model(torch.zeros(1, 4, dtype=torch.long), task_index=torch.zeros(1, dtype=torch.long))


def test_evaluate_uses_a_models_task_embedding_by_itself(small_cfg, synthetic_tasks, monkeypatch):
    import testtime.stages.ttt as ttt_mod
    from testtime.recipes.grid import solve_tasks

    attached = []

    def spy(lora):
        attached.append(attach_task_vectors(lora))
        return attached[-1]

    monkeypatch.setattr(ttt_mod, "attach_task_vectors", spy)
    model = tiny(seed=2)
    solved = solve_tasks(synthetic_tasks(2), small_cfg(), model, CODEC, show_progress=False)
    assert all(r.get("error") is None and r["ttt_loss"] for r in solved.records)
    assert attached == [True]
    assert type(model.model.task_embedding).__name__ == "TaskEmbedding"  # the run's end puts the table back
