"""Full-weight per-task updates (`TTTConfig.adapter = "full"`): batched like the LoRA bank, a no-op at the start,
each task's result independent of the tasks it trains with, and the whole run through the command line."""

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.config import ConfigError
from testtime.data.encode import GridCodec
from testtime.model.lora import MultiFullLinear, attach_multi_lora
from testtime.model.training import pad_right, target_loss
from testtime.stages import budget
from testtime.stages.ttt import (
    FULL_BYTES_PER_WEIGHT,
    TTTConfig,
    build_dataset,
    fresh_adapters,
    max_tasks_together,
    target_weights,
    train_adapters,
    train_group,
    train_peft,
)

runner = CliRunner()


def test_a_full_adapter_starts_as_a_no_op_and_learns_the_demonstrations(tiny_llama, flip_task):
    model = tiny_llama()
    base = copy.deepcopy(model)
    codec = GridCodec()
    cfg = TTTConfig(samples=8, epochs=6, batch_size=4, lr=1e-3, adapter="full")
    data = build_dataset(flip_task(), codec, cfg)
    full = attach_multi_lora(model, 1, kind="full")
    assert full.kind == "full" and all(isinstance(layer, MultiFullLinear) for layer in full.layers.values())
    # Every target weight gets an update of its own shape, in float32 whatever the model's dtype.
    assert sum(p.numel() for p in full.parameters()) == target_weights(base)
    assert all(p.dtype == torch.float32 for p in full.parameters())
    ids, mask = pad_right(data, codec.pad_id, "cpu")

    def loss() -> float:
        full.use(torch.zeros(len(data), dtype=torch.long))
        with torch.no_grad():
            return float(target_loss(model, ids, mask, [slice(0, len(data))])[0])

    with torch.no_grad():
        full.use(torch.zeros(len(data), dtype=torch.long))
        torch.testing.assert_close(model(input_ids=ids).logits, base(input_ids=ids).logits, rtol=0, atol=0)
    before = loss()
    result = train_adapters(model, full.parameters(), [data], cfg, pad_id=codec.pad_id, select=full.use)
    after = loss()
    assert after < 0.8 * before, (before, after)
    assert result.losses[0][-1] < result.losses[0][0]
    # The bare model is untouched: the update lives beside the frozen weights.
    full.use(None)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_full_adapters_trained_together_equal_each_trained_alone(tiny_llama, flip_task):
    codec = GridCodec()
    tasks = [flip_task(s, f"t{s}", shape=(2 + s, 3)) for s in range(3)]  # unequal lengths: padding differs too
    # A tight clip, so the per-adapter clipping acts and must keep the adapters apart.
    cfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-3, grad_clip=0.05, adapter="full")
    data = [build_dataset(t, codec, cfg) for t in tasks]
    model = tiny_llama()
    full = fresh_adapters(model, None, [t.id for t in tasks], cfg)
    together = train_group(model, full, data, cfg, pad_id=codec.pad_id, task_ids=[t.id for t in tasks])
    for k, task in enumerate(tasks):
        alone_model = tiny_llama()
        alone = fresh_adapters(alone_model, None, [task.id], cfg)
        res = train_group(alone_model, alone, [data[k]], cfg, pad_id=codec.pad_id, task_ids=[task.id])
        np.testing.assert_allclose(together.losses[k], res.losses[0], rtol=1e-4, atol=1e-5)
        want, got = full.state(k), alone.state(0)
        assert want.keys() == got.keys() and all(n.endswith(".delta") for n in want)
        for name in want:
            # Adam divides by tiny second moments, so float sums in another order move a weight by ~1e-5.
            torch.testing.assert_close(want[name], got[name], rtol=1e-3, atol=1e-4)
        assert max(float(v.abs().max()) for v in want.values()) > 1e-4  # training moved it
    # A later group starts from zero again, and a LoRA config gets a LoRA bank back.
    again = fresh_adapters(model, full, ["x"], cfg)
    assert again is full and all(float(p.abs().max()) == 0 for p in full.parameters())
    lora = fresh_adapters(model, full, ["x"], TTTConfig(rank=2))
    assert lora.kind == "lora" and lora is not full


