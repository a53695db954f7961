"""Adaptive TTT policies: signals, gating, rounds, early stop, the LOO pick, compute accounting, CLI."""

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.config import ConfigError
from testtime.data.encode import GridCodec
from testtime.data.tasks import freeze
from testtime.model.lora import attach_multi_lora
from testtime.recipes.grid import GridOps, evaluate
from testtime.report.report import by_decision, summarize
from testtime.stages import policy as policy_mod
from testtime.stages.policy import POLICIES, Policy, agreement, get_policy, loo_tasks, round_steps
from testtime.stages.ttt import TTTConfig, build_dataset, train_adapters
from testtime.stages.vote import Prediction


def g(*rows):
    return freeze(np.array(rows, dtype=np.uint8))


def test_agreement_counts_invalid_views_and_takes_the_weakest_test():
    a, b = g([1, 2]), g([3])
    preds = [Prediction("id", a), Prediction("r90", a), Prediction("r180", b), Prediction("r270", None)]
    assert agreement([preds], [a]) == 0.5
    assert agreement([preds, [Prediction("id", b)]], [a, b]) == 0.5  # the weaker of 0.5 and 1.0
    assert agreement([preds], [None]) == 0.0  # nothing valid: no agreement


def test_loo_tasks_hold_out_each_demo_in_turn(flip_task):
    task = flip_task(0)
    held = loo_tasks(task)
    assert len(held) == len(task.train)
    for i, lt in enumerate(held):
        assert lt.test[0] == task.train[i]
        assert list(lt.train) == [d for j, d in enumerate(task.train) if j != i]
    one = dataclasses.replace(task, train=task.train[:1])
    assert loo_tasks(one) == []  # a single demo leaves nothing to check against


def test_round_steps_and_unknown_policy():
    assert round_steps(16, (0.5, 1.0)) == [8, 16]
    assert round_steps(1, (0.25,)) == [1]
    with pytest.raises(ConfigError, match="unknown policy 'x'.*adaptive"):
        get_policy("x")


def test_the_default_policy_is_the_named_default_and_no_ttt_means_never():
    from testtime.recipes.grid import EvalConfig, effective_policy

    assert effective_policy(EvalConfig()) == policy_mod.DEFAULT_POLICY == "extended"
    assert effective_policy(EvalConfig(ttt=False)) == "never"
    assert effective_policy(EvalConfig(policy="loo-stop")) == "loo-stop"


def test_a_plan_without_ttt_has_no_members_and_no_second_round():
    # Nothing trains: an ensemble would decode and score the base model K times, and the budget would cut a second
    # adapter that costs nothing (a task of thousands of demos under --no-ttt was cut "adapters 2 -> 1" first).
    from testtime.recipes.grid import EvalConfig, plan_of
    from testtime.stages.ensemble import EnsembleConfig
    from testtime.stages.second_round import SecondRoundConfig

    both = {"ensemble_cfg": EnsembleConfig(adapters=4), "second_cfg": SecondRoundConfig(steps=32)}
    never = plan_of(EvalConfig(ttt=False, **both))
    assert never.ensemble.adapters == 1 and never.second.steps == 0
    trained = plan_of(EvalConfig(**both))
    assert trained.ensemble.adapters == 4 and trained.second.steps == 32


def test_the_default_adapters_are_two_and_one_for_the_shared_ablation_and_full_weights():
    # The default's count is left to the plan: the shared ablation trains one adapter for all tasks, so it gets one
    # without being told (it was refused when the default became two); asking it for an ensemble is still an error.
    from testtime.api import build_config
    from testtime.recipes.grid import plan_of

    assert plan_of(build_config(settings={})).ensemble.adapters == 2
    assert plan_of(build_config(settings={"shared": True, "policy": "always"})).ensemble.adapters == 1
    # a full-weight adapter is a copy of the target weights: two a task by default would double TTT's memory
    assert plan_of(build_config(settings={"adapter": "full"})).ensemble.adapters == 1
    assert plan_of(build_config(settings={"adapter": "full", "adapters": 2})).ensemble.adapters == 2
    with pytest.raises(ConfigError, match="takes no ensemble"):
        plan_of(build_config(settings={"shared": True, "policy": "always", "adapters": 2}))


