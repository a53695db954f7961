"""Muon beside AdamW in pretraining: which weights each trains, the schedule reaching both, exact resume
(tiny models, CPU)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import _tiny_pretrain_config
from testtime.core.config import ConfigError
from testtime.data.sources import load_sources
from testtime.model.loading import ModelConfig
from testtime.model.optimizers import GroupedMuon, body_matrices, newton_schulz, stacks_on
from testtime.recipes.pretrain import PretrainConfig, pretrain, read_log
from testtime.recipes.pretrain_model import init_model
from testtime.recipes.pretrain_step import make_optimizer


@pytest.fixture(scope="module")
def sources():
    return load_sources(["arc1/train"])


def tiny(**kw) -> PretrainConfig:
    grid = dataclasses.replace(ModelConfig.tiny(), grid_positions=True, rope_theta=100.0)
    return _tiny_pretrain_config(**{"model": grid, "optimizer": "muon", **kw})


def build(cfg: PretrainConfig, tasks=()):
    torch.manual_seed(0)
    return init_model(cfg, "cpu", None, list(tasks))[0]


def test_muon_trains_the_body_matrices_and_adamw_everything_else():
    model = build(tiny())
    opt = make_optimizer(model, 1e-3, (0.9, 0.95), 0.1, fused=False, kind="muon")
    muon = {id(p) for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.parts["adamw"].param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert not muon & adamw and muon | adamw == set(names)  # every weight trained, by exactly one of them
    assert {names[i] for i in muon} == {n for n, p in model.named_parameters()
                                        if n.endswith("proj.weight") and p.dim() == 2}
    embedding = model.get_input_embeddings().weight
    assert id(embedding) in adamw and id(model.get_output_embeddings().weight) in adamw  # tied head: a table
    assert all(p.dim() == 2 for p in body_matrices(model))


def test_a_task_table_stays_with_adamw(sources):
    cfg = tiny(model=dataclasses.replace(tiny().model, task_embedding=True))
    model = build(cfg, sources)
    table = model.model.task_embedding.table.weight
    assert id(table) not in {id(p) for p in body_matrices(model)}


def test_the_schedule_sets_both_parts_lr_and_each_part_moves_its_weights():
    model = build(tiny())
    opt = make_optimizer(model, 1e-2, (0.9, 0.95), 0.0, fused=False, kind="muon")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert {g["lr"] for part in opt.parts.values() for g in part.param_groups} == {5e-3}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 14, (2, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == set(before)
    assert all(p.grad is None for p in model.parameters())


SHAPES = [(48, 48), (48, 48), (96, 48), (48, 96), (96, 48), (40, 24)]  # square, tall, wide, a shape alone


def muons(**kw):
    """torch's Muon and ours on two copies of the same matrices."""
    def weights():
        torch.manual_seed(0)
        return [torch.nn.Parameter(torch.randn(*s) * 0.05) for s in SHAPES]
    cfg = {"lr": 2e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "adjust_lr_fn": "match_rms_adamw",
           **kw}
    return torch.optim.Muon(weights(), **cfg), GroupedMuon(weights(), batched=True, **cfg)


