"""Run folders are read through one schema (testtime.core.schema): a record or run config of the wrong shape is one
line naming the file, the line and the field, for report, submit, compare and a resumed run alike."""

import json

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.schema import check_record
from testtime.core.store import read_config, read_records

runner = CliRunner()
GOOD = {"task_id": "t0", "attempts": [[[[1, 2]], None]], "correct": [True], "score": 1.0, "seconds": 0.5,
        "votes": [[{"grid": [[1, 2]], "votes": 3, "count": 3}]], "ttt_loss": [0.5, 0.25], "invalid": 0, "error": None,
        "policy": {"name": "extended", "decision": "long", "signals": {"agreement": 0.5}, "ttt_steps": 48},
        "compute": {"ttt": 1.5}, "tokens": {"ttt": 10, "generated": 4}}


@pytest.mark.parametrize("change, problem", [
    ({"score": "abc"}, 'score: input should be a valid number, got "abc"'),
    ({"score": 2.0}, "score: input should be less than or equal to 1, got 2.0"),
    ({"correct": 5}, "correct: input should be a valid list, got 5"),
    ({"correct": [1]}, "correct[0]: input should be a valid boolean, got 1"),
    ({"attempts": 5}, "attempts: input should be a valid list, got 5"),
    ({"attempts": [[[[12]]]]}, "attempts[0][0][0][0]: input should be less than or equal to 9, got 12"),
    ({"attempts": [[[[1, 2], [3]]]]}, "attempts[0][0]: grid is not rectangular"),
    ({"task_id": ["a"]}, 'task_id: input should be a valid string, got ["a"]'),
    ({"task_id": None}, "task_id: input should be a valid string, got null"),
    ({"task_id": ""}, "task_id: string should have at least 1 character"),
    ({"seconds": -1}, "seconds: input should be greater than or equal to 0"),
    ({"votes": [[{"grid": "x"}]]}, "votes[0][0].grid: input should be a valid list"),
])
def test_a_bad_record_is_one_line_with_file_line_and_field(tmp_path, change, problem):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **change}) + "\n")
    with pytest.raises(ValueError) as e:
        read_records(path)
    assert str(e.value).startswith(f"{path}: line 2: ") and problem in str(e.value) and "\n" not in str(e.value)


def test_good_records_of_both_kinds_and_older_runs_read():
    text = {"task_id": "x", "kind": "text", "answers": ["a", None], "method": "rank", "scores": [[-1.0, -2.5], None],
            "correct": [True, False], "score": 0.5, "ttt_loss": None, "seconds": 0.1, "tokens": {"ttt": 3},
            "error": None}
    for rec in (GOOD, text, {"task_id": "old", "future_field": {"anything": [1]}}):
        assert check_record(rec, "here") is rec


def _run(tmp_path, name: str, records: list, config) -> str:
    run = tmp_path / name
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        (run / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return str(run)


@pytest.mark.parametrize("command", ["report", "submit", "compare"])
@pytest.mark.parametrize("change", [{"score": "abc"}, {"correct": 5}, {"attempts": 5}, {"task_id": ["a"]},
                                    {"task_id": None}])
def test_commands_refuse_a_bad_record_in_one_line(tmp_path, command, change, one_line_error):
    good = _run(tmp_path, "good", [GOOD], {"tasks": "arc1/eval", "limit": 1})
    bad = _run(tmp_path, "bad", [GOOD, {**GOOD, **change}], {"tasks": "arc1/eval", "limit": 1})
    args = [command, good, bad] if command == "compare" else [command, bad]
    one_line_error(runner.invoke(app, args), "results.jsonl: line 2: ")


@pytest.mark.parametrize("config, problem", [
    ("[1, 2]", "a run's config must be an object, got [1, 2]"),
    ("null", "a run's config must be an object, got null"),
    ('"text"', """a run's config must be an object, got "text\""""),
    ('{"tasks": 3}', "tasks: input should be a valid string, got 3"),
    ('{"tasks": "arc1/eval", "limit": 0}', "limit: input should be greater than or equal to 1, got 0"),
])
@pytest.mark.parametrize("command", ["report", "submit"])
def test_commands_refuse_a_bad_run_config_in_one_line(tmp_path, command, config, problem, one_line_error):
    run = _run(tmp_path, "run", [GOOD], config)
    one_line_error(runner.invoke(app, [command, run]), f"config.json: {problem}")
    with pytest.raises(ValueError, match="config.json: "):
        read_config(run)


def test_a_resumed_run_refuses_a_bad_record(tmp_path, synthetic_tasks, one_line_error):
    from testtime.data.tasks import save_tasks

    save_tasks(synthetic_tasks(1), tmp_path / "tasks")
    run = _run(tmp_path, "run", [{**GOOD, "score": "abc"}], None)
    res = runner.invoke(app, ["evaluate", "--tasks", str(tmp_path / "tasks"), "--out", run, "--device", "cpu"])
    one_line_error(res, "results.jsonl: line 1: score: input should be a valid number")
