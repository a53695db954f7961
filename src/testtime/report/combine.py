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
    """A record's attempts at one test input, the missing ones (None) left out, as `evaluate` leaves them last."""
    got = record.get("attempts") or []
    return [a for a in (got[test] or []) if a is not None] if test < len(got) else []


def _task_source(runs: Sequence[Path], tasks: str | None) -> tuple[str | None, str | None]:
    """The task set and its solutions file: `tasks`, else those the first run whose config.json names a task set
    names (none: the combination is not scored)."""
    if tasks is not None:
        return tasks, None
    config = next((c for c in map(store.read_config, runs) if c and c.get("tasks")), None)
    return (str(config["tasks"]), config.get("solutions")) if config else (None, None)


def _n_tests(tid: str, held: Sequence[tuple[str, dict[str, Any]]], task: Task | None) -> int:
    """The task's test inputs: the task's own count where known, else the runs' (which must agree where they made
    attempts)."""
    counts = {name: len(r["attempts"]) for name, r in held if r.get("attempts")}
    expected = len(task.test) if task is not None else max(counts.values(), default=0)
    for name, n in counts.items():
        if n != expected:
            raise ValueError(f"{name}/{store.RESULTS}: task {tid} has attempts at {n} test input(s), not {expected}")
    return expected


def combine_records(runs: Sequence[Sequence[dict[str, Any]]], names: Sequence[str],
                    tasks: dict[str, Task], attempts: int = ATTEMPTS) -> list[dict[str, Any]]:
    """The combined records, a task each that any run has (in the order the runs first hold them), `attempts` a
    test input; scored where `tasks` knows the task's answers. A task every run failed keeps the first run's
    error."""
    for name, recs in zip(names, runs, strict=True):
        if any(r.get("kind") == "text" for r in recs):
            raise ValueError(f"{name}/{store.RESULTS}: a text run; combine takes grid runs")
    by_run = [{r["task_id"]: r for r in recs} for recs in runs]
    out = []
    for tid in dict.fromkeys(r["task_id"] for recs in runs for r in recs):
        held = [(name, recs[tid]) for name, recs in zip(names, by_run, strict=True) if tid in recs]
        task = tasks.get(tid)
        answers, sources = [], []
        for q in range(_n_tests(tid, held, task)):
            got, came = combine_attempts([_attempts_at(r, q) for _, r in held], attempts)
            answers.append(got)
            sources.append([held[i][0] for i in came])
        record: dict[str, Any] = {"task_id": tid, "attempts": answers, "combined": {
            "runs": [name for name, _ in held], "sources": sources,
            "scores": {name: _score(r.get("attempts"), task) for name, r in held}},
            "adapters": sum(r.get("adapters") or 1 for _, r in held)}  # the compute: every run's adapters
        if all(r.get("error") for _, r in held):
            record["error"] = held[0][1]["error"]
        if task is not None and task.has_solutions:
            record["correct"] = _correct(answers, task)
            record["score"] = sum(record["correct"]) / len(task.test)
        out.append(record)
    return out


def _correct(attempts: list | None, task: Task) -> list[bool]:
    """Whether some attempt at each test input of `task` is its answer (a test input without attempts: no)."""
    got = attempts or []
    return [q < len(got) and e.output.tolist() in (got[q] or []) for q, e in enumerate(task.test)]


def _score(attempts: list | None, task: Task | None) -> float | None:
    """A run's own score at a task, from its attempts as the combination's is scored (None: the answers unknown)."""
    if task is None or not task.has_solutions:
        return None
    return sum(_correct(attempts, task)) / len(task.test)


def combination_of(out: Path) -> list[str] | None:
    """The runs a combination in `out` was made of, as its summary names them (None: no combination there)."""
    try:
        made = json.loads((out / store.SUMMARY).read_text()).get("combined")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return [str(p) for p in made] if isinstance(made, list) else None


def check_out_folder(out: str | Path, runs: Sequence[Path]) -> Path:
    """`out`, new or a combination's own (the runs' folders may lie inside it): never one of the runs, nor another
    run's folder (its files would mix); else a one-line ValueError. Nothing is written."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: not a folder")
    held = {Path(p).resolve() for p in runs}  # runs inside `out`: OUT/checkpoints/ of `evaluate --model A --model B`
    if out_dir.resolve() in held:
        raise ValueError(f"{out_dir}: is one of the runs combined; name a new folder")

    def a_runs_own(entry: Path) -> bool:
        e = entry.resolve()
        return any(e == r or e in r.parents for r in held)

    others = [e for e in out_dir.iterdir() if not a_runs_own(e)] if out_dir.is_dir() else []
    if others and combination_of(out_dir) is None:
        raise ValueError(f"{out_dir}: holds files that no combination wrote; name a new or empty folder")
    return out_dir


def combine_runs(runs: Sequence[str | Path], out: str | Path, tasks: str | None = None) -> dict[str, Any]:
    """Combine `runs` (run folders) into the run folder `out` (new, empty, or an earlier combination's); `tasks`
    names the task set where no run's config.json does (it scores the combination and each run alike).
    Returns the summary written to `out`/summary.json."""
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise ValueError("combine takes two runs or more")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ValueError("combine: a run is named twice")
    names = [p.name for p in paths] if len({p.name for p in paths}) == len(paths) else [str(p) for p in paths]
    spec, solutions = _task_source(paths, tasks)
    by_id = {t.id: t for t in load_tasks(spec, solutions)} if spec else {}
    records = combine_records([store.read_results(p) for p in paths], names, by_id)
    out_dir = check_out_folder(out, paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = [r for r in records if "score" in r]
    summary = {"combined": [str(p) for p in paths], "n_tasks": len(records), "n_scored": len(scored),
               "score": sum(r["score"] for r in scored) if scored else None,
               "percent": 100 * sum(r["score"] for r in scored) / len(scored) if scored else None,
               "run_scores": {name: sum(r["combined"]["scores"].get(name) or 0 for r in scored) for name in names}
               if scored else None,
               "errors": sum(1 for r in records if r.get("error"))}
    if spec is not None:  # so that `report` and `submit` find the tasks
        source = {"tasks": spec} | ({"solutions": solutions} if solutions else {})
        store.write_atomic(out_dir / store.CONFIG, json.dumps(source, indent=1))
    store.write_atomic(out_dir / store.RESULTS, "".join(json.dumps(r) + "\n" for r in records))
    store.write_atomic(out_dir / store.SUMMARY, json.dumps(summary, indent=1))
    write_submission(records, out_dir / store.SUBMISSION, tasks=list(by_id.values()))
    return summary