def test_a_later_round_trains_only_its_slots(tiny_llama, flip_task):
    model = tiny_llama()
    codec = GridCodec()
    lora = attach_multi_lora(model, 2, rank=2, alpha=2)
    cfg = TTTConfig(samples=2, epochs=1, batch_size=1, rank=2, lr=1e-2)
    data = build_dataset(flip_task(1), codec, cfg)
    before = [p.detach().clone() for p in lora.parameters()]
    res = train_adapters(model, lora.parameters(), [data], cfg, pad_id=codec.pad_id, select=lora.use,
                         steps=3, slots=[1], round_index=1)
    assert len(res.losses[0]) == 3
    for p, q in zip(lora.parameters(), before, strict=True):
        assert torch.equal(p[0], q[0])  # slot 0 untouched
    assert any(not torch.equal(p[1], q[1]) for p, q in zip(lora.parameters(), before, strict=True))


@pytest.fixture()
def run(tmp_path, tiny, small_cfg, synthetic_tasks):
    """run(policy, n=3): evaluate n synthetic tasks under a policy, 2 TTT steps a round, into tmp_path/policy."""

    def run(name, n=3, **kw):
        model, codec = tiny
        cfg = small_cfg(policy=name, **kw)
        cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs = 4, 1  # 2 steps a round at batch size 2
        return evaluate(cfg, tmp_path / name, model=model, codec=codec, tasks=synthetic_tasks(n), show_progress=False)

    return run


def _check_accounting(recs):
    for r in recs:
        assert set(r["compute"]) == {"icl", "loo", "ttt", "predict", "select"}
        assert r["seconds"] == pytest.approx(sum(r["compute"].values()), abs=1e-3)


def test_extended_is_always_with_its_epochs_unless_epochs_are_given(tmp_path, tiny, small_cfg, synthetic_tasks):
    """The default policy is a preset of the plain recipe: `--policy always --epochs 6` reproduces it; an explicit
    `--epochs N` means N epochs under it too (issue 14: `--epochs 2` used to train 3)."""
    model, codec = tiny

    def run(name, epochs, out=None):
        cfg = small_cfg(policy=name)
        cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs = 4, epochs  # 2 steps an epoch at batch size 2
        return evaluate(cfg, tmp_path / (out or name), model=model, codec=codec, tasks=synthetic_tasks(3),
                        show_progress=False)

    assert policy_mod.get_policy("extended").epochs == 6
    ext, plain = run("extended", None), run("always", 6)
    assert [r["policy"]["ttt_steps"] for r in ext] == [r["policy"]["ttt_steps"] for r in plain] == [12, 12, 12]
    assert [r["policy"]["ttt_steps"] for r in run("extended", 2, "extended-2")] == [4, 4, 4]
    assert [r["attempts"] for r in ext] == [r["attempts"] for r in plain]
    assert [r["ttt_loss"] for r in ext] == [r["ttt_loss"] for r in plain]  # same steps, data order and schedule


def test_never_and_always_match_the_ttt_switch(tmp_path, run):
    never = run("never")
    always = run("always")
    _check_accounting(never + always)
    assert all(r["policy"]["decision"] == "answer" and r["policy"]["ttt_steps"] == 0 for r in never)
    assert all(r["compute"]["ttt"] == 0 and r["compute"]["icl"] > 0 for r in never)
    assert all(r["policy"]["decision"] == "ttt" and r["policy"]["ttt_steps"] == 2 for r in always)
    assert all(r["compute"]["icl"] == 0 and r["compute"]["ttt"] > 0 for r in always)
    assert all(len(r["ttt_loss"]) == 2 for r in always)


def test_agreement_gate_answers_confident_tasks_with_their_icl_answer(run, monkeypatch):
    monkeypatch.setitem(POLICIES, "all-now", Policy("all-now", "test", icl_first=True, answer_at=0.0))
    monkeypatch.setitem(POLICIES, "none-now", Policy("none-now", "test", icl_first=True, answer_at=1.01))
    never = run("never")
    now = run("all-now")
    later = run("none-now")
    assert [r["attempts"] for r in now] == [r["attempts"] for r in never]
    assert all(r["policy"]["ttt_steps"] == 0 and r["compute"]["ttt"] == 0 for r in now)
    assert all(r["policy"]["decision"] == "ttt" and r["policy"]["ttt_steps"] == 2 for r in later)
    assert all(r["compute"]["icl"] > 0 and "agreement" in r["policy"]["signals"] for r in later)


