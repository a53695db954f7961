"""Kaggle ARC Prize submission files: writing, scoring, and the submit/score commands."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.data.tasks import Example, Task, save_tasks
from testtime.report.submission import read_submission, score_submission, submission_from_records, write_submission

A, B, C = [[1, 2]], [[3]], [[4, 4], [4, 4]]


def two_tasks():
    g = lambda x: np.asarray(x, dtype=np.uint8)  # noqa: E731
    t1 = Task("a", (Example(g(B), g(B)),), (Example(g(B), g(A)), Example(g(B), g(C))))
    t2 = Task("b", (Example(g(B), g(B)),), (Example(g(B), g(B)),))
    return [t1, t2]


def test_format_and_missing_attempts():
    recs = [{"task_id": "a", "attempts": [[A, None], [None, None]]}]
    sub = submission_from_records(recs, two_tasks())
    assert sub == {"a": [{"attempt_1": A, "attempt_2": [[0]]}, {"attempt_1": [[0]], "attempt_2": [[0]]}],
                   "b": [{"attempt_1": [[0]], "attempt_2": [[0]]}]}  # a task without a record still has its entry


def test_score_against_tasks_and_solutions_file(tmp_path):
    tasks = two_tasks()
    path = write_submission([{"task_id": "a", "attempts": [[B, A], [C, B]]}], tmp_path / "submission.json")
    res = score_submission(path, tasks)
    assert res["tasks"] == {"a": 1.0, "b": 0.0} and res["score"] == 1.0 and res["missing"] == ["b"]
    assert res["percent"] == 50.0
    sol = tmp_path / "solutions.json"
    sol.write_text(json.dumps({"a": [A, A], "b": [B]}))
    assert score_submission(path, sol)["tasks"] == {"a": 0.5, "b": 0.0}


def test_malformed_submission_is_named(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"a": [{"attempt_1": A}]}))
    with pytest.raises(ValueError, match="task a: entry 0 needs 'attempt_1' and 'attempt_2'"):
        read_submission(p)


def test_submit_and_score_commands(tmp_path):
    tasks = two_tasks()
    save_tasks(tasks, tmp_path / "tasks")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps({"task_id": "a", "attempts": [[A, None], [C, None]]}) + "\n")
    (run / "config.json").write_text(json.dumps({"tasks": str(tmp_path / "tasks"), "limit": None}))
    runner = CliRunner()
    res = runner.invoke(app, ["submit", str(run), "--out", str(tmp_path / "sub.json")])
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "sub.json").read_text())) == {"a", "b"}
    res = runner.invoke(app, ["score", str(tmp_path / "sub.json"), "--solutions", str(tmp_path / "tasks")])
    assert res.exit_code == 0 and "score 1 / 2 = 50.00%" in res.output
    res = runner.invoke(app, ["score", str(tmp_path / "nope.json"), "--solutions", str(tmp_path / "tasks")])
    assert res.exit_code == 2 and "no such submission file" in res.stderr
