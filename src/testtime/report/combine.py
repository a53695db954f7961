"""One run from several: each run's first attempt at a test input, in the order the runs are given, then their
second attempts, without repeats, up to two. Runs of different checkpoints solve different tasks: v10 under the
default and the ninth stretch at one adapter make 225 of the 400 combined, against 210.5 and 211.5 alone, where a
second adapter on one model gained 0.5 (results/h100-campaign-2026-12-07d.md). The runs are made apart (a GPU
each, or one after another); `combine_runs` writes their union as a run folder (`results.jsonl`, `summary.json`,
`submission.json`) that `testtime compare`, `score` and `submit` read.

    testtime combine runs/v10 runs/stretch9 --out runs/both
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.core import store
from testtime.data.tasks import Task, load_tasks
from testtime.report.submission import write_submission

ATTEMPTS = 2


def combine_attempts(per_run: Sequence[Sequence[Any]], attempts: int = ATTEMPTS) -> tuple[list[Any], list[int]]:
    """Round robin over the runs' attempts at one test input (all first attempts, then all seconds...), skipping a
    grid already taken and missing ones (None): the attempts and the index of the run each came from."""
    out: list[Any] = []
    source: list[int] = []
    depth = max((len(a) for a in per_run), default=0)
    for k in range(depth):
        for i, got in enumerate(per_run):
            if k < len(got) and got[k] is not None and got[k] not in out:
                out.append(got[k])
                source.append(i)
    return out[:attempts], source[:attempts]


def _attempts_at(record: dict[str, Any], test: int) -> list[Any]:
    got = record.get("attempts") or []
    return list(got[test] or []) if test < len(got) else []


def _run_tasks(runs: Sequence[Path], tasks: str | None) -> dict[str, Task]:
    """The tasks by id: `tasks`, else those the first run with a config.json names (none: the combination is not
    scored)."""
    spec = tasks or next((c["tasks"] for c in map(store.read_config, runs) if c and c.get("tasks")), None)
    return {t.id: t for t in load_tasks(spec)} if spec else {}


def combine_records(runs: Sequence[Sequence[dict[str, Any]]], names: Sequence[str],
                    tasks: dict[str, Task]) -> list[dict[str, Any]]:
    """The combined records, a task each that any run has (in the order the runs first hold them); scored where
    `tasks` knows the task's answers."""
    by_run = [{r["task_id"]: r for r in recs} for recs in runs]
    order = list(dict.fromkeys(r["task_id"] for recs in runs for r in recs))
    out = []
    for tid in order:
        held = [(name, recs[tid]) for name, recs in zip(names, by_run, strict=True) if tid in recs]
        n_tests = max(len(r.get("attempts") or []) for _, r in held)
        attempts, sources = [], []
        for q in range(n_tests):
            got, came = combine_attempts([_attempts_at(r, q) for _, r in held])
            attempts.append(got)
            sources.append([held[i][0] for i in came])
        record: dict[str, Any] = {"task_id": tid, "attempts": attempts, "combined": {
            "runs": [name for name, _ in held], "sources": sources,
            "scores": {name: r.get("score") for name, r in held}},
            "adapters": sum(r.get("adapters") or 1 for _, r in held)}  # the compute: every run's adapters
        task = tasks.get(tid)
        if task is not None and task.has_solutions and len(task.test) == n_tests:
            record["correct"] = [any(a == e.output.tolist() for a in att) for att, e in zip(attempts, task.test,
                                                                                         strict=True)]
            record["score"] = sum(record["correct"]) / n_tests
        out.append(record)
    return out


def combine_runs(runs: Sequence[str | Path], out: str | Path, tasks: str | None = None) -> dict[str, Any]:
    """Combine `runs` (run folders) into the run folder `out`; `tasks` names the task set where no run's config.json
    does (it scores the combination).
    Returns the summary written to `out`/summary.json."""
    if len(runs) < 2:
        raise ValueError("combine takes two runs or more")
    paths = [Path(r) for r in runs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    records = combine_records([store.read_results(p) for p in paths], names, _run_tasks(paths, tasks))
    out_dir = Path(out)
    if out_dir.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"{out_dir}: is one of the runs combined; name a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    store.write_atomic(out_dir / store.RESULTS, "".join(json.dumps(r) + "\n" for r in records))
    scored = [r for r in records if "score" in r]
    singles = {name: sum(r["combined"]["scores"].get(name) or 0 for r in scored) for name in names}
    summary = {"runs": [str(p) for p in paths], "n_tasks": len(records), "n_scored": len(scored),
               "score": sum(r["score"] for r in scored) if scored else None,
               "percent": 100 * sum(r["score"] for r in scored) / len(scored) if scored else None,
               "run_scores": singles if scored else None}
    store.write_atomic(out_dir / store.SUMMARY, json.dumps(summary, indent=1))
    write_submission(records, out_dir / store.SUBMISSION)
    return summary
