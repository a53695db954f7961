"""benchmarks/policy_replay.py: settle's cuts replayed over measured runs (issue 25), on run folders written by hand
whose every view, score and second is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as a benchmark runs: beside its siblings miss_profile and provenance
import policy_replay as pr  # noqa: E402

TRUTH = [[1, 2], [3, 4]]
WRONG = [[4, 3], [2, 1]]
OTHER = [[0, 0], [0, 0]]

# The no-TTT run's 8 views, as vote counts: all right; all agreeing on a wrong grid; split four and four; nothing kept.
ICL_VOTES = {
    "easy": [{"grid": TRUTH, "count": 8}],
    "sure-wrong": [{"grid": WRONG, "count": 8}],
    "split": [{"grid": OTHER, "count": 4}, {"grid": TRUTH, "count": 4}],
    "hard": [],
}
FULL_SCORE = {"easy": 1.0, "sure-wrong": 1.0, "split": 1.0, "hard": 0.0}


def write_runs(folder: Path) -> tuple[Path, Path, Path]:
    tasks = folder / "tasks"
    tasks.mkdir(parents=True)
    for tid in ICL_VOTES:
        (tasks / f"{tid}.json").write_text(json.dumps(
            {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]], "output": TRUTH}]}))
    runs = []
    for name in ("full", "icl", "cheap"):
        run = folder / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"tasks": str(tasks), "predict_cfg": {"views": 8}}))
        lines = []
        for tid, votes in ICL_VOTES.items():
            if name == "full":
                # the full run's views agree on "easy" (8 of 8); its vote would miss "split", its scoring does not
                rec = {"score": FULL_SCORE[tid], "seconds": 1.0, "compute": {"select": 0.25},
                       "votes": [[{"grid": TRUTH, "votes": 8 if tid == "easy" else 5}]],
                       "selections": {"poe": FULL_SCORE[tid], "vote": 0.0 if tid == "split" else FULL_SCORE[tid]}}
            elif name == "icl":
                rec = {"score": 0.0, "seconds": 0.5, "compute": {"icl": 0.4}, "votes": [votes]}
            else:
                # the real cheap pass: "easy" passes its check, "sure-wrong" agrees but fails it
                agree = {"easy": 1.0, "sure-wrong": 1.0}.get(tid, 0.5)
                rec = {"score": float(tid == "easy"), "seconds": 0.2, "compute": {"icl": 0.1, "loo": 0.05},
                       "policy": {"signals": {"agreement": agree, "loo_base": 1.0 if tid == "easy" else 0.5}}}
            lines.append(json.dumps({"task_id": tid, "correct": [bool(rec["score"])], **rec}))
        (run / "results.jsonl").write_text("\n".join(lines) + "\n")
        runs.append(run)
    return tuple(runs)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[dict, dict, dict, dict]:
    full, icl, cheap = (pr.by_task(r) for r in write_runs(tmp_path))
    truths = {t: [np.array(TRUTH)] for t in ICL_VOTES}
    return full, icl, cheap, truths


def test_unkept_views_count_against_agreement() -> None:
    share, top = pr._top_two([0, 0, -1, -1])
    assert share == 0.5 and top == [0]
    assert pr._top_two([-1, -1]) == (0.0, [])
    assert pr._top_two([1, 0, 1, 0])[1] == [0, 1]  # a tie goes to the better-ranked candidate


def test_all_views_answer_now_only_where_every_view_agrees(runs) -> None:
    full, icl, _, truths = runs
    r = pr.replay_views(full, icl, truths, k=8, answer_at=1.0, draws=3, seed=0)
    # "easy" and "sure-wrong" settle; the split and the empty never do, whatever the draw
    assert r.now == 2 and r.now_right == 1.0 and r.now_full == 2.0
    assert r.scores == [1.0, 0.0, 1.0, 0.0]
    assert r.won_lost([FULL_SCORE[t] for t in full]) == (0.0, 1.0)
    # each task pays the pass (0.4 s for 8 of 8 views); the two it did not settle also pay the full run
    assert sum(r.seconds) == pytest.approx(4 * 0.4 + 2 * 1.0)


def test_fewer_views_settle_more_at_a_lower_price(runs) -> None:
    full, icl, _, truths = runs
    r = pr.replay_views(full, icl, truths, k=2, answer_at=1.0, draws=50, seed=1)
    # two views of "split" agree 6 times in 14 (both of one colour); "hard" never has a kept answer
    assert 2 < r.now < 3
    split = list(full).index("split")
    assert 0 < np.mean([d[split] for d in r.draws]) <= 1.0
    hard = list(full).index("hard")
    assert all(d[hard] == 0.0 for d in r.draws)
    again = pr.replay_views(full, icl, truths, k=2, answer_at=1.0, draws=50, seed=1)
    assert again.scores == r.scores  # seeded


def test_the_check_gates_the_cheap_pass(runs) -> None:
    full, icl, cheap, _ = runs
    open_ = pr.replay_cheap(full, icl, cheap, k=2, answer_at=1.0, gate=False)
    gated = pr.replay_cheap(full, icl, cheap, k=2, answer_at=1.0, gate=True)
    assert (open_.now, open_.now_right) == (2, 1.0)  # "sure-wrong" is answered wrong without the check
    assert (gated.now, gated.now_right) == (1, 1.0) and sum(gated.scores) == sum(FULL_SCORE.values())
    # the check is priced at its share of the cheap run's decoding: 0.05 / 0.1 of the 0.1 s a 2-view pass costs
    assert sum(gated.seconds) == pytest.approx(4 * (0.1 + 0.05) + 3 * 1.0)


def test_scoring_cut_takes_the_vote_and_saves_selection(runs) -> None:
    full, *_ = runs
    strict = pr.replay_scoring(full, 1.0)  # only "easy" holds every view
    assert strict.now == 1 and sum(strict.scores) == 3.0
    assert sum(strict.seconds) == pytest.approx(4.0 - 0.25)
    loose = pr.replay_scoring(full, 0.5)  # all four: the vote loses "split"
    assert loose.now == 4 and sum(loose.scores) == 2.0 and sum(loose.seconds) == pytest.approx(3.0)


def test_main_writes_a_paired_table(tmp_path: Path) -> None:
    full, icl, cheap = write_runs(tmp_path)
    md = tmp_path / "out.md"
    lines = pr.main([str(full), "--icl", str(icl), "--cheap", str(cheap), "--views", "2", "8", "--draws", "4",
                     "--md", str(md), "--png", str(tmp_path / "out.png")])
    text = md.read_text()
    assert "| the full run (every task trained) | 0 | - | - | 3.0 | 1.00 |" in text
    assert sum(line.startswith("| answer now") for line in lines) == 4  # 2 and 8 views, the cheap pass open and gated
    assert (tmp_path / "out.png").stat().st_size > 0


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    full, icl, _ = write_runs(tmp_path)
    with pytest.raises(SystemExit) as e:
        pr.main([str(full), "--icl", str(tmp_path / "missing")])
    assert "missing" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        pr.main([str(full), "--icl", str(icl), "--views", "9"])
    assert "--views" in str(e.value)


def test_give_up_stops_where_the_training_loss_stays_high() -> None:
    def rec(score: float, losses) -> dict:
        return {"score": score, "seconds": 1.0, "compute": {"ttt": 0.8}, "ttt_loss": losses}

    full = {"slow-but-solved": rec(1.0, [1.0] * 4 + [0.5] * 4), "fast": rec(1.0, [0.05] * 8),
            "stuck": rec(0.0, [0.9] * 8), "untrained": rec(0.0, None),
            "late-jump": rec(0.0, [0.1] * 4 + [10.0] * 4),  # a window shifted past step 4 would give it up
            "one-bad-step": rec(1.0, [None, 0.1, 0.1, 0.1] + [0.0] * 4)}  # a non-finite step, kept as null
    r = pr.replay_give_up(full, step=4, loss_at=0.5)  # the mean of steps 1-4 decides
    assert r.scores == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert (r.now, r.now_right, r.now_full) == (2, 0.0, 1.0)  # it gave up a task the full run solved
    # a task given up pays half its TTT (4 of 8 steps) and nothing else; the others the full run's seconds
    assert r.seconds == pytest.approx([0.4, 1.0, 0.4, 1.0, 1.0, 1.0])
    assert pr.replay_give_up(full, step=8, loss_at=0.0).now == 0  # after the last step there is nothing to save
    assert pr.replay_give_up(full, step=4, loss_at=1.0).now == 0  # the loss must be above the threshold


def test_a_steps_null_loss_reads_as_nan() -> None:
    got = pr.step_losses({"ttt_loss": [0.5, None, 0.25]})
    assert got[0] == 0.5 and np.isnan(got[1]) and got[2] == 0.25
    assert pr.step_losses({"ttt_loss": None}) is None and pr.step_losses({"ttt_loss": []}) is None


@pytest.mark.parametrize("spec", ["24", "x:0.1", "0:0.1", "24:-1", "24:nan"])
def test_a_bad_give_up_is_one_line(tmp_path: Path, capsys, spec: str) -> None:
    full, icl, _ = write_runs(tmp_path)
    with pytest.raises(SystemExit):
        pr.main([str(full), "--icl", str(icl), "--give-up", spec])
    err = capsys.readouterr().err.strip().splitlines()
    assert "--give-up" in err[-1] and spec in err[-1]
