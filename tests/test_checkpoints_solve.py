"""`testtime.load_checkpoints` and `testtime solve --model A --model B`: several models answering a Solver's calls,
each solving the task as it would alone, their attempts combined as `testtime combine` combines runs, a time budget
shared between them. The models are conftest's `two_models` (the shipped one, and the shipped one with its last layer
zeroed, as int8), without TTT: they answer the evaluation tasks differently."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

import testtime
from testtime import api
from testtime.api import Solution, Solver
from testtime.checkpoints import Checkpoints, combined_solution
from testtime.cli import app
from testtime.core.store import read_results
from testtime.data.tasks import as_task
from testtime.recipes import grid
from testtime.recipes.grid import EvalConfig
from testtime.recipes.grid_records import error_record
from testtime.report.combine import combine_attempts

SETTINGS = {"ttt": False, "views": 4}


@pytest.fixture()
def both(two_models):
    return testtime.load_checkpoints([two_models / "a", two_models / "b"], device="cpu")


def test_each_model_solves_as_alone_and_the_attempts_combine_first_attempts_first(two_models, both):
    task = as_task(two_models / "tasks/00576224.json")
    alone = [s.solve(task, max_seconds=None, show_progress=False, **SETTINGS) for s in both.solvers]
    got = both.solve(task, max_seconds=None, show_progress=False, **SETTINGS)
    a, b = (s.record["attempts"] for s in alone)
    assert a != b  # the models answer differently: the checks below have teeth
    assert got.record["attempts"] == [combine_attempts([qa, qb])[0] for qa, qb in zip(a, b, strict=True)]
    names = [str(two_models / "a"), str(two_models / "b")]
    own = got.record["checkpoints"]
    assert got.record["combined"]["runs"] == names and list(own) == names
    assert [own[n]["attempts"] for n in names] == [a, b]
    assert [q[0] for q in got.record["combined"]["sources"]] == [names[0]] * len(a)
    assert got.correct == [any(np.array_equal(x, e.output) for x in q if x is not None)
                           for q, e in zip(got.attempts, task.test, strict=True)]
    # the candidates round robin, each grid once: the first model's best, the second's best where it differs...
    for q, cands in enumerate(got.candidates):
        firsts = [s.candidates[q][0].grid for s in alone]
        assert np.array_equal(cands[0].grid, firsts[0])
        assert len(cands) == len({c.grid.tobytes() + bytes(c.grid.shape) for c in cands})
        want = sum(len(s.candidates[q]) for s in alone) - sum(
            any(np.array_equal(x.grid, y.grid) for y in alone[0].candidates[q]) for x in alone[1].candidates[q])
        assert len(cands) == want
    assert got.seconds == {k: pytest.approx(sum(own[n]["compute"].get(k, 0) for n in names), abs=1e-3)
                           for k in own[names[0]]["compute"]}
    assert both.name == " + ".join(names) and both.device == "cpu"


@pytest.mark.parametrize("n_tasks", [1, 2])
def test_the_budget_is_shared_between_the_models(both, flip_task, monkeypatch, n_tasks):
    given, took = [], []
    solve_many = Solver.solve_many

    def timed(self, tasks, **kw):
        given.append(kw["max_seconds"])
        start = time.perf_counter()
        time.sleep(1.0)  # the first model's time must show in the second's share
        out = solve_many(self, tasks, **kw)
        took.append(time.perf_counter() - start)
        return out

    monkeypatch.setattr(Solver, "solve_many", timed)
    tasks = [flip_task(i, f"f{i}") for i in range(n_tasks)]
    both.solve_many(tasks, max_seconds=100, spent=20, show_progress=False, **SETTINGS)
    # the first model gets half of the 80 s left; the second what is left after it, each task charged its part of
    # the first model's time (a task's budget is its own: the tasks were solved together)
    assert given[0] == pytest.approx(40, abs=0.2)
    assert given[1] == pytest.approx(80 - took[0] / n_tasks, abs=0.2)
    given.clear()
    both.solve_many(tasks, max_seconds=None, show_progress=False, **SETTINGS)
    assert given == [None, None]
    given.clear()
    both.solve_many(tasks, show_progress=False, **SETTINGS)  # "auto": a CPU's 300 s a task
    assert given[0] == pytest.approx(150, abs=0.2)


def test_checkpoints_evaluate_writes_what_evaluate_checkpoints_writes(two_models, both, monkeypatch):
    runs, summary = testtime.evaluate_checkpoints([two_models / "a", two_models / "b"], two_models / "tasks",
                                                  two_models / "loaded", device="cpu", max_seconds=300,
                                                  show_progress=False, **SETTINGS)
    for where in (api, grid):  # a run loads its model through recipes.grid where no solver is given
        monkeypatch.setattr(where, "load_model", lambda *a, **k: pytest.fail("a loaded model was loaded again"))
    again, summary2 = both.evaluate(two_models / "tasks", two_models / "kept", max_seconds=300, show_progress=False,
                                    **SETTINGS)
    assert [r.out.name for r in again] == ["1-a", "2-b"] and summary2["score"] == summary["score"]
    assert [r["attempts"] for r in read_results(two_models / "kept")] == \
        [r["attempts"] for r in read_results(two_models / "loaded")]
    with pytest.raises(testtime.ConfigError, match="keep their models"):
        both.evaluate(two_models / "tasks", two_models / "x", model="elsewhere")


def test_solve_on_the_command_line_with_two_models(two_models, both, one_line_error):
    runner = CliRunner()
    task = str(two_models / "tasks/66e6c45b.json")
    flags = ["--device", "cpu", "--no-ttt", "--views", "4", "--max-seconds", "300"]
    got = runner.invoke(app, ["solve", task, "--model", str(two_models / "a"), "--model", str(two_models / "b"),
                              *flags])
    assert got.exit_code == 0, got.output
    want = both.solve(task, max_seconds=300, show_progress=False, **SETTINGS)
    assert f"solved {sum(want.correct)}/1 test input(s)" in got.output
    came = want.record["combined"]["sources"][0]
    # which model gave each attempt (rich wraps the long paths at the terminal's width)
    assert f"test 1: attempt 1 from {came[0]}, attempt 2 from {came[1]}" in " ".join(got.output.split())
    page = runner.invoke(app, ["solve", task, "--model", str(two_models / "a"), "--model", str(two_models / "b"),
                               *flags, "--html", str(two_models / "page.html")])
    assert page.exit_code == 0 and (two_models / "page.html").read_text() == want.html()
    one_line_error(runner.invoke(app, ["solve", task, "--model", str(two_models / "a"), "--model",
                                       str(two_models / "a"), *flags]), "named twice")
    one_line_error(runner.invoke(app, ["solve", task, "--model", str(two_models / "a"), "--model",
                                       str(two_models / "nowhere"), *flags]), "nowhere")
    # the service refuses the same before it loads a model or listens
    one_line_error(runner.invoke(app, ["serve", "--model", str(two_models / "a"), "--model", str(two_models / "a"),
                                       "--device", "cpu", "--port", "0"]), "named twice")


def test_the_attempts_a_test_input_follow_the_config(two_models, both):
    task = as_task(two_models / "tasks/00576224.json")
    one = both.solve(task, recipe=replace(EvalConfig(), attempts=1), max_seconds=None, show_progress=False,
                     **SETTINGS)
    alone = both.solvers[0].solve(task, recipe=replace(EvalConfig(), attempts=1), max_seconds=None,
                                  show_progress=False, **SETTINGS)
    assert one.record["attempts"] == alone.record["attempts"]  # the first model's one attempt, as alone
    assert all(len(q) == 1 for q in one.record["attempts"])
    assert both.solve_many([]) == []


def test_what_several_models_refuse(two_models, both):
    with pytest.raises(testtime.ConfigError, match="two or more"):
        testtime.load_checkpoints([two_models / "a"])
    with pytest.raises(testtime.ConfigError, match="list of model folders"):
        testtime.load_checkpoints(str(two_models / "a"))
    with pytest.raises(testtime.ConfigError, match="named twice"):
        Checkpoints([both.solvers[0], both.solvers[0]])
    with pytest.raises(testtime.ConfigError, match="not for solving"):
        both.solve(two_models / "tasks/66e6c45b.json", model="elsewhere")


def test_a_task_one_model_cannot_run_keeps_the_others_answers(two_models, both):
    task = as_task(two_models / "tasks/66e6c45b.json")
    ok = both.solvers[0].solve(task, max_seconds=None, show_progress=False, **SETTINGS)
    failed = Solution(task, error_record(task, "out of memory"), [])
    got = combined_solution(task, ["a", "b"], [failed, ok])
    assert got.record["attempts"][0] == ok.record["attempts"][0][:2]
    assert got.record["combined"]["sources"][0] == ["b"] * len(ok.record["attempts"][0])
    assert got.error == "a: out of memory"  # the answer stands, and says what one model met
    assert got.candidates[0][0].grid.tolist() == ok.candidates[0][0].grid.tolist()
    none = combined_solution(task, ["a", "b"], [failed, failed])
    assert none.error == "a: out of memory; b: out of memory" and none.candidates == []
    assert none.record["attempts"] == [[None, None]]


def test_every_model_failing_is_a_task_error(two_models, both, monkeypatch):
    task = as_task(two_models / "tasks/66e6c45b.json")
    monkeypatch.setattr(Solver, "solve_many", lambda self, tasks, **kw: [
        Solution(t, error_record(t, "too long for any budget"), []) for t in tasks])
    with pytest.raises(testtime.TaskError, match="too long for any budget"):
        both.solve(task)


def test_the_ttt_loss_is_the_models_mean_where_their_curves_match(flip_task):
    task = flip_task(0, "t")

    def one(curve, seconds):
        return Solution(task, {**error_record(task, ""), "error": None, "ttt_loss": curve,
                               "compute": {"ttt": seconds, "predict": 1.0}}, [])

    got = combined_solution(task, ["a", "b"], [one([2.0, 1.0], 3.0), one([4.0, 2.0], 5.0)])
    assert got.ttt_loss == [3.0, 1.5] and got.seconds == {"ttt": 8.0, "predict": 2.0}
    assert combined_solution(task, ["a", "b"], [one([2.0, 1.0], 1), one([4.0], 1)]).ttt_loss is None
    assert combined_solution(task, ["a", "b"], [one([2.0], 1), one(None, 1)]).ttt_loss is None
