"""Every reader of JSON goes through one hardened reader: deep nesting, special files and huge files are
one-line errors, never a RecursionError, a hang or a MemoryError."""

import json
import os

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core import jsonio
from testtime.data.tasks import TaskError, load_tasks, save_task

runner = CliRunner()
DEEP = "[" * 100_000


@pytest.fixture()
def task_file(tmp_path, flip_task):
    return save_task(flip_task(), tmp_path / "good" / "t.json")


def _run_dir(tmp_path, results: str, config: str = '{"tasks": "arc1/eval"}'):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(results)
    (run / "config.json").write_text(config)
    return run


def _readers(tmp_path, bad: str):
    """Command lines that read the file `bad` as each kind of single JSON file we read."""
    return {
        "task file": ["tasks", "show", bad],
        "task file (list)": ["tasks", "list", bad],
        "task file (solve)": ["solve", bad, "--device", "cpu"],
        "config (evaluate)": ["evaluate", "--config", bad, "--out", str(tmp_path / "out")],
        "config (pretrain)": ["pretrain", "--config", bad, "--run-dir", str(tmp_path / "pre")],
    }


@pytest.mark.parametrize("reader", ["task file", "task file (list)", "task file (solve)", "config (evaluate)",
                                    "config (pretrain)"])
def test_deep_json_is_one_line_in_every_file_reader(tmp_path, reader, one_line_error):
    bad = tmp_path / "d.json"
    bad.write_text(DEEP)
    res = runner.invoke(app, _readers(tmp_path, str(bad))[reader])
    one_line_error(res, "d.json", "nested deeper than 100 levels")


@pytest.mark.parametrize("value", ["null", "[]", "7"])
@pytest.mark.parametrize("reader", ["config (evaluate)", "config (pretrain)"])
def test_a_config_file_that_is_not_an_object_is_one_line(tmp_path, reader, value, one_line_error, monkeypatch):
    """`null` once read as no file given, and `evaluate` ran the default recipe instead."""
    monkeypatch.setenv("TESTTIME_MODEL", str(tmp_path / "no-model"))  # such a regression fails fast, not a run
    bad = tmp_path / "c.json"
    bad.write_text(value)
    one_line_error(runner.invoke(app, _readers(tmp_path, str(bad))[reader]), "c.json", "expected an object")


def test_deep_json_in_a_task_folder_and_a_text_tasks_file(tmp_path, task_file, one_line_error):
    (task_file.parent / "deep.json").write_text(DEEP)
    one_line_error(runner.invoke(app, ["tasks", "list", str(task_file.parent)]), "deep.json", "nested deeper")
    text = tmp_path / "t.jsonl"
    text.write_text('{"id": "a", "demos": [], "queries": [["q"]]}\n' + DEEP + "\n")
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", str(text), "--out", str(tmp_path / "o")]),
                   "t.jsonl: line 2: JSON nested deeper than 100 levels")


def test_deep_json_in_run_records_and_run_config(tmp_path, one_line_error):
    run = _run_dir(tmp_path, '{"task_id": "a"}\n' + DEEP + "\n")
    one_line_error(runner.invoke(app, ["report", str(run)]), "results.jsonl: line 2: JSON nested deeper")
    (run / "results.jsonl").write_text('{"task_id": "a", "score": 1.0, "correct": [true]}\n')
    (run / "config.json").write_text(DEEP)
    for command in ("report", "submit"):
        one_line_error(runner.invoke(app, [command, str(run)]), "config.json: JSON nested deeper")


def test_moderate_nesting_still_reads():
    nested: list = []
    for _ in range(99):
        nested = [nested]
    assert jsonio.loads("[" * 100 + "]" * 100, "x") == nested  # exactly the limit: read whole
    assert jsonio.loads('["' + "[" * 5000 + '"]', "x") == ["[" * 5000]  # brackets inside strings do not count
    with pytest.raises(ValueError, match="x: JSON nested deeper than 100"):
        jsonio.loads("[" * 101 + "]" * 101, "x")


@pytest.fixture()
def fifo(tmp_path):
    def make(path):
        os.mkfifo(path)
        return path

    return make


