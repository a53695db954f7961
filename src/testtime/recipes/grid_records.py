"""A grid task's record, one JSON line of a run's `results.jsonl`: its attempts, and beside them what the plain vote
and the identity view's greedy answer would have scored, the votes and the ranked candidates, whether the right grid
was among the candidates at all (`recall`), what the policy decided, the seconds of each stage, what the time budget
cut, and what a second round did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from testtime.data.sources import grid_key
from testtime.data.tasks import Grid, Task, grids_equal
from testtime.stages.budget import Fit
from testtime.stages.ensemble import group_member
from testtime.stages.policy import Outcome, Plan
from testtime.stages.selection import Ranked
from testtime.stages.vote import Candidate, Prediction, attempts, is_solved


def grid_json(g) -> list[list[int]] | None:
    """A grid as JSON holds it (None: no answer)."""
    return None if g is None else np.asarray(g).astype(int).tolist()


def recall_note(predictions: Sequence[Sequence[Prediction]], ranked: Sequence[Sequence[Ranked]],
                truths: Sequence[Grid | None]) -> dict[str, Any]:
    """How far the candidates reach, per test input: how many distinct grids the views produced (`candidates`),
    whether the right one is among them (`found`: the most any selection of them can solve), and its place in the
    ranked list (`rank`, from 0; None where it is not there, as a grid no view group kept among its top ones is
    not). `found` and `rank` are None where the answer is not known."""
    counts, found, rank = [], [], []
    for plist, ranks, truth in zip(predictions, ranked, truths, strict=True):
        counts.append(len({(p.grid.shape, p.grid.tobytes()) for p in plist if p.grid is not None}))
        found.append(None if truth is None else any(grids_equal(p.grid, truth) for p in plist if p.grid is not None))
        rank.append(None if truth is None else next((k for k, r in enumerate(ranks) if grids_equal(r.grid, truth)),
                                                    None))
    known = all(t is not None for t in truths)
    return {"candidates": counts, "found": found if known else None, "rank": rank if known else None}


def by_member(ranked: Sequence[Ranked], predictions: Sequence[Prediction], members: int) -> list[list[int]]:
    """How many of each member's views decoded each ranked candidate (its grid is one of the predictions' own, so
    keyed alike), so an ensemble's records tell which adapter found what."""
    found: dict[tuple, list[int]] = {}
    for p in predictions:
        if p.grid is not None:
            found.setdefault(grid_key(p.grid), [0] * members)[group_member(p.group)] += 1
    return [found.get(grid_key(r.grid), [0] * members) for r in ranked]


def task_record(task: Task, preds, votes: Sequence[Sequence[Candidate]], ranked: Sequence[Sequence[Ranked]],
                method: str, n_attempts: int, seconds: float, ttt_loss: list[float] | None,
                ttt_tokens: int, members: int = 1) -> dict[str, Any]:
    """A task's record: the attempts of the configured selection (`method`), and beside them what the plain vote
    and the identity view's greedy answer would have scored, so one run compares the three."""
    test_attempts, test_votes, test_ranked, greedy = [], [], [], []
    correct: dict[str, list[bool]] = {"selected": [], "vote": [], "greedy": []}
    for qi, plist in enumerate(preds.predictions):
        att = attempts(ranked[qi], n_attempts)
        first = next((p.grid for p in plist if p.group == "id"), None)
        test_attempts.append([grid_json(a) for a in att])
        test_votes.append([c.to_json() for c in votes[qi][:5]])
        test_ranked.append([r.to_json() for r in ranked[qi][:5]])
        if members > 1:
            for entry, counts in zip(test_ranked[-1], by_member(ranked[qi][:5], plist, members), strict=True):
                entry["by_member"] = counts
        greedy.append(grid_json(first))
        truth = task.test[qi].output
        if truth is not None:
            correct["selected"].append(is_solved(att, truth))
            correct["vote"].append(is_solved(attempts(votes[qi], n_attempts), truth))
            correct["greedy"].append(is_solved([first], truth))
    solved = task.has_solutions

    def score(name: str) -> float | None:
        return float(np.mean(correct[name])) if solved else None

    return {
        "task_id": task.id,
        "attempts": test_attempts,
        "correct": correct["selected"] if solved else None,
        "score": score("selected"),
        "selection": method,
        "selections": {method: score("selected"), "vote": score("vote"), "greedy": score("greedy")},
        "greedy": greedy,
        "greedy_correct": correct["greedy"] if solved else None,
        "greedy_score": score("greedy"),
        "votes": test_votes,
        "ranked": test_ranked if method != "vote" else None,
        "ttt_loss": ttt_loss,
        "seconds": seconds,
        "tokens": {"ttt": ttt_tokens, "generated": preds.generated_tokens},
        "invalid": preds.invalid,
        "recall": recall_note(preds.predictions, ranked, [e.output for e in task.test]),
        "error": None,
    }