def test_full_adapter_paths_agree(tiny_llama):
    """The single-adapter path, the loop over adapters and the per-row gather give the same outputs."""
    model = tiny_llama()
    full = attach_multi_lora(model, 3, kind="full")
    with torch.no_grad():
        for p in full.parameters():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 10, (4, 12))
    full.use(torch.full((4,), 2))
    assert full.ctx.single == 2
    fast = model(input_ids=ids).logits
    full.ctx.single = None
    torch.testing.assert_close(model(input_ids=ids).logits, fast, rtol=1e-5, atol=1e-5)
    full.use(torch.tensor([2, 0, 1, 0]))
    assert full.ctx.segments == [(0, 0, 2), (1, 2, 3), (2, 3, 4)]
    looped = model(input_ids=ids).logits
    full.ctx.segments = None
    torch.testing.assert_close(model(input_ids=ids).logits, looped, rtol=1e-5, atol=1e-5)
    # Never a per-row copy of the weights, wherever the rows are: the loop serves a GPU batch too.
    assert not full._gathers and attach_multi_lora(tiny_llama(), 2)._gathers


def test_full_groups_are_capped_by_memory(tiny_llama, monkeypatch):
    model = tiny_llama()
    per_task = FULL_BYTES_PER_WEIGHT * target_weights(model)
    monkeypatch.setattr("testtime.stages.ttt.available_memory", lambda device: 40 * per_task)
    assert max_tasks_together(model, TTTConfig(adapter="full")) == 10  # a quarter of a CPU's memory
    assert max_tasks_together(model, TTTConfig()) is None
    assert max_tasks_together(model, TTTConfig(adapter="full", shared=True)) is None
    monkeypatch.setattr("testtime.stages.ttt.available_memory", lambda device: 0)
    assert max_tasks_together(model, TTTConfig(adapter="full")) == 1  # one task still runs (or fails alone)


def test_grid_runs_plan_smaller_groups_for_full(tiny, small_cfg, synthetic_tasks, monkeypatch):
    from testtime.recipes.grid import GridKind

    model, codec = tiny
    tasks = synthetic_tasks(6)
    monkeypatch.setattr("testtime.stages.ttt.available_memory",
                        lambda device: 8 * FULL_BYTES_PER_WEIGHT * target_weights(model))  # 2 tasks' worth
    # A task's members each take an adapter's room: 2 full adapters' memory holds one task of the default's two.
    for adapter, members, most in (("lora", 2, 4), ("full", 1, 2), ("full", 2, 1)):
        kind = GridKind(small_cfg(**{"ttt_cfg.adapter": adapter, "policy": "always", "ensemble_cfg.adapters": members}),
                        model, codec)
        ready, _ = kind.prepare(tasks)
        assert max(len(g) for g in kind.groups(ready, 4)) == most


def test_the_budget_prices_a_full_step_above_a_lora_one(tiny):
    model, _ = tiny
    shape = budget.Shape.of(model)
    speed = budget.Speed(row_token=1e-5, step=1e-4)
    lora = budget.ttt_step_seconds([100, 120], 2, shape, speed)
    full = budget.ttt_step_seconds([100, 120], 2, shape, speed, "full")
    assert 0 < shape.targets <= 1 and full > lora


def test_the_peft_reference_path_refuses_full(tiny_llama, flip_task):
    cfg = TTTConfig(samples=2, epochs=1, adapter="full")
    data = build_dataset(flip_task(), GridCodec(), cfg)
    with pytest.raises(ConfigError, match="^the peft reference path trains LoRA adapters only, not adapter 'full'$"):
        train_peft(tiny_llama(), data, cfg, pad_id=GridCodec().pad_id)


def test_evaluate_with_full_adapters_from_the_command_line(tmp_path, synthetic_tasks, one_line_error):
    from testtime.data.tasks import save_tasks
    from testtime.model.loading import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    save_tasks(synthetic_tasks(3), tmp_path / "tasks")
    args = ["evaluate", "--tasks", str(tmp_path / "tasks"), "--model", str(tmp_path / "model"), "--device", "cpu",
            "--samples", "2", "--epochs", "1", "--views", "1", "--max-group", "2", "--max-seconds", "600"]
    res = runner.invoke(app, [*args, "--adapter", "full", "--lr", "1e-4", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["ttt_cfg"]["adapter"] == "full" and config["ttt_cfg"]["lr"] == 1e-4
    records = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["error"] is None and r["ttt_loss"] for r in records)
    assert all(r["policy"]["ttt_steps"] > 0 for r in records)

    bad = runner.invoke(app, [*args, "--adapter", "foo", "--out", str(tmp_path / "bad")])
    assert one_line_error(bad) == 'error: --adapter must be one of lora, full, got "foo"'
    assert not (tmp_path / "bad").exists()
