"""Several base models as one solver: each solves the task with its own adapters, and their attempts are combined as
`testtime combine` combines runs (each model's first attempt at a test input, in the models' order, then their
seconds). Checkpoints of one pretraining solve different tasks: v11 and the ninth stretch, one adapter each, made 231
of the 400 combined against v11's 220.5 alone (results/h100-campaign-2026-12-07e.md), where a second adapter on one
model gained 0.5.

    both = testtime.load_checkpoints(["models/testtime-grid-base", "ckpt-b"])
    result = both.solve("arc1/eval/00576224", adapters=1)   # a Solution, as a Solver's
    result.record["combined"]["sources"]                    # which model each attempt came from

`Checkpoints` answers the calls a `Solver` answers (`solve`, `solve_many`, `evaluate`, `config`), so `testtime solve
--model A --model B` and `testtime serve --model A --model B` take it where they take one solver. Its models run one
after another on one device. A task's time budget is shared between them in `solve`, each model getting an equal
part of what is left when its turn comes; `evaluate` makes a run a model, each with the whole budget a task, as
`testtime evaluate --model A --model B` does. Each model's own record of a task (its policy's decision, what its
budget cut) stays under the combined record's `checkpoints`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from testtime.api import Run, Solution, Solver, TaskSolver, build_config, load, run_checkpoints, several_models
from testtime.core.config import SECONDS, ConfigError, check_value
from testtime.data.tasks import Task, as_task
from testtime.recipes.grid import EvalConfig
from testtime.report.combine import ATTEMPTS, combine_records
from testtime.stages import budget
from testtime.stages.selection import Ranked


def _interleaved(per_model: Sequence[Sequence[Ranked]]) -> list[Ranked]:
    """The models' candidates at one test input round robin (every model's best, then every second best...), a grid
    kept once: the order the combined attempts follow, as the models' scores are not comparable with each other."""
    out: list[Ranked] = []
    for k in range(max((len(c) for c in per_model), default=0)):
        for cands in per_model:
            if k < len(cands) and not any(np.array_equal(cands[k].grid, o.grid) for o in out):
                out.append(cands[k])
    return out


def combined_solution(task: Task, names: Sequence[str], solutions: Sequence[Solution],
                      attempts: int = ATTEMPTS) -> Solution:
    """One task's solutions by several models as one: the attempts combined (`combine_records`, with its `combined`
    note of which model gave each), the candidates interleaved, the stages' seconds summed, the TTT loss the mean of
    the models' where their curves have one length, and each model's own record under `checkpoints`."""
    records = [s.record for s in solutions]
    rec = combine_records([[r] for r in records], names, {task.id: task}, attempts)[0]
    rec.setdefault("correct", None)
    rec.setdefault("score", None)
    # every model's problem, named, even where another model answered (a view that did not fit, say)
    rec["error"] = "; ".join(f"{n}: {r['error']}" for n, r in zip(names, records, strict=True) if r.get("error")) \
        or None
    curves = [r.get("ttt_loss") for r in records]
    same = all(c is not None for c in curves) and len({len(c) for c in curves}) == 1
    rec["ttt_loss"] = [round(float(x), 4) for x in np.mean(curves, axis=0)] if same else None
    compute: dict[str, float] = {}
    for r in records:
        for stage, secs in (r.get("compute") or {}).items():
            compute[stage] = round(compute.get(stage, 0.0) + secs, 4)
    rec["compute"] = compute
    rec["seconds"] = round(sum(r.get("seconds") or 0.0 for r in records), 4)
    rec["checkpoints"] = {name: r for name, r in zip(names, records, strict=True)}
    # as one model's record has them: `attempts` a test input, None where there is no answer
    rec["attempts"] = [q + [None] * (attempts - len(q)) for q in rec["attempts"]]
    if not any(s.candidates for s in solutions):  # no model could run the task: `error` says why
        return Solution(task, rec, [])
    candidates = [_interleaved([s.candidates[q] for s in solutions if q < len(s.candidates)])
                  for q in range(len(task.test))]
    return Solution(task, rec, candidates)


