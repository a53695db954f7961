"""`testtime evaluate --model A --model B` and `testtime.evaluate_checkpoints`: a run with each model under
OUT/checkpoints/, then their attempts combined into OUT as `testtime combine` combines them. The two models are the
shipped one and, stored as int8 (`testtime quantize`), the shipped one with its last layer zeroed, without TTT on
the two smallest evaluation tasks: a random tiny model answers nothing, and attempts that are all empty (or all
equal) would combine the same whatever the code did."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import testtime
from testtime.cli import app
from testtime.core.store import read_results
from testtime.recipes.grid import GridKind
from testtime.report.combine import combine_attempts

FLAGS = ["--device", "cpu", "--no-ttt", "--views", "4", "--max-seconds", "300"]


def evaluate(runner, root, out, *models):
    args = ["evaluate", "--tasks", str(root / "tasks"), "--out", str(out), *FLAGS]
    for m in models:
        args += ["--model", str(root / m)]
    return runner.invoke(app, args)


def by_task(run) -> dict:
    return {r["task_id"]: r for r in read_results(run)}


def test_each_model_runs_as_alone_and_the_attempts_combine_first_attempts_first(two_models, monkeypatch,
                                                                                 one_line_error):
    root, runner = two_models, CliRunner()
    got = evaluate(runner, root, root / "ab", "a", "b")
    assert got.exit_code == 0, got.output
    assert any(line.startswith("combined 2 models' runs: ") for line in got.output.splitlines()), got.output
    first, second = root / "ab/checkpoints/1-a", root / "ab/checkpoints/2-b"
    assert json.loads((first / "config.json").read_text())["model"] == str(root / "a")
    assert evaluate(runner, root, root / "solo", "a").exit_code == 0  # the same model alone: the same attempts
    assert {t: r["attempts"] for t, r in by_task(first).items()} == \
        {t: r["attempts"] for t, r in by_task(root / "solo").items()}
    a, b, both = by_task(first), by_task(second), by_task(root / "ab")
    assert set(both) == {"66e6c45b", "00576224"}
    # every test input answered, and the two models answer differently: the checks below have teeth
    assert all(q for r in [*a.values(), *b.values()] for q in r["attempts"])
    assert any(a[t]["attempts"] != b[t]["attempts"] for t in a)
    for tid, rec in both.items():
        want = [combine_attempts([qa, qb])[0] for qa, qb in zip(a[tid]["attempts"], b[tid]["attempts"], strict=True)]
        assert rec["attempts"] == want and rec["combined"]["runs"] == ["1-a", "2-b"]
        assert [q[0] for q in rec["combined"]["sources"]] == ["1-a"] * len(want)  # the first model's first attempt
    assert any("2-b" in q for r in both.values() for q in r["combined"]["sources"])
    summary = json.loads((root / "ab/summary.json").read_text())
    assert summary["run_scores"] == {"1-a": sum(r["score"] for r in a.values()),
                                     "2-b": sum(r["score"] for r in b.values())}
    assert (root / "ab/submission.json").exists()
    # run again: each run resumes with nothing left to solve, and the combination is written again, the same
    before, solved = (root / "ab/results.jsonl").read_text(), []
    run_group = GridKind.run_group
    monkeypatch.setattr(GridKind, "run_group", lambda self, group, *a, **k: solved.append(group) or run_group(
        self, group, *a, **k))
    again = evaluate(runner, root, root / "ab", "a", "b")
    assert again.exit_code == 0, again.output
    assert (root / "ab/results.jsonl").read_text() == before and solved == []
    # the same folder with the models the other way round holds another combination: refused before any run
    one_line_error(evaluate(runner, root, root / "ab", "b", "a"), "combines other runs")
    assert solved == []


def test_the_api_writes_the_same_combination(two_models):
    root = two_models
    assert evaluate(CliRunner(), root, root / "cli", "a", "b").exit_code == 0
    runs, summary = testtime.evaluate_checkpoints([root / "a", root / "b"], root / "tasks", root / "api",
                                                  device="cpu", ttt=False, views=4, max_seconds=300,
                                                  show_progress=False)
    assert [r.out for r in runs] == [root / "api/checkpoints/1-a", root / "api/checkpoints/2-b"]
    assert summary["score"] == json.loads((root / "cli/summary.json").read_text())["score"]
    assert [r["attempts"] for r in read_results(root / "api")] == [r["attempts"] for r in read_results(root / "cli")]


def test_what_cannot_run_with_several_models_is_one_line(two_models, one_line_error):
    root, runner = two_models, CliRunner()
    one_line_error(evaluate(runner, root, root / "x", "a", "a"), "named twice")
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", "data/text/sample.jsonl", "--model", str(root / "a"),
                                       "--model", str(root / "b"), "--device", "cpu"]), "text run takes one model")
    one_line_error(evaluate(runner, root, root / "y", "a", "nowhere"), "no such model folder")
    (root / "z").mkdir()
    (root / "z/notes.txt").write_text("mine")  # a folder of other files is not written into
    one_line_error(evaluate(runner, root, root / "z", "a", "b"), "no combination wrote")
    one_line_error(evaluate(runner, root, root / "v", "a", "b16", "--max-minutes", "0"), "max-minutes")
    # each refused before any model ran: no run folder was made
    assert not (root / "x").exists() and not (root / "y").exists() and not (root / "v").exists()
    assert not (root / "z/checkpoints").exists()
    with pytest.raises(testtime.ConfigError, match="first argument"):
        testtime.evaluate_checkpoints([root / "a", root / "b"], root / "tasks", root / "w", model=str(root / "a"))

