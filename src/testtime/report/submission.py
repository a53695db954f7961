"""Kaggle ARC Prize submission files: write one from a run's records, score one against solutions.

The format, one entry per test input of every task, two attempts each:

    {"00576224": [{"attempt_1": [[1, 2], [3, 4]], "attempt_2": [[0]]}], ...}

A missing attempt (a failed task, an undecodable answer) becomes [[0]], as Kaggle requires a grid.
A task scores the fraction of its test inputs where either attempt equals the answer; the total is the
sum over the solutions' tasks (a task absent from the submission scores 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.core.config import read_json
from testtime.core.store import write_atomic
from testtime.data.tasks import Task, load_tasks

EMPTY: list[list[int]] = [[0]]
ATTEMPTS = ("attempt_1", "attempt_2")


def _entry(pair: Sequence[Any] | None) -> dict[str, Any]:
    pair = list(pair or [])
    return {k: (pair[i] if i < len(pair) and pair[i] is not None else EMPTY) for i, k in enumerate(ATTEMPTS)}


def submission_from_records(records: Sequence[dict[str, Any]], tasks: Sequence[Task] = ()) -> dict[str, list]:
    """The submission object: records in order, then every task of `tasks` that has no record (all [[0]])."""
    n_tests = {t.id: len(t.test) for t in tasks}
    out: dict[str, list] = {}
    for r in records:
        attempts = list(r.get("attempts") or [])
        n = max(len(attempts), n_tests.get(r["task_id"], 0))
        out[str(r["task_id"])] = [_entry(attempts[i] if i < len(attempts) else None) for i in range(n)]
    for t in tasks:
        if t.id not in out:
            out[t.id] = [_entry(None) for _ in t.test]
    return out


def write_submission(records: Sequence[dict[str, Any]], path: str | Path, tasks: Sequence[Task] = ()) -> Path:
    """Write `submission.json` atomically (a temp file, then a rename)."""
    return write_atomic(path, json.dumps(submission_from_records(records, tasks)))


def _is_grid(g: Any) -> bool:
    return isinstance(g, list) and bool(g) and all(isinstance(row, list) for row in g)


def read_submission(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A submission file, checked for shape: one line naming the file and task when it is malformed."""
    path = Path(path)
    sub = read_json(path, "submission", ValueError)
    if not isinstance(sub, dict):
        raise ValueError(f"{path}: a submission is an object of task id -> list of attempts")
    for tid, entries in sub.items():
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: task {tid}: expected a list with one entry per test input")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not all(k in e for k in ATTEMPTS):
                raise ValueError(f"{path}: task {tid}: entry {i} needs 'attempt_1' and 'attempt_2'")
            for k in ATTEMPTS:
                if not _is_grid(e[k]):
                    raise ValueError(f"{path}: task {tid}: entry {i}: {k} is not a grid (a list of rows)")
    return sub


def load_solutions(solutions: str | Path | Sequence[Task]) -> dict[str, list[list[list[int]]]]:
    """Answers by task id, from a Kaggle solutions file ({id: [grid, ...]}), or any task spec or task list."""
    if isinstance(solutions, (str, Path)):
        path = Path(solutions)
        if path.is_file():
            obj = read_json(path, "solutions", ValueError)
            if isinstance(obj, dict) and obj and all(isinstance(v, list) and all(_is_grid(g) for g in v)
                                                     for v in obj.values()):
                return obj
        tasks: Sequence[Task] = load_tasks(solutions)
    else:
        tasks = solutions
    out = {}
    for t in tasks:
        if not t.has_solutions:
            raise ValueError(f"task {t.id}: has no known test outputs to score against")
        out[t.id] = [e.output.astype(int).tolist() for e in t.test]  # type: ignore[union-attr]
    return out


def score_submission(submission: str | Path, solutions: str | Path | Sequence[Task]) -> dict[str, Any]:
    """Score a submission file: {"tasks": {id: score}, "score": total, "n_tasks", "percent", "missing": [ids]}."""
    sub = read_submission(submission)
    answers = load_solutions(solutions)
    if not set(sub) & set(answers):  # scoring would list every solution task as missing, and score 0
        theirs = ", ".join(sorted(answers)[:3]) + (", ..." if len(answers) > 3 else "")
        raise ValueError(f"{submission}: no task id matches one of the {len(answers)} solution tasks ({theirs}); "
                         "wrong solutions for this submission?")
    per_task: dict[str, float] = {}
    for tid, truths in answers.items():
        entries = sub.get(tid, [])
        hits = [i < len(entries) and any(entries[i][k] == truth for k in ATTEMPTS) for i, truth in enumerate(truths)]
        per_task[tid] = sum(hits) / len(truths)
    total = sum(per_task.values())
    return {
        "tasks": per_task,
        "score": total,
        "n_tasks": len(per_task),
        "percent": 100.0 * total / len(per_task) if per_task else 0.0,
        "missing": [tid for tid in answers if tid not in sub],
    }