def test_a_fifo_never_blocks(tmp_path, task_file, fifo, deadline, one_line_error):
    with deadline(20):
        f = fifo(tmp_path / "f.json")
        one_line_error(runner.invoke(app, ["tasks", "show", str(f)]), "f.json: is a FIFO, not a regular file")
        one_line_error(runner.invoke(app, ["evaluate", "--config", str(f)]), "f.json: is a FIFO")
        fifo(task_file.parent / "pipe.json")  # inside a task folder
        one_line_error(runner.invoke(app, ["tasks", "list", str(task_file.parent)]), "pipe.json: is a FIFO")
        text = fifo(tmp_path / "t.jsonl")
        one_line_error(runner.invoke(app, ["evaluate", "--tasks", str(text)]), "t.jsonl: is a FIFO")
        run = tmp_path / "run"
        run.mkdir()
        fifo(run / "results.jsonl")
        (run / "config.json").write_text('{"tasks": "arc1/eval"}')
        for command in ("report", "submit"):
            one_line_error(runner.invoke(app, [command, str(run)]), "results.jsonl: is a FIFO")
        one_line_error(runner.invoke(app, ["compare", str(run), str(run)]), "results.jsonl: is a FIFO")
        # A run folder to resume: its results file is checked before anything is appended to it.
        resume = tmp_path / "resume"
        resume.mkdir()
        fifo(resume / "results.jsonl")
        one_line_error(runner.invoke(app, ["evaluate", "--tasks", str(task_file), "--no-ttt", "--out", str(resume),
                                           "--device", "cpu"]), "results.jsonl: is a FIFO")


def test_a_link_to_dev_zero_is_refused(tmp_path, task_file, deadline, one_line_error):
    with deadline(20):
        zero = tmp_path / "z.json"
        zero.symlink_to("/dev/zero")
        one_line_error(runner.invoke(app, ["tasks", "show", str(zero)]), "z.json: is a character device")
        one_line_error(runner.invoke(app, ["pretrain", "--config", str(zero)]), "z.json: is a character device")
        run = _run_dir(tmp_path, "")
        (run / "results.jsonl").unlink()
        (run / "results.jsonl").symlink_to("/dev/zero")
        one_line_error(runner.invoke(app, ["report", str(run)]), "results.jsonl: is a character device")


def test_size_cap_is_documented_and_overridable(task_file, monkeypatch, one_line_error):
    monkeypatch.setenv(jsonio.MAX_FILE_ENV, "0.0001")  # about 100 bytes
    one_line_error(runner.invoke(app, ["tasks", "show", str(task_file)]),
                   "t.json: larger than 104 bytes, the limit on a file read (set TESTTIME_MAX_FILE_MB to raise it)")
    monkeypatch.setenv(jsonio.MAX_FILE_ENV, "1")
    assert len(load_tasks(task_file)) == 1
    monkeypatch.setenv(jsonio.MAX_FILE_ENV, "lots")
    one_line_error(runner.invoke(app, ["tasks", "show", str(task_file)]), "TESTTIME_MAX_FILE_MB='lots'")


def test_json_lines_policies(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n[2]')
    assert jsonio.read_json_lines(p) == [(1, {"a": 1}), (3, [2])]  # a file a person wrote: the last line counts
    assert jsonio.read_json_lines(p, complete_only=True) == [(1, {"a": 1})]  # a file we append to: a cut write
    p.write_text('{"a": 1}\n{"b": \n')
    with pytest.raises(TaskError, match=r"x.jsonl: line 2: bad JSON at column 7"):
        jsonio.read_json_lines(p, error=TaskError)
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(ValueError, match="x.jsonl: not UTF-8 text"):
        jsonio.read_json_lines(p)


def test_a_demonstration_without_output_is_refused_at_load(tmp_path, one_line_error):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"train": [{"input": [[1]], "output": None}], "test": [{"input": [[1]]}]}))
    with pytest.raises(TaskError, match=r"train\[0\]: output is null"):
        load_tasks(path)
    one_line_error(runner.invoke(app, ["tasks", "show", str(path)]), r"train[0]: output is null")
    # A test input's output may be null: its answer is unknown.
    path.write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]], "output": None}]}))
    assert not load_tasks(path)[0].has_solutions
