"""benchmarks/rank_profile.py: where selection loses the right grids a run found, and a vote prior re-ranking the
recorded candidates, on records written by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as a benchmark runs: beside its sibling provenance
spec = importlib.util.spec_from_file_location("rank_profile", ROOT / "benchmarks" / "rank_profile.py")
rp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rp)


def cand(logprob: float | None, votes: int) -> dict:
    return {"grid": [[0]], "votes": votes, "count": votes, "logprob": logprob}


# t1: solved (rank 0). t2: the right grid (rank 2, votes 9) outranked by two of higher logprob and 1 vote each: a
# vote prior of beta >= 1 lifts it into the two attempts. t3: found but ranked 10th, past the 8 scored. t4: never
# found. t5: a candidate left unscored (logprob None): keeps its own verdict under any beta.
RECORDS = [
    {"task_id": "t1", "score": 1.0, "correct": [True], "recall": {"candidates": [3], "found": [True], "rank": [0]},
     "ranked": [[cand(-1.0, 5), cand(-3.0, 1)]]},
    {"task_id": "t2", "score": 0.0, "correct": [False], "recall": {"candidates": [3], "found": [True], "rank": [2]},
     "ranked": [[cand(-1.0, 1), cand(-1.5, 1), cand(-3.0, 9)]]},
    {"task_id": "t3", "score": 0.0, "correct": [False], "recall": {"candidates": [3], "found": [True], "rank": [10]},
     "ranked": [[cand(-1.0, 3), cand(-2.0, 2)]]},
    {"task_id": "t4", "score": 0.0, "correct": [False], "recall": {"candidates": [3], "found": [False], "rank": [None]},
     "ranked": [[cand(-1.0, 3)]]},
    {"task_id": "t5", "score": 1.0, "correct": [True], "recall": {"candidates": [3], "found": [True], "rank": [1]},
     "ranked": [[cand(-1.0, 3), cand(None, 2)]]},
]


def test_found_not_picked_split_by_the_scored_candidates():
    assert rp.kept_not_picked(RECORDS, scored=8) == (1, 1, 0)
    assert rp.kept_not_picked(RECORDS, scored=16) == (2, 0, 0)
    unranked = dict(RECORDS[1], recall={"candidates": [3], "found": [True], "rank": [None]})
    assert rp.kept_not_picked([unranked], scored=8) == (0, 0, 1)
    assert rp.reranked_score([dict(RECORDS[0], recall=None)], 1.0) == 1.0  # no rank: its own verdict


@pytest.mark.parametrize(("beta", "score"), [(0.0, 2.0), (0.5, 2.0), (1.0, 3.0), (5.0, 3.0)])
def test_the_vote_prior_reranks_the_scored_candidates(beta, score):
    # beta 0.5: -3 + 0.5 ln 9 = -1.90 < -1.5, still third; beta 1: -0.80, first
    assert rp.reranked_score(RECORDS, beta) == score


def member_cand(members: list[float | None]) -> dict:
    finite = [x for x in members if x is not None]
    return {"grid": [[0]], "votes": 1, "count": 1, "logprob": sum(finite) / len(finite), "members": members}


def test_members_first_takes_each_adapters_own_best():
    # jointly, candidates 0 and 1 lead (means -1.5, -2.0); member 1 alone prefers candidate 2, the right one (rank 2)
    record = {"task_id": "m", "score": 0.0, "correct": [False], "recall": {"candidates": [3], "found": [True],
                                                                           "rank": [2]},
              "ranked": [[member_cand([-1.0, -2.0]), member_cand([-1.5, -2.5]), member_cand([-5.0, -0.5])]]}
    assert rp.members_first([record]) == 1.0
    agree = dict(record, ranked=[[member_cand([-1.0, -2.0]), member_cand([-1.5, -2.5]), member_cand([-5.0, -3.0])]])
    assert rp.members_first([agree]) == 0.0  # both members' best is candidate 0: the joint second fills in
    assert rp.members_first(RECORDS) is None  # no member scores recorded: no figure


def test_cli_table_and_a_missing_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    md = tmp_path / "t.md"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    got = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rank_profile.py"), str(run), "--betas", "0", "1",
                          "--md", str(md)], capture_output=True, text=True, env=env)
    assert got.returncode == 0, got.stderr
    assert "| run | 2 | 1 | 1 | 0 | 2 | 3 | - |" in md.read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rank_profile.py"), str(tmp_path / "absent")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
