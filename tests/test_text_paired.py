"""Two text runs paired by query as well as by task (`testtime compare`, `text.tables`, benchmarks/bbh_table.py):
the counts of queries won and lost, the sign tests, and the tables the issue asks for."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.report.compare import compare_runs, sign_test
from testtime.text.tables import paired_table, rows_table

REPO = Path(__file__).resolve().parents[1]


def _run(folder: Path, marks: dict[str, list[bool]], seconds: float = 1.0) -> Path:
    folder.mkdir()
    recs = [{"task_id": t, "kind": "text", "answers": ["x"] * len(c), "correct": c, "score": sum(c) / len(c),
             "seconds": seconds} for t, c in marks.items()]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


@pytest.fixture
def icl_ttt(tmp_path):
    # t1: B wins 3 queries, loses 1 (task won); t2: B wins 1, loses 2 (task lost); t3: same marks (tied).
    a = _run(tmp_path / "icl", {"t1": [True, False, False, False, True], "t2": [True, True, False],
                                "t3": [True, False]}, seconds=2.0)
    b = _run(tmp_path / "ttt", {"t1": [False, True, True, True, True], "t2": [False, False, True],
                                "t3": [True, False]}, seconds=5.0)
    return a, b


def test_queries_pair_within_tasks(icl_ttt):
    cmp = compare_runs(*icl_ttt)
    assert (cmp.b_won, cmp.b_lost) == (1, 1)
    assert cmp.items == (4, 3, 10) and cmp.items_p_value == sign_test(4, 3)
    # A task whose runs scored different queries (a --max-queries run against a full one) pairs by task only.
    a, b = icl_ttt
    recs = [json.loads(x) for x in (b / "results.jsonl").read_text().splitlines()]
    recs[0]["correct"] = recs[0]["correct"][:2]
    (b / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert compare_runs(a, b).items == (1, 2, 5)


def test_compare_cli_adds_the_test_by_query(icl_ttt):
    res = CliRunner().invoke(app, ["compare", *map(str, icl_ttt)])
    assert res.exit_code == 0, res.output
    assert "ttt against icl: 1 tasks won, 1 lost, 1 tied" in res.output
    assert f"by query: 4 won, 3 lost of 10 paired; sign test p = {sign_test(4, 3):.3g}" in res.output


def test_tables_give_rows_and_the_paired_per_task_table(icl_ttt, tmp_path):
    a, b = icl_ttt
    rows = rows_table([a, b]).splitlines()
    # mean task accuracy: (2/5 + 2/3 + 1/2) / 3; s/query: 3 tasks x 2 s over 10 queries
    assert rows[2] == "| icl | 3 | 52.2 | 5/10 | 0.600 |"
    assert rows[3] == "| ttt | 3 | 54.4 | 6/10 | 1.500 |"  # (4/5 + 1/3 + 1/2) / 3; 3 x 5 s over 10
    table = paired_table(a, b)
    assert "| t1 | 2/5 | 4/5 | +2 |" in table and "| t2 | 2/3 | 1/3 | -1 |" in table and "| t3 | 1/2 | 1/2 | +0 |" in table
    assert "by task: ttt won 1, lost 1, tied 1 of 3" in table
    assert "of 10 paired queries; sign test over the 7 that differ" in table
    out = tmp_path / "t.md"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bbh_table.py"), str(a), str(b), "--pair", str(a),
                          str(b), "--out", str(out)], capture_output=True, text=True,
                         env={"PYTHONPATH": f"{REPO / 'src'}:{REPO / 'benchmarks'}"})
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert rows[3] in text and "#### ttt against icl" in text and "| t1 | 2/5 | 4/5 | +2 |" in text


def test_a_voting_run_pairs_its_vote_with_its_first_order(tmp_path, one_line_error):
    """A run that votes over demo orders keeps what its first order (the task's own) answered alone, so one run
    compares the vote against no vote, by task and by query."""
    from testtime.text.predict import Answer
    from testtime.text.run import task_record
    from testtime.text.tasks import TextTask

    task = TextTask("t", "", (("d", "a"),), (("q1", "a"), ("q2", "b"), ("q3", "a")), ("a", "b"))
    votes = [("b", "a", "a"), ("b", "a", "a"), ("a", "a", "a")]  # the vote "a" fixes q1, breaks q2
    answers = [Answer(0, i, "a", "rank", None, v) for i, v in enumerate(votes)]
    rec = task_record(task, answers, 1.0, None, 0)
    assert rec["selection_correct"] == {"vote": [True, False, True], "first_order": [False, True, True]}
    run = tmp_path / "vote"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
    cmp = compare_runs(run, run, "first_order", "vote")
    assert cmp.items == (1, 1, 3) and cmp.pairs[0].a == pytest.approx(2 / 3)
    res = CliRunner().invoke(app, ["compare", str(run), str(run), "--selection-a", "first_order", "--selection-b", "vote"])
    assert res.exit_code == 0 and "by query: 1 won, 1 lost of 3 paired" in res.output