def group_records(group: Sequence[Task], plan: Plan, out: Outcome, votes: Sequence[Sequence[Sequence[Candidate]]],
                  ranked: Sequence[Sequence[Sequence[Ranked]]], fits: Mapping[str, Fit],
                  rounds: Sequence[dict[str, Any] | None] | None = None,
                  audits: Sequence[Mapping[str, float]] | None = None) -> list[dict[str, Any]]:
    """The records of a group that followed `plan`: each task's attempts (`task_record`), what the policy decided
    and the signals it read (and the cuts it took, with the seconds each saved), the seconds of each stage, (`fits`)
    what the time budget cut, (`rounds`) what the second round did, and (`audits`) the leave-one-out check against
    decoding."""
    records = []
    for i, t in enumerate(group):
        r = task_record(t, out.final[i], votes[i], ranked[i], plan.select.method, plan.attempts,
                        sum(out.spent[i].values()), [round(x, 4) for x in out.losses[i]] or None, out.tokens[i],
                        plan.ensemble.adapters)
        decision = "shared" if plan.shared else out.decision[i] if plan.policy.ttt else "answer"
        r["policy"] = {"name": plan.policy.name, "decision": decision, "signals": out.signals[i],
                       "ttt_steps": out.steps[i]}
        if out.cuts and out.cuts[i]:
            r["policy"]["cuts"] = out.cuts[i]
        if audits is not None:
            r["loo_audit"] = dict(audits[i])
        r["compute"] = {k: round(v, 4) for k, v in out.spent[i].items()}
        if t.id in fits:  # what the budget cut, and its estimate of each stage beside `compute`
            r["budget"] = fits[t.id].to_json()
        if rounds is not None and rounds[i] is not None:
            r["second_round"] = rounds[i]
        if plan.ensemble.adapters > 1:
            r["adapters"] = plan.ensemble.adapters
        records.append(r)
    attach_problems(records, out.problems)
    return records


def error_record(task: Task, error: str) -> dict[str, Any]:
    """The record of a task that could not run (too long for any budget, out of memory): no attempts, zero score."""
    solved = task.has_solutions
    zeros = [False] * len(task.test)
    return {"task_id": task.id, "attempts": [[None, None] for _ in task.test], "correct": zeros if solved else None,
            "score": 0.0 if solved else None, "greedy": [None for _ in task.test],
            "greedy_correct": zeros if solved else None, "greedy_score": 0.0 if solved else None, "votes": [],
            "ttt_loss": None, "seconds": 0.0, "tokens": {"ttt": 0, "generated": 0}, "invalid": 0, "error": error}


def attach_problems(records: list[dict[str, Any]], problems: Sequence[str]) -> None:
    """The problems a stage met with a task (a view that fits no budget), as that task's `error`."""
    for r in records:
        notes = [p for p in problems if p.startswith(f"task {r['task_id']} ")]
        if notes:
            r["error"] = "; ".join(notes)
