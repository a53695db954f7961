"""`testtime evaluate --model A --model B` and `testtime.evaluate_checkpoints`: a run with each model under
OUT/checkpoints/, then their attempts combined into OUT as `testtime combine` combines them. The two models are the
shipped one and its int8 copy (`testtime quantize`), without TTT on the two smallest evaluation tasks: a random
tiny model answers nothing, and attempts that are all empty would combine the same whatever the code did."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import testtime
from testtime.cli import app
from testtime.core.store import read_results
from testtime.data.tasks import load_tasks, save_task
from testtime.model.int8 import quantize_model
from testtime.model.loading import DEFAULT_MODEL_DIR
from testtime.report.combine import combine_attempts
from testtime.stages import budget

FLAGS = ["--device", "cpu", "--no-ttt", "--views", "4", "--max-seconds", "300"]
PACE = budget.Speed(row_token=1e-3, step=0.02)  # a fixed pace, so a slow machine cuts nothing (tests/test_golden.py)


@pytest.fixture()
def two_models(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "measure_speed", lambda model, *a, **k: PACE)
    (tmp_path / "a").symlink_to(DEFAULT_MODEL_DIR)
    quantize_model(DEFAULT_MODEL_DIR, tmp_path / "b")
    by_id = {t.id: t for t in load_tasks("arc1/eval")}
    for tid in ("66e6c45b", "00576224"):
        save_task(by_id[tid], tmp_path / "tasks" / f"{tid}.json")
    return tmp_path


def evaluate(runner, root, out, *models):
    args = ["evaluate", "--tasks", str(root / "tasks"), "--out", str(out), *FLAGS]
    for m in models:
        args += ["--model", str(root / m)]
    return runner.invoke(app, args)


def by_task(run) -> dict:
    return {r["task_id"]: r for r in read_results(run)}


def test_each_model_runs_as_alone_and_the_attempts_combine_first_attempts_first(two_models):
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
    assert all(q for r in a.values() for q in r["attempts"])  # every test input answered: the check below has teeth
    for tid, rec in both.items():
        want = [combine_attempts([qa, qb])[0] for qa, qb in zip(a[tid]["attempts"], b[tid]["attempts"], strict=True)]
        assert rec["attempts"] == want and rec["combined"]["runs"] == ["1-a", "2-b"]
        assert rec["score"] >= max(a[tid]["score"], b[tid]["score"])  # each run's first attempt is kept
    summary = json.loads((root / "ab/summary.json").read_text())
    assert summary["run_scores"] == {"1-a": sum(r["score"] for r in a.values()),
                                     "2-b": sum(r["score"] for r in b.values())}
    assert (root / "ab/submission.json").exists()
    # run again: each run resumes (nothing left to do) and the combination is written again, the same
    before = (root / "ab/results.jsonl").read_text()
    again = evaluate(runner, root, root / "ab", "a", "b")
    assert again.exit_code == 0, again.output
    assert (root / "ab/results.jsonl").read_text() == before
    assert len(read_results(first)) == 2  # no task solved twice


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
    with pytest.raises(testtime.ConfigError, match="first argument"):
        testtime.evaluate_checkpoints([root / "a", root / "b"], root / "tasks", root / "w", model=str(root / "a"))
