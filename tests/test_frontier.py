"""Issue 25's measurement on the CPU: the mixed stream (familiar training tasks and novel evaluation tasks, labelled,
in a seeded order), the frontier at matched compute over fixed schedules and budgets, the leave-one-out audit table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from testtime.data.tasks import load_tasks

BENCH = Path(__file__).parents[1] / "benchmarks"


def bench(name: str):
    sys.path.insert(0, str(BENCH))  # the benchmarks import their shared provenance module
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def arc1():
    return load_tasks("arc1/train"), load_tasks("arc1/eval")


def test_the_stream_mixes_familiar_training_tasks_and_novel_evaluation_tasks_in_a_seeded_order(arc1, tmp_path):
    from testtime.data.sources import TaskSource, split_holdout

    stream = bench("mixed_stream")
    train, evaluation = arc1
    pool, held = stream.familiar_pool(train, 40)
    assert len(held) == 40 and len(pool) == len(train) - 40
    _, held_out = split_holdout([TaskSource(train)], 40)  # the tasks pretraining kept out, by the same rule
    assert set(held) == {t.id for t in held_out} and not set(held) & {t.id for t in pool}
    got = stream.build_stream(pool, evaluation, 30, 30, seed=0)
    eval_ids, train_ids = {t.id for t in evaluation}, {t.id for t in train}
    assert [label for _, label in got].count("familiar") == 30 and len({t.id for t, _ in got}) == 60
    for t, label in got:  # familiar only from training, never a held-out one; novel only from evaluation
        assert (t.id in train_ids and t.id not in held) if label == "familiar" else t.id in eval_ids
    labels = [label for _, label in got]
    assert labels != sorted(labels)  # mixed, not one block after the other
    assert [t.id for t, _ in stream.build_stream(pool, evaluation, 30, 30, seed=0)] == [t.id for t, _ in got]
    assert [t.id for t, _ in stream.build_stream(pool, evaluation, 30, 30, seed=1)] != [t.id for t, _ in got]
    stream.write_challenges([t for t, _ in got], tmp_path, "stream")
    back = load_tasks(tmp_path / "stream-challenges.json")  # the solutions beside it, found by name
    assert [t.id for t in back] == [t.id for t, _ in got] and all(t.has_solutions for t in back)
    assert back == [t for t, _ in got]
    challenges = json.loads((tmp_path / "stream-challenges.json").read_text())
    assert all(set(e) == {"input"} for t in challenges.values() for e in t["test"])  # test outputs apart


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny-model runs of 6 synthetic tasks: no TTT, 2 and 4 steps for every task, settle, anytime at two budgets;
    the first three tasks labelled familiar, the rest novel."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import _small_cfg, _synthetic_tasks
    from testtime.data.encode import GridCodec
    from testtime.model.loading import ModelConfig, build_model
    from testtime.recipes.grid import evaluate

    torch.manual_seed(0)
    model, codec = build_model(ModelConfig.tiny()).eval(), GridCodec()
    root = tmp_path_factory.mktemp("runs")
    labels = {f"t{i}": "familiar" if i < 3 else "novel" for i in range(6)}
    for name, kw, epochs in [("icl", dict(ttt=False), 1), ("e1", dict(policy="always"), 1),
                             ("e2", dict(policy="always"), 2), ("settle", dict(policy="settle"), 2),
                             ("b1", dict(budget=0.05), 2), ("b2", dict(budget=5.0), 2)]:
        cfg = _small_cfg(**kw)
        cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs = 4, epochs
        evaluate(cfg, root / name, model=model, codec=codec, tasks=_synthetic_tasks(6), show_progress=False,
                 labels=labels if name != "e1" else None)
    return root, labels


def test_the_frontier_sets_each_run_against_the_fixed_schedules_at_its_compute(runs, tmp_path):
    curve = bench("policy_curve")
    root, labels = runs
    names = [str(root / n) for n in ("icl", "e1", "e2", "settle", "b1", "b2")]
    table, n = curve.rows(names, labels)
    assert n == 6
    by = {Path(r["run"]).name: r for r in table}
    assert [by[k]["frontier"] for k in ("icl", "e1", "e2", "settle", "b1")] == [True, True, True, False, False]
    assert by["b1"]["label"] == "anytime, budget 0.05 s" and by["b1"]["budget"] == ("anytime", 0.05)
    assert by["e2"]["label"] == "always (4 steps)"
    # Split by the stream's labels, whether the records carry them (b1) or not (e1, run without --labels).
    for k in ("e1", "b1"):
        assert {t: p["n"] for t, p in by[k]["parts"].items()} == {"familiar": 3, "novel": 3}
        assert sum(p["seconds"] for p in by[k]["parts"].values()) == pytest.approx(by[k]["seconds"])
    ref = curve.pick_reference(table, str(root / "e2"))
    text = curve.markdown(table, n, "test", ref)
    assert "### At matched compute" in text and " familiar: pass@2, s/task |" in text
    rows = {m["label"]: m for m in curve.matched(table, ref)}
    assert set(rows) == {"settle", "anytime, budget 0.05 s", "anytime, budget 5 s"}
    for m in rows.values():
        assert m["share"] == pytest.approx(m["per_task"] * 6 / by["e2"]["seconds"])
        assert m["vs_ref"][0] == "always (4 steps)"
    curve.plot(table, tmp_path / "frontier.png", "test")
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_a_run_joined_from_folders_and_kept_to_a_stream(runs):
    """A fixed schedule's point on the stream: its run on one part joined with its run on the other, each task once."""
    curve = bench("policy_curve")
    root, _ = runs
    joined = f"both={root / 'e1'}+{root / 'e2'}"
    assert curve.folders(joined) == ("both", [root / "e1", root / "e2"])
    recs = curve.run_records(joined)
    assert [r["task_id"] for r in recs] == [f"t{i}" for i in range(6)]
    assert all(r["policy"]["ttt_steps"] == 2 for r in recs)  # e1's record of each task, the first folder's
    table, n = curve.rows([joined, str(root / "icl")], {"t1": "novel", "t4": "familiar", "zz": "novel"})
    assert n == 2 and table[0]["label"] == "both" and table[0]["frontier"]


