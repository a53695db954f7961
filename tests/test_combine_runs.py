"""benchmarks/combine_runs.py: two runs' attempts combined per test input (each run's first attempt, then the
seconds), on run folders written by hand whose answers are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as a benchmark runs: beside its sibling miss_profile

import combine_runs as cr  # noqa: E402

from testtime.report.combine import combine_attempts, combine_records, combine_runs  # noqa: E402

RIGHT, WRONG, OTHER = [[1, 2]], [[0, 0]], [[3, 3]]


def write_runs(folder: Path) -> tuple[Path, Path]:
    """Four one-input tasks and one of two inputs. A and B:
    - `a_first`: A right first; B wrong: the combination keeps A's first, so it ties A and wins against B;
    - `b_first`: A wrong twice, B right first: the combination takes B's first as its second attempt: a win over A;
    - `b_second`: B right only second, A's two wrong: the combination keeps A1 and B1, so it loses against B;
    - `kept`: neither attempts it, B kept it among its candidates (union recall, not pass@4);
    - `two`: two test inputs, A right on the first only, B on the second only (B kept no attempt for the first)."""
    tasks = folder / "tasks"
    tasks.mkdir(parents=True)
    for tid in ("a_first", "b_first", "b_second", "kept"):
        (tasks / f"{tid}.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}],
                                                       "test": [{"input": [[1]], "output": RIGHT}]}))
    (tasks / "two.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}],
                                                "test": [{"input": [[1]], "output": RIGHT},
                                                         {"input": [[2]], "output": OTHER}]}))
    a = {"a_first": [[RIGHT, WRONG]], "b_first": [[WRONG, OTHER]], "b_second": [[WRONG, OTHER]],
         "kept": [[WRONG, None]], "two": [[RIGHT, WRONG], [WRONG, None]]}
    b = {"a_first": [[WRONG, OTHER]], "b_first": [[RIGHT, WRONG]], "b_second": [[WRONG, RIGHT]],
         "kept": [[OTHER, WRONG]], "two": [[], [OTHER, WRONG]]}
    runs = []
    for name, attempts in (("A", a), ("B", b)):
        run = folder / name
        run.mkdir()  # scores recorded as 0: the benchmark scores every run from its attempts
        (run / "config.json").write_text(json.dumps({"tasks": str(tasks)}))
        with (run / "results.jsonl").open("w") as f:
            for tid, att in attempts.items():
                ranked = [[{"grid": g, "votes": 1} for g in q if g is not None] for q in att]
                if name == "B" and tid == "kept":
                    ranked[0].append({"grid": RIGHT, "votes": 1})
                f.write(json.dumps({"task_id": tid, "attempts": att, "ranked": ranked, "score": 0.0,
                                    "correct": [False] * len(att)}) + "\n")
        runs.append(run)
    return runs[0], runs[1]


def test_the_combination_takes_each_runs_first_attempt(tmp_path):
    run_a, run_b = write_runs(tmp_path)
    got = cr.combined(run_a, run_b)
    assert got["tasks"] == 5
    assert got["a"] == 1.5 and got["b"] == 2.5  # b: b_first, b_second, and two's second input
    by_task = {r["task_id"]: r["correct"] for r in got["records"]}
    assert by_task == {"a_first": [True], "b_first": [True], "b_second": [False], "kept": [False],
                       "two": [True, True]}
    assert got["combined"] == 3.0
    assert got["pass4"] == 5.0 - 1  # every right grid was attempted by one run but `kept`'s
    assert got["recall_b"] == 3.5 and got["union"] == 5.0
    assert (got["against_a"].b_won, got["against_a"].b_lost) == (2, 0)  # b_first, two (A had half of it)
    assert (got["against_b"].b_won, got["against_b"].b_lost) == (2, 1)  # a_first, two; b_second lost


def test_the_pooled_rule_sums_each_runs_softmax_shares():
    x, y, z = [[1]], [[2]], [[3]]
    a = [{"grid": x, "logprob": -1.0}, {"grid": y, "logprob": -2.0}]
    b = [{"grid": y, "logprob": -1.0}, {"grid": z, "logprob": -3.0}]
    # x 0.73; y 0.27 + 0.88 = 1.15; z 0.12: y, then x
    assert cr.pooled_attempts([a, b]) == [y, x]
    assert cr.pooled_attempts([a, b], temp=100.0) == [y, x]  # flat shares: y is in both lists
    # unscored: votes 3:1, so z 0.75, x 0.73, y 0.27 + 0.25
    assert cr.pooled_attempts([a, [{"grid": z, "votes": 3}, {"grid": y}]]) == [z, x]
    assert cr.pooled_attempts([[], []]) == []


def test_combine_keeps_no_repeat_and_fills_from_the_seconds():
    assert combine_attempts([[RIGHT, WRONG], [RIGHT, OTHER]]) == ([RIGHT, WRONG], [0, 0])
    assert combine_attempts([[], [OTHER, WRONG]]) == ([OTHER, WRONG], [1, 1])
    assert combine_attempts([[WRONG], [OTHER]]) == ([WRONG, OTHER], [0, 1])
    assert combine_attempts([[None, WRONG], [OTHER], [RIGHT]]) == ([OTHER, RIGHT], [1, 2])  # a missing first
    assert combine_attempts([[WRONG, RIGHT], [WRONG, OTHER], [WRONG]], attempts=3) == ([WRONG, RIGHT, OTHER], [0, 0, 1])


def test_testtime_combine_writes_a_run_that_scores_as_the_benchmark_says(tmp_path):
    """The library's combination (`testtime combine`) of the hand-written runs: the benchmark's 3.0, each task's
    attempts with the run each came from, a run folder `compare` and `score` read, and one-line refusals."""
    from typer.testing import CliRunner

    from testtime.cli import app

    run_a, run_b = write_runs(tmp_path)
    out = tmp_path / "both"
    summary = combine_runs([run_a, run_b], out)
    assert (summary["score"], summary["n_tasks"], summary["run_scores"]) == (3.0, 5, {"A": 1.5, "B": 2.5})
    records = {r["task_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert records["b_first"]["attempts"] == [[WRONG, RIGHT]] and records["b_first"]["correct"] == [True]
    assert records["b_first"]["combined"]["sources"] == [["A", "B"]]
    assert records["two"]["attempts"][0] == [RIGHT, WRONG] and records["two"]["combined"]["sources"][0] == ["A", "A"]
    assert records["a_first"]["adapters"] == 2  # the compute of both runs
    runner = CliRunner()
    got = runner.invoke(app, ["score", str(out / "submission.json"), "--solutions", str(tmp_path / "tasks")])
    assert got.exit_code == 0 and "score 3 / 5" in got.output
    got = runner.invoke(app, ["compare", str(run_a), str(out)])
    assert got.exit_code == 0, got.output
    got = runner.invoke(app, ["combine", str(run_a), str(run_b), "--out", str(tmp_path / "cli")])
    assert got.exit_code == 0 and "combined 5 tasks: 3 / 5 (60.00%) against A 1.5, B 2.5; wrote" in got.output
    got = runner.invoke(app, ["report", str(out)])  # the combination names its tasks for the report
    assert got.exit_code == 0, got.output
    (tmp_path / "file").write_text("")
    for args, message in (([str(run_a)], "two runs or more"), ([str(run_a), str(tmp_path / "no")], "no such file"),
                          ([str(run_a), str(run_b), "--out", str(run_b)], "is one of the runs combined"),
                          ([str(run_a), str(run_a)], "a run is named twice"),
                          ([str(run_a), str(run_b), "--out", str(tmp_path / "file")], "not a folder"),
                          ([str(run_a), str(run_b), "--out", str(tmp_path / "tasks")], "no combination wrote")):
        args = args if "--out" in args else [*args, "--out", str(tmp_path / "x")]
        got = runner.invoke(app, ["combine", *args])
        assert got.exit_code == 2 and message in got.output and "Traceback" not in got.output


def test_a_task_one_run_lacks_takes_the_others_attempts_and_an_unknown_answer_is_unscored(tmp_path):
    run_a, run_b = write_runs(tmp_path)
    lines = (run_b / "results.jsonl").read_text().splitlines()
    (run_b / "results.jsonl").write_text("".join(line + "\n" for line in lines if '"b_first"' not in line))
    records = {r["task_id"]: r for r in combine_records(
        [[json.loads(x) for x in (r / "results.jsonl").read_text().splitlines()] for r in (run_a, run_b)],
        ["A", "B"], {})}
    assert records["b_first"]["attempts"] == [[WRONG, OTHER]] and records["b_first"]["combined"]["runs"] == ["A"]
    assert "score" not in records["b_first"] and "correct" not in records["b_first"]  # no tasks: nothing to score
    (run_a / "config.json").unlink()  # the tasks are read from the next run that names them
    assert combine_runs([run_a, run_b], tmp_path / "both")["n_scored"] == 5
    (run_b / "config.json").unlink()
    assert combine_runs([run_a, run_b], tmp_path / "none")["score"] is None
    assert combine_runs([run_a, run_b], tmp_path / "named", tasks=str(tmp_path / "tasks"))["n_scored"] == 5


def test_the_cli_prints_the_table_and_refuses_runs_without_shared_tasks(tmp_path):
    run_a, run_b = write_runs(tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/combine_runs.py"), str(run_a), str(run_b),
                          "--md", str(tmp_path / "t.md")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| A | B | 5 | 1.5 | 2.5 | **3** |" in out.stdout
    # pooled, by the votes' shares: a_first and both inputs of two; b_first's right grid ties OTHER, seen first
    assert (tmp_path / "t.md").read_text().strip().endswith("| 5 | 2 |")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    (empty / "config.json").write_text((run_a / "config.json").read_text())
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks/combine_runs.py"), str(empty), str(run_b)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "share no task" in bad.stderr


@pytest.mark.parametrize("missing", ["config.json", "results.jsonl"])
def test_a_run_folder_missing_its_files_is_one_line(tmp_path, missing):
    run_a, run_b = write_runs(tmp_path)
    (run_a / missing).unlink()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks/combine_runs.py"), str(run_a), str(run_b)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")


def test_a_combination_is_written_again_in_place_and_refuses_what_it_cannot_combine(tmp_path):
    """An earlier combination's folder is rewritten; runs that disagree on a task's test inputs, or text runs, are
    refused in one line; a task every run failed keeps its error and still gets a submission entry per test input."""
    run_a, run_b = write_runs(tmp_path)
    assert combine_runs([run_a, run_b], tmp_path / "both")["score"] == 3.0
    # B's attempts first: a_first's A1 comes second; b_second's B2 follows B1, A1 being B1 again: 4 of 5
    assert combine_runs([run_b, run_a], tmp_path / "both")["score"] == 4.0
    records = [json.loads(line) for line in (run_b / "results.jsonl").read_text().splitlines()]
    for r in records:
        if r["task_id"] == "two":
            r["attempts"] = r["attempts"][:1]
    (run_b / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match="B/results.jsonl: task two has attempts at 1 test input"):
        combine_runs([run_a, run_b], tmp_path / "c1")
    for run in (run_a, run_b):  # every run failed `two`
        lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
        for r in lines:
            if r["task_id"] == "two":
                r.update(attempts=None, error="out of memory", correct=[False, False], score=0.0)
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = combine_runs([run_a, run_b], tmp_path / "c2")
    assert summary["errors"] == 1 and summary["score"] == 2.0
    two = next(r for r in map(json.loads, (tmp_path / "c2/results.jsonl").read_text().splitlines())
               if r["task_id"] == "two")
    assert two["error"] == "out of memory" and two["attempts"] == [[], []] and two["correct"] == [False, False]
    submission = json.loads((tmp_path / "c2/submission.json").read_text())
    assert submission["two"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}] * 2
    text = tmp_path / "text"
    text.mkdir()
    (text / "results.jsonl").write_text(json.dumps({"task_id": "q", "kind": "text", "answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="text/results.jsonl: a text run"):
        combine_runs([run_a, text], tmp_path / "c3")
