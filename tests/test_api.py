"""The Python API (`testtime.api`): a solver keeps its model across calls, `solve` and `solve_many` give what the run
loop of `testtime evaluate` gives, settings and recipes by name, one-line errors, one call at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import testtime
from testtime.api import RECIPES, Solver, build_config
from testtime.cli import app
from testtime.core.config import ConfigError
from testtime.data.tasks import TaskError, load_tasks, task_to_dict
from testtime.recipes.grid import EvalConfig, evaluate

KEYS = ("attempts", "ttt_loss", "policy", "tokens", "votes", "ranked")


def test_import_testtime_stays_light_until_the_api_is_used():
    code = ("import sys, testtime\n"
            "print(sorted(m for m in ('testtime.api', 'peft', 'matplotlib') if m in sys.modules))\n"
            "testtime.load\n"
            "print('testtime.api' in sys.modules)\n")
    src = str(Path(testtime.__file__).parents[1])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src},
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]


def test_the_api_is_exported_from_the_package():
    assert testtime.Solver is Solver and callable(testtime.load) and callable(testtime.evaluate)
    assert set(testtime.POLICIES) == {"never", "always", "extended", "agree", "loo-stop", "adaptive", "settle", "anytime"}
    assert RECIPES["default"].config() == EvalConfig()
    with pytest.raises(AttributeError):
        testtime.nothing_of_the_kind  # noqa: B018


def test_solve_gives_the_record_a_run_writes_and_every_candidate(tmp_path, tiny, small_cfg, flip_task):
    model, codec = tiny
    task = flip_task()
    solver = Solver(model, codec)
    res = solver.solve(task, recipe=small_cfg(), show_progress=False, max_seconds=None)
    rec = evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=[task], show_progress=False)[0]
    assert {k: res.record[k] for k in KEYS} == {k: rec[k] for k in KEYS}
    assert len(res.attempts) == 1 and len(res.attempts[0]) == 2
    assert all(a is None or a.dtype == np.uint8 for a in res.attempts[0])
    best = [c.grid for c in res.candidates[0][:2]]  # the attempts are the best two candidates (None: fewer)
    best += [None] * (2 - len(best))
    assert all(a is b or np.array_equal(a, b) for a, b in zip(res.attempts[0], best, strict=True))
    assert len(res.ttt_loss) == res.decision["ttt_steps"] > 0
    assert set(res.seconds) == {"icl", "loo", "ttt", "predict", "select"}
    assert res.correct is not None and res.error is None
    assert "<table" in res._repr_html_() and res.html().startswith("<!DOCTYPE html>")


def test_solve_many_trains_tasks_together_as_a_run_groups_them(tmp_path, tiny, small_cfg, synthetic_tasks):
    model, codec = tiny
    tasks = synthetic_tasks(3)
    solver = Solver(model, codec)
    got = solver.solve_many(tasks, recipe=small_cfg(), show_progress=False, max_seconds=None)
    recs = evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=tasks, show_progress=False)
    assert [r.task.id for r in got] == [t.id for t in tasks]
    assert [{k: r.record[k] for k in KEYS} for r in got] == [{k: r[k] for k in KEYS} for r in recs]
    again = solver.solve_many(tasks, recipe=small_cfg(), show_progress=False, max_seconds=None)  # the model as it was
    assert [r.record["attempts"] for r in again] == [r.record["attempts"] for r in got]


def test_tasks_come_as_objects_dicts_or_names_and_one_task_twice_is_solved_once(tiny, small_cfg, flip_task):
    model, codec = tiny
    task = flip_task()
    solver = Solver(model, codec)
    as_dict = {**task_to_dict(task), "id": task.id}
    got = solver.solve_many([task, as_dict, task], recipe=small_cfg(), show_progress=False, max_seconds=None)
    assert [r.record["attempts"] for r in got[1:]] == [got[0].record["attempts"]] * 2
    assert solver.solve_many([], recipe=small_cfg()) == []
    other = flip_task(seed=1)  # same id, other grids
    with pytest.raises(TaskError, match="two different tasks have the id 't'"):
        solver.solve_many([task, other], recipe=small_cfg())
    with pytest.raises(TaskError, match="no such task file or task id"):
        solver.solve("no/such/task", recipe=small_cfg())


def test_settings_go_onto_the_config_and_bad_ones_are_one_line_errors(tiny):
    solver = Solver(*tiny)
    cfg = solver.config(views=4, policy="always", epochs=1, select="vote", **{"select_cfg.colors": 1})
    assert (cfg.predict_cfg.views, cfg.policy, cfg.ttt_cfg.epochs, cfg.select_cfg.method) == (4, "always", 1, "vote")
    assert cfg.select_cfg.colors == 1 and cfg.model is None
    for kw, message in ((dict(views=9), "^views must be between 1 and 8, got 9$"),
                        (dict(nope=1), "^unknown setting 'nope'"),
                        (dict(device="cpu"), "^setting 'device' is not for solving"),
                        (dict(recipe="nope"), "^unknown recipe 'nope'; choose one of: default, fast, max$")):
        with pytest.raises(ConfigError, match=message):
            solver.config(**kw)
    with pytest.raises(ConfigError, match="unknown policy 'x'"):
        solver.solve("arc1/eval/00576224", policy="x")
    text = build_config("data/text/sample.jsonl", "default", settings={"rank": 4})
    assert text.ttt_cfg.rank == 4
    with pytest.raises(ConfigError, match="^views applies to grid tasks, not text tasks$"):
        build_config("data/text/sample.jsonl", settings={"views": 2})


def test_calls_from_several_threads_take_turns(tiny, small_cfg, synthetic_tasks):
    model, codec = tiny
    solver = Solver(model, codec)
    tasks = synthetic_tasks(2)
    alone = [solver.solve(t, recipe=small_cfg(), show_progress=False, max_seconds=None).record["attempts"]
             for t in tasks]
    got: dict[str, object] = {}

    def work(t):
        got[t.id] = solver.solve(t, recipe=small_cfg(), show_progress=False, max_seconds=None).record["attempts"]

    threads = [threading.Thread(target=work, args=(t,)) for t in tasks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [got[t.id] for t in tasks] == alone


def test_evaluate_writes_the_run_folder_the_command_writes(tmp_path, tiny, small_cfg, synthetic_tasks):
    from testtime.data.tasks import save_tasks

    model, codec = tiny
    save_tasks(synthetic_tasks(2), tmp_path / "tasks")
    run = Solver(model, codec).evaluate(tmp_path / "tasks", tmp_path / "run", recipe=small_cfg(), show_progress=False)
    assert [r["task_id"] for r in run.records] == ["t0", "t1"] and run.skipped == []
    assert all((tmp_path / "run" / f).is_file() for f in ("results.jsonl", "summary.json", "report.html"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tasks"] == str(tmp_path / "tasks")


def test_the_golden_records_through_solve_many(tmp_path):
    """The shipped model's attempts on the golden tasks (tests/test_golden.py), solved together by one call."""
    golden = json.loads((Path(__file__).parent / "data" / "golden.json").read_text())["adaptive"]
    by_id = {t.id: t for t in load_tasks("arc1/eval")}
    solver = testtime.load(device="cpu")
    got = solver.solve_many([by_id[tid] for tid in golden], policy="adaptive", samples=4, epochs=1, views=2,
                            select="vote", adapters=1, show_progress=False)
    assert {r.task.id: {"attempts": r.record["attempts"], "decision": r.decision["decision"],
                        "ttt_steps": r.decision["ttt_steps"]} for r in got} == golden


def test_the_command_lists_recipes_and_refuses_an_unknown_one(one_line_error):
    runner = CliRunner()
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0 and res.stdout.startswith("default: ")
    one_line_error(runner.invoke(app, ["solve", "arc1/eval/00576224", "--recipe", "nope"]),
                   "unknown recipe 'nope'; choose one of: default")
    one_line_error(runner.invoke(app, ["evaluate", "--recipe", "default", "--config", "x.json"]),
                   "--config and --recipe: give one of them")
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", "data/text/sample.jsonl", "--recipe", "default2"]),
                   "--recipe applies to grid tasks, not text tasks")
