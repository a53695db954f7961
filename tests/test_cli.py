"""The command line: listing and showing tasks, writing pictures, and one-line errors with exit code 2."""

import json

import pytest
import typer
from typer.testing import CliRunner

from testtime.cli import EXIT_USER_ERROR, app, cli_errors
from testtime.data.tasks import TaskError, load_tasks, save_task

runner = CliRunner()


@pytest.fixture(scope="module")
def task():
    return load_tasks("arc1/eval")[0]


def test_tasks_list_dataset():
    result = runner.invoke(app, ["tasks", "list", "arc1/eval"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "arc1/eval: 400 tasks" in out
    assert "#train" in out and "max grid" in out
    line = next(line for line in out.splitlines() if "00576224" in line)
    cells = [c for c in line.replace("│", " ").replace("┃", " ").split() if c]
    assert cells == ["00576224", "2", "1", "6x6"]  # id, #train, #test, max grid


def test_tasks_list_folder(tmp_path, task):
    save_task(task, tmp_path / f"{task.id}.json")
    result = runner.invoke(app, ["tasks", "list", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0 and task.id in result.stdout and "1 tasks" in result.stdout


@pytest.mark.parametrize("how", ["id", "dataset-id", "file"])
def test_tasks_show(tmp_path, task, how):
    spec = {"id": task.id, "dataset-id": f"arc1/eval/{task.id}", "file": str(save_task(task, tmp_path / "t.json"))}[how]
    result = runner.invoke(app, ["tasks", "show", spec])
    assert result.exit_code == 0, result.output
    assert f"Task {task.id if how != 'file' else 't'}" in result.stdout
    assert "train[0]" in result.stdout and "test[0]" in result.stdout
    # Not a terminal: the grids come out as digits.
    assert "".join(map(str, task.train[0].input[0].tolist())) in result.stdout


def test_tasks_show_writes_png_and_html(tmp_path, task):
    png, page = tmp_path / "out" / "t.png", tmp_path / "out" / "t.html"
    result = runner.invoke(app, ["tasks", "show", f"arc1/eval/{task.id}", "--png", str(png), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and task.id in text and "<table" in text
    assert "http" not in text and "<script" not in text


BAD_INPUTS = {
    "bad json": ('{"train": [', "bad JSON at line 1"),
    "bad color": (json.dumps({"train": [{"input": [[12]], "output": [[1]]}], "test": [{"input": [[1]]}]}), "color 12"),
    "missing test": (json.dumps({"train": [{"input": [[1]], "output": [[1]]}]}), "missing key 'test'"),
}


@pytest.mark.parametrize("command", ["show", "list"])
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_malformed_file_is_one_line_error(tmp_path, command, kind):
    text, message = BAD_INPUTS[kind]
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = runner.invoke(app, ["tasks", command, str(path)])
    assert result.exit_code == EXIT_USER_ERROR
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_missing_things_are_one_line_errors(tmp_path):
    for args in (["tasks", "show", str(tmp_path / "nope.json")], ["tasks", "list", str(tmp_path / "nope")],
                 ["tasks", "show", "arc1/eval/nope"], ["report", str(tmp_path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_USER_ERROR, args
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), args


def test_cli_errors_helper_is_reusable():
    sub = typer.Typer()

    @sub.command()
    @cli_errors
    def boom(kind: str) -> None:
        """A command that fails the way real ones do."""
        if kind == "task":
            raise TaskError("bad task\nsecond line")
        if kind == "file":
            open("/definitely/not/here")
        if kind == "bug":
            raise RuntimeError("a real bug")

    result = runner.invoke(sub, ["task"])
    assert result.exit_code == 2 and result.stderr == "error: bad task second line\n"
    result = runner.invoke(sub, ["file"])
    assert result.exit_code == 2 and "No such file or directory" in result.stderr
    # Programming errors are not swallowed.
    result = runner.invoke(sub, ["bug"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "tasks" in result.stdout
    result = runner.invoke(app, ["tasks", "--help"])
    assert "list" in result.stdout and "show" in result.stdout


def test_debug_env_shows_the_real_exception(tmp_path, monkeypatch):
    path = tmp_path / "bad.json"
    path.write_text("[")
    monkeypatch.setenv("TESTTIME_DEBUG", "1")
    result = runner.invoke(app, ["tasks", "show", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, TaskError)


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--limit", "0"], "error: --limit must be between 1 and 1000000, got 0"),
    (["evaluate", "--views", "9"], "error: --views must be between 1 and 8, got 9"),
    (["evaluate", "--nope"], "error: no such option: --nope"),
    (["evaluate", "--limit", "many"], "error: invalid value for '--limit'"),
    (["solve"], "error: missing argument 'task'; see 'testtime solve --help'"),
    (["tasks", "show"], "error: missing argument 'task'; see 'testtime tasks show --help'"),
    (["score", "s.json"], "error: missing option '--solutions'"),
    (["policies", "extra"], "error: got unexpected extra argument(s) (extra)"),
    (["nosuchcommand"], "error: no such command 'nosuchcommand'"),
    (["tasks", "show", "x", "--png"], "error: option '--png' requires an argument"),
])
def test_usage_errors_are_one_line_like_every_error(args, message, one_line_error):
    line = one_line_error(runner.invoke(app, args, prog_name="testtime"))
    assert line.startswith(message), line
    assert "╭" not in line and "Usage:" not in line


def test_a_bare_group_still_prints_its_help():
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "Usage: " in result.stdout and "evaluate" in result.stdout and not result.stderr