def test_loo_stop_ends_training_of_tasks_that_solve_their_demos(run, monkeypatch):
    real = GridOps.leave_one_out

    def fake(self, items, adapted):
        real(self, items, adapted)  # the real check runs (and is charged); its verdict is scripted
        return [1.0 if self.group[i].id == "t0" else 0.5 for i in items]

    monkeypatch.setattr(GridOps, "leave_one_out", fake)
    recs = {r["task_id"]: r for r in run("loo-stop")}
    _check_accounting(recs.values())
    assert recs["t0"]["policy"]["decision"] == "brief" and recs["t0"]["policy"]["ttt_steps"] == 1
    for tid in ("t1", "t2"):
        assert recs[tid]["policy"]["decision"] == "long" and recs[tid]["policy"]["ttt_steps"] == 2
        assert recs[tid]["policy"]["signals"]["loo_round1"] == 0.5
    assert all(r["compute"]["loo"] > 0 for r in recs.values())


def test_adaptive_keeps_the_icl_answer_where_the_base_model_did_better_on_held_out_demos(run, monkeypatch):
    def fake(self, items, adapted):
        return [0.0 if adapted else 1.0 for _ in items]  # base solves its demos, adapters do not

    monkeypatch.setattr(GridOps, "leave_one_out", fake)
    monkeypatch.setitem(POLICIES, "adaptive", dataclasses.replace(POLICIES["adaptive"], answer_at=1.01))
    never = {r["task_id"]: r for r in run("never")}
    recs = run("adaptive")
    for r in recs:
        assert r["policy"]["decision"] == "long+icl"
        assert r["policy"]["ttt_steps"] == 1 + 2  # a brief round (half) and a long one (the full schedule)
        assert r["attempts"] == never[r["task_id"]]["attempts"]


def test_summary_reports_decisions_and_compute(tmp_path, run):
    recs = run("adaptive")
    s = summarize(recs)
    assert sum(row["n"] for row in s["decisions"].values()) == len(recs)
    assert set(s["compute"]) == {"icl", "loo", "ttt", "predict", "select"}
    assert s["total_seconds"] == pytest.approx(sum(s["compute"].values()), abs=1e-2)
    assert by_decision([{"task_id": "x", "score": 1.0, "correct": [True], "seconds": 2.0,
                         "policy": {"decision": "answer"}}]) == {"answer": {"n": 1, "n_scored": 1, "score": 1.0, "seconds": 2.0}}
    html = (tmp_path / "adaptive" / "results.jsonl").read_text()
    assert '"policy": {"name": "adaptive"' in html


def test_cli_policy_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--policy", "nope", "--limit", "1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: unknown policy 'nope'")
    res = runner.invoke(app, ["evaluate", "--policy", "adaptive", "--no-ttt", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "contradicts" in res.output
    res = runner.invoke(app, ["policies"])
    assert res.exit_code == 0 and all(name in res.output for name in policy_mod.POLICIES)


def test_policy_curve_compares_runs_on_common_tasks(tmp_path, run):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("policy_curve", Path(__file__).parents[1] / "benchmarks" / "policy_curve.py")
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    run("never", n=3)
    run("adaptive", n=2)  # finished fewer tasks: the comparison keeps the common two
    table, n = curve.rows([tmp_path / "never", tmp_path / "adaptive"])
    assert n == 2 and [r["label"] for r in table] == ["never", "adaptive"]
    assert all(r["n"] == 2 for r in table)
    text = curve.markdown(table, n, "test")
    assert "| never | answer | 2 |" in text and "| adaptive |" in text
    curve.plot(table, tmp_path / "curve.png", "test")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_policy_curve_labels_a_fixed_schedule_by_the_steps_it_took(tmp_path, run):
    """A run's config may name no epochs (the default of its day): its label gives the steps its records took,
    not what today's default would make of that config; a full-weight run says so and leaves the frontier."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("policy_curve", Path(__file__).parents[1] / "benchmarks" / "policy_curve.py")
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    run("always", n=2)  # 2 steps a task
    cfg_path = tmp_path / "always" / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw["ttt_cfg"]["epochs"] = None  # today's default would give always 2 epochs of 2 steps: 4
    cfg_path.write_text(json.dumps(raw))
    records = curve.read_records(tmp_path / "always" / curve.RESULTS)
    assert curve.label(tmp_path / "always", records) == "always (2 steps)"
    assert curve.on_frontier(tmp_path / "always")
    raw["ttt_cfg"].update(adapter="full", lr=1e-4)
    cfg_path.write_text(json.dumps(raw))
    assert curve.label(tmp_path / "always", records) == "always (2 steps, full lr 0.0001)"
    assert not curve.on_frontier(tmp_path / "always")


@pytest.mark.parametrize("kw, message", [
    (dict(answer_at=0.5), "needs icl_first"),
    (dict(icl_first=True, loo_gate=True), "only gates answer_at"),
    (dict(rounds=(0.5, 0.0)), "rounds must be positive"),
])
def test_inconsistent_policies_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        Policy("bad", "test", **kw)