def test_frontier_interpolates_between_the_fixed_schedules_around_a_compute():
    curve = bench("policy_curve")
    fixed = [{"seconds": 10.0, "n": 10, "score": 2.0}, {"seconds": 30.0, "n": 10, "score": 6.0}]
    assert curve.frontier_at(fixed, 2.0) == pytest.approx(4.0)
    assert curve.frontier_at(fixed, 1.0) == pytest.approx(2.0)
    assert curve.frontier_at(fixed, 0.5) is None and curve.frontier_at(fixed, 3.5) is None


def test_the_audit_table_sums_what_the_records_say(tmp_path):
    audit = bench("loo_audit")
    recs = [{"task_id": "a", "seconds": 2.0, "compute": {"loo": 0.5},
             "loo_audit": {"checks": 6, "disagree": 1, "decode_s": 1.5}},
            {"task_id": "b", "seconds": 1.0, "compute": {"loo": 0.25},
             "loo_audit": {"checks": 3, "disagree": 0, "decode_s": 0.5}},
            {"task_id": "c", "seconds": 1.0, "compute": {"loo": 0.0}}]
    got = audit.audit(recs)
    assert got == {"tasks": 2, "checks": 9, "disagree": 1, "tasks_disagreeing": 1, "check_s": 0.75, "decode_s": 2.0,
                   "task_s": 3.0}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    lines = audit.markdown([tmp_path / "r"])
    assert "| 2 | 9 | 1 (1) | 0.8 (25.0%) | 2.0 | 2.7x |" in lines[-1]
