"""benchmarks/escalate_replay.py: the costly run's record where the cheap run was least sure, on run folders written
by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import escalate_replay as er  # noqa: E402


def record(tid: str, score: float, seconds: float, counts: list[int], logprobs: list, loss: float) -> dict:
    logprobs = logprobs + [None] * (len(counts) - len(logprobs))  # the candidates past those scored have none
    ranked = [{"grid": [[i]], "count": c, "logprob": lp}
              for i, (c, lp) in enumerate(zip(counts, logprobs, strict=True))]
    return {"task_id": tid, "score": score, "seconds": seconds, "ranked": [ranked], "ttt_loss": [9.0] + [loss] * 8}


def write(folder: Path, recs: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


@pytest.fixture
def runs(tmp_path):
    """Four tasks. The cheap run is sure of `sure` (all 8 votes, a wide margin, a low loss) and solves it, unsure of
    `gain` (which only the costly run solves) and of `hopeless` (neither does); `mid` is between. The costly run
    takes twice the seconds everywhere."""
    cheap = [record("sure", 1, 1.0, [8], [-1.0], 0.0001), record("gain", 0, 1.0, [2, 2, 2, 2], [-5.0, -5.1], 0.01),
             record("hopeless", 0, 1.0, [1, 1, 1, 1], [-9.0, -9.0], 0.5),
             record("mid", 1, 1.0, [5, 3], [-2.0, -4.0], 0.001)]
    costly = [dict(r, seconds=2.0, score=1.0 if r["task_id"] in ("sure", "gain", "mid") else 0.0) for r in cheap]
    return write(tmp_path / "cheap", cheap), write(tmp_path / "costly", costly)


def test_signals_read_the_least_sure_test_input():
    two = {"ranked": [[{"count": 6}, {"count": 2}], [{"count": 1}, {"count": 3}]]}
    assert er.vote_share(two) == 0.25
    assert er.poe_margin({"ranked": [[{"logprob": -1.0}, {"logprob": -3.5}], [{"logprob": -2.0}]]}) == 2.5
    assert er.ttt_loss({"ttt_loss": [5.0] * 4 + [0.5] * 8}) == 0.5
    assert er.vote_share({"ranked": [[]]}) == 0.0 and er.ttt_loss({}) == float("inf")


def test_escalating_the_unsure_first_reaches_the_costly_run_at_its_cost(runs):
    res = er.replay(er.records(runs[0]), er.records(runs[1]))
    assert (res["tasks"], res["cheap"], res["costly"], res["costly_compute"]) == (4, 2, 3, 2.0)
    assert (res["wins"], res["losses"]) == (1, 0)
    for name, rows in res["curves"].items():
        full = rows[-1]
        assert (full["score"], full["compute"], full["won"], full["lost"]) == (3, 2.0, 1, 0), name
    # vote share and the margin put `hopeless` (1 of 4 votes, margin 0) first, then `gain`: a half escalated wins it
    half = {name: next(r for r in rows if r["share"] == 0.5) for name, rows in res["curves"].items()}
    assert half["vote share"]["score"] == 3 and half["vote share"]["compute"] == 1.5
    assert half["PoE margin"]["score"] == 3
    # the loss puts `hopeless` (0.5) first and `gain` (0.01) second: 10% of 4 tasks is none, 20-30% one, 40-50% two
    assert [r["tasks"] for r in res["curves"]["TTT loss"][:5]] == [0, 1, 1, 2, 2]
    assert [r["score"] for r in res["curves"]["TTT loss"][:5]] == [2, 2, 2, 3, 3]
    assert res["rank_of_wins"]["TTT loss"] == [0.25]


def test_the_table_and_a_bad_run(runs, tmp_path, capsys):
    out = tmp_path / "esc.md"
    er.main([str(runs[0]), str(runs[1]), "--md", str(out), "--png", str(tmp_path / "esc.png")])
    text = out.read_text()
    assert "4 tasks: cheap 2 at 1.00x, costly 3 at 2.00x (1 won, 0 lost)" in text
    assert "| TTT loss | 50% (2) | 3 | 2.5 | 1.50x | 1 | 0 | 1.00 |" in text
    assert (tmp_path / "esc.png").stat().st_size > 0
    with pytest.raises(SystemExit, match=r"escalate_replay: .*no such file"):
        er.main([str(runs[0]), str(tmp_path / "nowhere")])