class Checkpoints(TaskSolver):
    """Solvers of several models (`load_checkpoints`), answering a Solver's calls with their attempts combined; `solve`
    is `solve_many` of one, a TaskError where no model could run the task."""

    def __init__(self, solvers: Sequence[Solver]) -> None:
        if len(solvers) < 2:
            raise ConfigError(f"several models: name two or more, got {len(solvers)}")
        self.solvers = list(solvers)
        self.names = [s.name or "shipped" for s in self.solvers]
        if len(set(self.names)) < len(self.names):
            raise ConfigError("a model is named twice: its attempts would repeat the first's")

    @property
    def name(self) -> str:
        """The models, joined: what a service's /health and a run's log name."""
        return " + ".join(self.names)

    @property
    def device(self) -> str:
        return self.solvers[0].device

    def config(self, recipe: str | EvalConfig = "default", **settings: Any) -> EvalConfig:
        """The grid config each model's call runs with (its `model` aside), as `Solver.config` builds it."""
        return self.solvers[0].config(recipe, **settings)

    def solve_many(self, tasks: Sequence[Task | Mapping[str, Any] | str | Path], *,
                   recipe: str | EvalConfig = "default", max_seconds: float | Literal["auto"] | None = "auto",
                   spent: float = 0.0, say: Callable[[str], None] | None = None, show_progress: bool = True,
                   **settings: Any) -> list[Solution]:
        """`Solver.solve_many` with each model in turn, one Solution a task with their attempts combined. Under a
        time budget (each task's own, as `Solver.solve_many` takes it) each model gets an equal part of the seconds a
        task has left when its turn comes: a model that finishes early leaves its rest to the next."""
        start = time.perf_counter()
        cfg = self.config(recipe, **settings)  # a bad setting fails before the first model's work
        limit = budget.default_max_seconds(self.device) if max_seconds == "auto" else max_seconds
        if limit is not None:
            check_value("max_seconds", limit, SECONDS)
        items = [as_task(t) for t in tasks]
        if not items:
            return []
        distinct = len({t.id for t in items})  # a task given twice is solved once
        per_model: list[list[Solution]] = []
        for k, solver in enumerate(self.solvers):
            share: float | None = None
            if limit is not None:
                # The tasks of a call are solved together, so each is charged its part of the models' time so far.
                # Below the cheapest plan, a model still runs that plan, as a Solver does with too little time.
                left = limit - spent - (time.perf_counter() - start) / distinct
                share = max(left / (len(self.solvers) - k), 1e-3)
            tell = (lambda line, n=self.names[k]: say(f"{n}: {line}")) if say else None
            per_model.append(solver.solve_many(items, recipe=recipe, max_seconds=share, say=tell,
                                               show_progress=show_progress, **settings))
        return [combined_solution(t, self.names, [got[i] for got in per_model], cfg.attempts)
                for i, t in enumerate(items)]

    def evaluate(self, tasks: str | Path = "arc1/eval", out: str | Path | None = None, *,
                 recipe: str | EvalConfig = "default", strict: bool = False, max_minutes: float | None = None,
                 max_seconds: float | Literal["auto"] | None = "auto", show_progress: bool = True,
                 say: Callable[[str], None] | None = None, labels: Mapping[str, str] | None = None,
                 **settings: Any) -> tuple[list[Run], dict[str, Any]]:
        """A task set with each model into OUT/checkpoints/K-NAME, then combined into OUT, as
        `testtime.evaluate_checkpoints` does with these models already loaded: the runs, and the combination's
        summary."""
        if "model" in settings or "device" in settings:
            raise ConfigError("checkpoints keep their models and device; load others for others")
        cfg = build_config(str(tasks), recipe, settings=settings)
        by_name = {s.name: s for s in self.solvers}

        def one(cfg_k: EvalConfig, folder: Path, **args: Any) -> Run:  # the solver's own call, under its lock
            return by_name[cfg_k.model].evaluate(cfg_k.tasks, folder, recipe=cfg_k, **args)

        return run_checkpoints(cfg, [s.name for s in self.solvers], out, max_minutes=max_minutes, run=one,
                               strict=strict, max_seconds=max_seconds, show_progress=show_progress, say=say,
                               labels=labels)


def load_checkpoints(models: Sequence[str | Path | None], device: str | None = None, dtype=None) -> Checkpoints:
    """Solvers of several model folders (None: the shipped model), each loaded once on `device`; see `Checkpoints`."""
    if isinstance(models, str | Path):
        raise ConfigError("load_checkpoints takes a list of model folders; for one model, use testtime.load")
    names, _ = several_models(models)  # a missing or damaged folder refused before the first model loads
    return Checkpoints([load(m, device, dtype) for m in names])


def load_solver(models: Sequence[str | Path | None] | None, device: str | None = None,
                dtype=None) -> Solver | Checkpoints:
    """What `testtime solve` and `testtime serve` answer with, from their `--model` flags: a Solver of the one model
    named (none: the shipped model), or `Checkpoints` of several."""
    named = list(models or [None])
    return load(named[0], device, dtype) if len(named) == 1 else load_checkpoints(named, device, dtype)