def step_both(opts, seed: int) -> None:
    torch.manual_seed(seed)
    grads = [torch.randn(*s) for s in SHAPES]
    for opt in opts:
        for p, g in zip(opt.param_groups[0]["params"], grads, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("kw", [{}, {"nesterov": False, "adjust_lr_fn": None}, {"adjust_lr_fn": "original"}])
def test_grouped_muon_takes_torchs_steps_exactly(kw):
    theirs, ours = muons(**kw)
    assert copy.deepcopy(ours).batched is True
    start = [p.detach().clone() for p in ours.param_groups[0]["params"]]
    for seed in range(4):
        step_both((theirs, ours), seed)
    for a, b, s in zip(theirs.param_groups[0]["params"], ours.param_groups[0]["params"], start, strict=True):
        assert torch.equal(a, b) and not torch.equal(b, s)


def test_grouped_muon_stacks_under_pretrainings_scheduler(monkeypatch):
    """A scheduler records `initial_lr` in every group; GroupedMuon must still take its stacked step (it once fell
    back to torch's matrix-by-matrix loop for every pretraining step: 0.150 s a step against AdamW's 0.106 on one
    H100, results/h100-arch-muon-2026-12-07.md), and the same step as torch's."""
    import testtime.model.optimizers as optimizers

    stacked = []
    monkeypatch.setattr(optimizers, "newton_schulz", lambda *a: stacked.append(a[0].shape) or newton_schulz(*a))
    theirs, ours = muons()
    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 / (1 + i)) for opt in (theirs, ours)]
    assert "initial_lr" in ours.param_groups[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, so nothing said
        for seed in range(3):
            step_both((theirs, ours), seed)
            for sched in scheds:
                sched.step()
    assert len(stacked) == 3 * len(set(SHAPES)) and all(len(shape) == 3 for shape in stacked)
    assert all(torch.equal(a, b) for a, b in zip(theirs.param_groups[0]["params"], ours.param_groups[0]["params"],
                                                 strict=True))
    # pretraining's own optimizer and scheduler, stacking as on a GPU
    opt = make_optimizer(build(tiny()), 1e-3, (0.9, 0.95), 0.1, fused=False, kind="muon")
    opt.parts["muon"].batched = True
    torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    for p in opt.parts["muon"].param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    stacked.clear()
    opt.parts["muon"].step()
    assert stacked
    # an option the stacked step does not know (a later torch's) falls back to torch's loop, and says so
    ours.param_groups[0]["later_option"] = True
    stacked.clear()
    with pytest.warns(UserWarning, match="later_option"):
        step_both((ours,), 9)
    assert not stacked


def test_grouped_muon_follows_each_groups_own_lr_and_decay_as_a_schedule_moves_them():
    """Two groups of their own lr and weight decay, a matrix without a gradient (left alone), the lr set between
    steps as a scheduler does: torch's steps, to the bit."""
    def groups():
        torch.manual_seed(0)
        weights = [torch.nn.Parameter(torch.randn(*s) * 0.05) for s in SHAPES]
        return [{"params": weights[:3], "lr": 1e-3, "weight_decay": 0.0}, {"params": weights[3:], "weight_decay": 0.2}]
    kw = {"lr": 3e-3, "momentum": 0.9, "nesterov": True, "adjust_lr_fn": "match_rms_adamw"}
    opts = (torch.optim.Muon(groups(), **kw), GroupedMuon(groups(), batched=True, **kw))
    idle = [opt.param_groups[1]["params"][1].detach().clone() for opt in opts]
    for seed, scale in enumerate((1.0, 0.5, 0.25)):
        torch.manual_seed(seed)
        grads = [torch.randn(*s) for s in SHAPES]
        for opt in opts:
            params = [p for g in opt.param_groups for p in g["params"]]
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                p.grad = None if i == 4 else g.clone()
            for group, lr in zip(opt.param_groups, (1e-3, 3e-3), strict=True):
                group["lr"] = lr * scale
            opt.step()
    theirs, ours = ([p for g in opt.param_groups for p in g["params"]] for opt in opts)
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours, strict=True))
    assert torch.equal(ours[4], idle[1]) and 4 not in {i for i, p in enumerate(ours) if p in opts[1].state}


def test_stacks_on_a_gpu_unless_told_and_hooks_run_once_a_step():
    assert stacks_on(torch.device("cuda", 0), None) and not stacks_on(torch.device("cpu"), None)
    assert stacks_on(torch.device("cpu"), True) and not stacks_on(torch.device("cuda"), False)
    calls = []
    for batched in (None, True):  # torch's step (the CPU's) and the stacked one
        opt = muons()[1]
        opt.batched = batched
        opt.register_step_pre_hook(lambda *a, b=batched: calls.append(b))
        step_both((opt,), 0)
    assert calls == [None, True]


