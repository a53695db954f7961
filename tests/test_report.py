"""Run reports: the numbers, the terminal table, and the HTML page."""

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from testtime.cli import app
from testtime.data.render import BAD, GOOD
from testtime.data.tasks import load_tasks, save_tasks
from testtime.report.report import loss_svg, print_summary, read_results, summarize, write_report


@pytest.fixture(scope="module")
def tasks():
    return load_tasks("arc1/eval")[:3]


def records_for(tasks):
    a, b, c = tasks
    wrong = [[1, 2], [3, 4]]
    return [
        {"task_id": a.id, "attempts": [[a.test[0].output.tolist(), wrong]], "correct": [True], "score": 1.0,
         "votes": [[{"grid": a.test[0].output.tolist(), "votes": 5}, {"grid": wrong, "votes": 2}]],
         "ttt_loss": [2.0, 1.2, 0.5], "seconds": 10.0, "invalid": 1, "error": None},
        {"task_id": b.id, "attempts": [[wrong, None] for _ in b.test], "correct": [False] * len(b.test), "score": 0.0,
         "votes": [[] for _ in b.test], "ttt_loss": None, "seconds": 20.0, "invalid": 3, "error": None},
        {"task_id": c.id, "attempts": [[None, None] for _ in c.test], "correct": [False] * len(c.test), "score": 0.0,
         "votes": [], "ttt_loss": None, "seconds": 0.0, "invalid": 0, "error": "TooLongError: sequence needs 9000 tokens"},
    ]


def write_run(run_dir, records, spec=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if spec is not None:
        (run_dir / "config.json").write_text(json.dumps({"tasks": str(spec), "seed": 0}))
    return run_dir


def test_summarize(tasks):
    s = summarize(records_for(tasks))
    assert s["n_tasks"] == 3 and s["n_scored"] == 3 and s["score"] == 1.0
    assert s["percent"] == pytest.approx(100 / 3)
    assert s["mean_seconds"] == pytest.approx(10.0) and s["total_seconds"] == 30.0
    assert s["invalid"] == 4 and s["errors"] == 1


def test_summarize_without_known_answers_and_empty():
    recs = [{"task_id": "x", "attempts": [[None, None]], "correct": None, "score": 0.0, "seconds": 2.0, "invalid": 0}]
    s = summarize(recs)
    assert s["n_scored"] == 0 and s["percent"] is None and s["mean_seconds"] == 2.0
    assert summarize([])["n_tasks"] == 0 and summarize([])["percent"] is None


def test_partial_credit():
    recs = [{"task_id": "x", "correct": [True, False], "score": 0.5}, {"task_id": "y", "correct": [True], "score": 1.0}]
    assert summarize(recs)["percent"] == pytest.approx(75.0)


def test_print_summary(tasks):
    console = Console(record=True, width=100)
    s = print_summary(records_for(tasks), console=console)
    text = console.export_text()
    assert "33.33%" in text and "invalid decodes" in text and s["score"] == 1.0


def test_write_report_with_tasks(tmp_path, tasks):
    run = write_run(tmp_path / "run", records_for(tasks))
    path = write_report(run, tasks)
    assert path == run / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    for t in tasks:
        assert f'id="t-{t.id}"' in page
    assert "33.33%" in page and "TTT loss 2.0000 &rarr; 0.5000" in page and "<svg" in page
    assert "TooLongError: sequence needs 9000 tokens" in page
    assert page.count(f"outline:3px solid {GOOD}") == 1  # only task a's first attempt is right
    assert page.count(f"outline:3px solid {BAD}") == 1 + 2 * len(tasks[1].test) + 2 * len(tasks[2].test)
    assert "5 votes" in page and "2 votes" in page


def test_write_report_loads_tasks_from_config(tmp_path, tasks):
    save_tasks(tasks, tmp_path / "tasks")
    run = write_run(tmp_path / "run", records_for(tasks), spec=tmp_path / "tasks")
    page = write_report(run).read_text()
    assert "test 0 input" in page and all(t.id in page for t in tasks)
    assert "task not found" not in page


def test_report_handles_unknown_tasks_and_answers(tmp_path, tasks):
    recs = [{"task_id": "ghost", "attempts": [[[[1]], None]], "correct": None, "score": 0.0, "votes": [],
             "ttt_loss": [1.0], "seconds": 1.0, "invalid": 0, "error": None}]
    page = write_report(write_run(tmp_path / "run", recs), tasks).read_text()
    assert "task not found" in page and "n/a (no answers known)" in page
    assert "outline:3px solid #888888" in page


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        read_results(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"task_id": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: bad JSON"):
        read_results(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"task_id": "a"}\n\n')
    assert read_results(tmp_path) == [{"task_id": "a"}]
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_report(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="has no 'tasks' entry"):
        write_report(tmp_path)


def test_loss_svg():
    assert loss_svg([1.0]) == "" and loss_svg([]) == ""
    svg = loss_svg([3.0, 2.0, float("nan"), 1.0])
    assert svg.startswith("<svg") and svg.count(",") == 3


def test_report_command(tmp_path, tasks):
    save_tasks(tasks, tmp_path / "tasks")
    run = write_run(tmp_path / "run", records_for(tasks), spec=tmp_path / "tasks")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "pass@2" in result.stdout and (run / "report.html").exists()


def test_report_shows_the_product_of_experts_scores_and_each_selection(tmp_path, tasks):
    """A run selected by product of experts: the page lists the ranked candidates with their log-probabilities, and the
    summary what each selection scores on the run's predictions."""
    recs = records_for(tasks)
    a = tasks[0]
    recs[0]["ranked"] = [[{"grid": a.test[0].output.tolist(), "votes": 5, "count": 5, "logprob": -1.25},
                          {"grid": [[1, 2], [3, 4]], "votes": 2, "count": 2, "logprob": -7.5}]]
    for r, poe, vote in zip(recs, (1.0, 0.0, 0.0), (0.0, 0.0, 0.0), strict=True):
        r["selections"] = {"poe": poe, "vote": vote, "greedy": 0.0}
    page = write_report(write_run(tmp_path / "run", recs), tasks).read_text()
    assert "product of experts (2 ranked)" in page and "log p -1.25, 5 votes" in page and "log p -7.50" in page
    assert "pass@2 by selection" in page and "poe 1, vote 0, greedy 0" in page