def test_grouped_muon_and_torchs_read_each_others_state():
    theirs, ours = muons()
    step_both((theirs, ours), 0)
    swapped = muons()
    # ours -> torch's, torch's -> ours (copies: a loaded state shares the source's tensors), weights as they stood
    swapped[0].load_state_dict(copy.deepcopy(ours.state_dict()))
    swapped[1].load_state_dict(copy.deepcopy(theirs.state_dict()))
    for opt, src in ((swapped[0], ours), (swapped[1], theirs)):
        for p, q in zip(opt.param_groups[0]["params"], src.param_groups[0]["params"], strict=True):
            p.data.copy_(q)
    step_both((theirs, ours, *swapped), 1)
    for a, b, c, d in zip(*(opt.param_groups[0]["params"] for opt in (theirs, ours, *swapped)), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_pretraining_steps_muon_by_shape_on_a_gpu_only(monkeypatch):
    import testtime.model.optimizers as optimizers

    monkeypatch.setattr(optimizers, "newton_schulz", lambda *a: pytest.fail("stacked on a CPU"))
    opt = make_optimizer(build(tiny()), 1e-3, (0.9, 0.95), 0.1, fused=False, kind="muon")
    assert isinstance(opt.parts["muon"], GroupedMuon) and opt.parts["muon"].batched is None
    before = [p.detach().clone() for p in opt.parts["muon"].param_groups[0]["params"]]
    for p in opt.parts["muon"].param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    opt.parts["muon"].step()  # a CPU: torch's own loop
    assert all(not torch.equal(b, p) for b, p in zip(before, opt.parts["muon"].param_groups[0]["params"], strict=True))


def test_a_muon_run_resumes_bit_exactly_and_learns(tmp_path, sources):
    cfg = tiny()
    pretrain(cfg, tmp_path / "a", progress=False, sources=sources)
    pretrain(cfg, tmp_path / "b", stop_at=3, progress=False, sources=sources)
    torch.manual_seed(12345)
    pretrain(cfg, tmp_path / "b", progress=False, sources=sources)
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]
    long = tiny(total_steps=30, log_every=5, lr=5e-3, warmup_steps=3)
    pretrain(long, tmp_path / "c", progress=False, sources=sources)
    losses = [r["loss"] for r in read_log(tmp_path / "c")]
    assert losses[-1] < losses[0] - 0.5


def test_a_checkpoint_of_another_optimizer_is_refused_in_one_line(tmp_path, sources):
    pretrain(tiny(optimizer="adamw"), tmp_path, stop_at=2, progress=False, sources=sources)
    with pytest.raises(ConfigError, match="trained with optimizer adamw, not muon"):
        pretrain(tiny(), tmp_path, progress=False, sources=sources)


def test_an_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer"):
        PretrainConfig.from_dict({"optimizer": "sgd"})


def test_the_cli_sets_the_optimizer_and_lr(tmp_path):
    from typer.testing import CliRunner

    from testtime.cli import app

    cfg = tiny(optimizer="adamw", total_steps=2, max_len=512, token_budget=2048)
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(cfg.to_dict()))
    res = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--run-dir", str(tmp_path / "run"),
                                   "--optimizer", "muon", "--lr", "0.004"])
    assert res.exit_code == 0, res.output
    written = PretrainConfig.from_json(tmp_path / "run" / "config.json")
    assert (written.optimizer, written.lr) == ("muon", 0.004)


def test_the_step_benchmark_times_a_fresh_model_of_a_configs_shape(tmp_path):
    # A job that pretrains from scratch carries no weights: the benchmark must not need the shipped model's.
    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "pretrain.json"
    cfg.write_text(json.dumps(tiny().to_dict()))
    out = tmp_path / "bench.md"
    env = {**os.environ, "TESTTIME_MODEL": str(tmp_path / "no-such-model")}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "muon_step.py"), "--config", str(cfg),
                           "--device", "cpu", "--steps", "1", "--rounds", "1", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert "| GroupedMuon |" in table and "| torch.optim.Muon |" in table
