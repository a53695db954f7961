"""The Python API: load a model once, then solve tasks and evaluate task sets with it; recipes and policies by name.

    import testtime

    solver = testtime.load()                                # the shipped model (or a folder); cuda if there is one
    result = solver.solve("arc1/eval/00576224")             # a Task, a dict in ARC JSON, a task file or a dataset name
    result.attempts[0]                                      # the two attempts at the first test input (numpy grids)
    result.candidates[0][0]                                 # every candidate, best first, with its votes and score
    result.ttt_loss, result.seconds                         # the TTT loss curve; the seconds of each stage
    results = solver.solve_many(tasks, policy="always")     # trained and decoded together, in the batched bank
    run = solver.evaluate("arc1/eval", "runs/full", limit=20)   # a run folder, as `testtime evaluate` writes it
    testtime.combine(["runs/full", "runs/other"], "runs/both")   # two runs' first attempts, then their seconds
    testtime.evaluate_checkpoints(["ckpt-a", "ckpt-b"], "arc1/eval", "runs/ab")   # a run a model, then combined

Settings are the command's flags by name (`views=4`, `epochs=2`, `select="vote"`: `SETTINGS`) or any config field by
its dotted path (`**{"select_cfg.colors": 1}`), over a named recipe (`RECIPES`) or a whole `EvalConfig`. An error a
caller can fix is a one-line exception, the line `testtime` prints after `error: ` (TaskError, ConfigError,
ModelError...: ValueErrors all).

A `Solver` keeps its model loaded, and the pace the CPU time budget timed, across calls (the engine captures its CUDA
graphs per generation batch: there is no graph pool to keep). It runs one call at a time: calls from several threads
wait their turn, so a service holding one solver batches concurrent tasks into one `solve_many` call (whose tasks
train together, each in its own adapter slot) rather than calling it from many threads.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from testtime.core.config import ConfigError, read_json, with_overrides
from testtime.core.distributed import from_env
from testtime.data.encode import Codec, TooLongError
from testtime.data.tasks import Grid, Task, TaskError, as_task, load_task_set
from testtime.model.loading import default_model_dir, load_model
from testtime.model.model_folder import ModelError, check_model_dir
from testtime.recipes import grid
from testtime.recipes.grid import EvalConfig, config_from_dict
from testtime.report.combine import check_out_folder, combination_of
from testtime.report.combine import combine_runs as combine
from testtime.stages import budget
from testtime.stages.policy import DEFAULT_POLICY, POLICIES, Policy
from testtime.stages.selection import Ranked
from testtime.text.run import TextEvalConfig, check_text_flags, text_config_from_dict
from testtime.text.tasks import is_text_task_path

__all__ = ["POLICIES", "RECIPES", "SETTINGS", "ConfigError", "DEFAULT_POLICY", "EvalConfig", "ModelError", "Policy",
           "Ranked", "Recipe", "Run", "Solution", "Solver", "Task", "TaskError", "TooLongError", "combine", "evaluate",
           "evaluate_checkpoints", "load"]

# Where each setting (a flag of `testtime evaluate` by name) goes in a run's config; a dotted config path goes as is.
SETTINGS = {
    "tasks": "tasks", "model": "model", "ttt": "ttt", "limit": "limit", "device": "device", "policy": "policy",
    "max_group": "max_group", "views": "predict_cfg.views", "orders": "predict_cfg.orders",
    "token_budget": "predict_cfg.token_budget", "cuda_graphs": "predict_cfg.cuda_graphs",
    "samples": "ttt_cfg.samples", "epochs": "ttt_cfg.epochs", "lr": "ttt_cfg.lr", "rank": "ttt_cfg.rank",
    "adapter": "ttt_cfg.adapter",
    "augment": "ttt_cfg.augment", "loo": "ttt_cfg.leave_one_out", "demo_loss": "ttt_cfg.loss_on_demos",
    "shared": "ttt_cfg.shared", "select": "select_cfg.method", "joint_samples": "joint_cfg.samples",
    "joint_dir": "joint_cfg.dir", "adapters": "ensemble_cfg.adapters", "dfs": "predict_cfg.dfs",
    "second_round": "second_cfg.steps", "budget": "budget", "audit_loo": "audit_loo",
}
GRID_ONLY = ("policy", "views", "augment", "loo", "select", "joint_samples", "joint_dir", "adapters", "dfs",
             "second_round", "budget", "audit_loo")
# The text kind's own: zero-shot prompts, which TTT sequences, an adapter per query, the first N queries.
TEXT_ONLY = {"icl": "predict_cfg.icl", "ttt_data": "ttt_data", "per_query": "per_query", "max_queries": "max_queries"}
TEXT_SETTINGS = {k: v for k, v in SETTINGS.items() if k not in GRID_ONLY} | TEXT_ONLY
# A solver's model and device are its own; its calls take tasks as arguments; `solve` never runs the joint stage.
NOT_FOR_SOLVING = ("tasks", "model", "device", "limit", "joint_samples", "joint_dir")


@dataclass(frozen=True)
class Recipe:
    """A named starting config for grid runs: `settings` (dotted config paths) over EvalConfig's defaults."""

    name: str
    summary: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def config(self) -> EvalConfig:
        return with_overrides(EvalConfig(), dict(self.settings))


# A recipe is one entry here; `testtime recipes` lists them and `--recipe NAME` starts from one. The costs are
# GPU-seconds a task on ARC-AGI-1's evaluation set: the default's and fast's are measured (1.65 H100-s with 2
# adapters, 0.92 with one: results/h100-arch-adapters-2026-12-06.md; fast 0.48: results/h100-a2-2026-12-07.md);
# max's is an estimate until scripts/gpu_levers.sh measures it.
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("default", f"TTT of 2 adapters a task under the {DEFAULT_POLICY} policy (96 steps), 8 views, product of "
                      "experts over views and adapters: what `testtime solve` and `testtime evaluate` run without "
                      "--recipe or --config (1.65 H100-s/task)"),
    # One adapter, half the steps (48 scored 144.5 against 160 with model v3), half the views, a quarter of the
    # scoring views.
    Recipe("fast", "the default at 29% of the cost (0.48 H100-s/task; 175.5 of ARC-AGI-1's 400 against 211.5): one "
                   "adapter, 48 TTT steps, 4 views, candidates scored under 4 views in their own colors",
           {"ensemble_cfg.adapters": 1, "ttt_cfg.epochs": 3, "predict_cfg.views": 4, "select_cfg.views": 4,
            "select_cfg.colors": 1}),
    # Each lever adds candidates the default misses (issue 24): TTT x4, decoding x4 members x ~3 (sampling without CUDA
    # graphs, forks), scoring x4 members x2 candidates, the second round again on confident tasks.
    Recipe("max", "more right candidates, within 30 H200-s/task (an estimate: about 10): 4 adapters per task "
                  "(--adapters 4), every answer at least 10% likely under each view (--dfs 0.1), 16 candidates "
                  "scored through every adapter, a second round of 32 steps on confident answers (--second-round 32)",
           {"ensemble_cfg.adapters": 4, "predict_cfg.dfs": 0.1, "select_cfg.candidates": 16, "second_cfg.steps": 32}),
)}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None


def _plain_name(key: str, value: object) -> str:
    return key


def build_config(tasks: str | None = None, recipe: str | EvalConfig | TextEvalConfig | None = None,
                 config: str | Path | None = None, settings: Mapping[str, Any] | None = None,
                 spell: Callable[[str, Any], str] = _plain_name) -> EvalConfig | TextEvalConfig:
    """A run's config: a JSON `config` file, or a `recipe` (a name in RECIPES, or a config), else the default; then
    the `settings` given (None: not given), each onto its place by `dataclasses.replace`, checked against its field's
    limits. Grid or text tasks, told by the tasks named (`tasks`, else the base config's). `spell(key, value)` names
    a setting in errors (the command spells its flags)."""
    if config is not None and recipe is not None:
        raise ConfigError(f"{spell('config', config)} and {spell('recipe', recipe)}: give one of them")
    raw = read_json(config) if config is not None else None
    base = recipe if isinstance(recipe, EvalConfig | TextEvalConfig) else None
    spec = tasks or (raw.get("tasks") if isinstance(raw, dict) else None) or (base.tasks if base else "arc1/eval")
    text = isinstance(spec, str) and is_text_task_path(spec)
    # Whether a file was given, not whether it held something: a file holding `null` is an error, not the default.
    given = config is not None
    name = recipe if isinstance(recipe, str) else "default" if recipe is None and not given else None
    if name is not None and text and name != "default":
        raise ConfigError(f"{spell('recipe', recipe)} applies to grid tasks, not text tasks")
    if name is not None and not text:
        base = get_recipe(name).config()
    if text:
        cfg = text_config_from_dict(raw, str(config)) if given else base or TextEvalConfig()
        places = TEXT_SETTINGS
    else:
        cfg = config_from_dict(raw, str(config)) if given else base or EvalConfig()
        places = SETTINGS
    if text != isinstance(cfg, TextEvalConfig):
        raise ConfigError(f"a {'grid' if text else 'text'} config for {'text' if text else 'grid'} tasks ({spec})")
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    if tasks is not None:
        given["tasks"] = tasks
    for key, value in given.items():
        if "." not in key and key not in places:
            if key in SETTINGS:
                raise ConfigError(f"{spell(key, value)} applies to grid tasks, not text tasks")
            if key in TEXT_ONLY:
                raise ConfigError(f"{spell(key, value)} applies to text tasks, not grid tasks")
            raise ConfigError(f"unknown setting {key!r}: a flag's name ({', '.join(places)}) or a dotted config path")
    cfg = with_overrides(cfg, {places.get(k, k): v for k, v in given.items()},
                         names={places.get(k, k): spell(k, v) for k, v in given.items()})
    if text:
        check_text_flags(cfg, list(given))
    return cfg


@dataclass
class Solution:
    """One task solved: its record (as a run's `results.jsonl` holds it) and every candidate, ranked."""

    task: Task
    record: dict[str, Any]
    candidates: list[list[Ranked]]  # per test input, best first (none: the task could not run, see `error`)

    @property
    def attempts(self) -> list[list[Grid | None]]:
        """Per test input, the attempts (two by default) as uint8 grids; None where there was no answer."""
        return [[None if g is None else np.asarray(g, dtype=np.uint8) for g in att] for att in self.record["attempts"]]

    @property
    def ttt_loss(self) -> list[float] | None:
        """The training loss at each TTT step, the mean over the task's adapters (None: not trained)."""
        return self.record["ttt_loss"]

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds of each stage: icl, loo, ttt, predict, select (and second, where a second round ran)."""
        return dict(self.record.get("compute") or {})

    @property
    def correct(self) -> list[bool] | None:
        """Per test input, whether an attempt is right (None: the task has no known answers)."""
        return self.record["correct"]

    @property
    def score(self) -> float | None:
        return self.record["score"]

    @property
    def error(self) -> str | None:
        return self.record["error"]

    @property
    def decision(self) -> dict[str, Any] | None:
        """What the policy decided for the task, and the signals it read."""
        return self.record.get("policy")

    def show(self, console=None) -> None:
        """The task and its attempts in color, in a terminal; where several models answered, which gave each."""
        from rich.console import Console

        from testtime.data.render import print_task

        console = console or Console()
        print_task(self.task, predictions=self.attempts, console=console)
        for q, names in enumerate((self.record.get("combined") or {}).get("sources") or []):
            came = ", ".join(f"attempt {k} from {name}" for k, name in enumerate(names, 1)) or "no attempt"
            console.print(f"test {q + 1}: {came}", highlight=False)

    def html(self) -> str:
        """A self-contained HTML page of the task and its attempts."""
        from testtime.data.render import task_html

        return task_html(self.task, predictions=self.attempts)

    def _repr_html_(self) -> str:  # a notebook draws the task and its attempts
        from testtime.data.render import CSS, task_section

        return f"<style>{CSS}</style>" + task_section(self.task, predictions=self.attempts)


@dataclass
class Run:
    """An evaluation's run folder and the records of the tasks asked for (under torchrun: merged on rank 0, this
    rank's own elsewhere)."""

    out: Path
    records: list[dict[str, Any]]
    skipped: list[str]  # task files left out as invalid
    text: bool = False


def read_labels(path: str | Path) -> dict[str, str]:
    """Task labels from a JSON object of task id -> label (`evaluate(labels=...)`); anything else is a ConfigError."""
    obj = read_json(path, what="labels")
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise ConfigError(f"{path}: labels must be a JSON object of task id -> label (a string)")
    return obj


def _max_seconds(value: float | Literal["auto"] | None, device: str) -> float | None:
    return budget.default_max_seconds(device) if value == "auto" else value


def run_evaluation(cfg: EvalConfig | TextEvalConfig, out: str | Path | None = None, *,
                   solver: Solver | None = None, tasks: Sequence[Task] | None = None, skipped: Sequence[str] = (),
                   strict: bool = False, max_minutes: float | None = None,
                   max_seconds: float | Literal["auto"] | None = "auto", show_progress: bool = True,
                   say: Callable[[str], None] | None = None, labels: Mapping[str, str] | None = None) -> Run:
    """The run loop of `testtime evaluate` on a built config: tasks (loaded from `cfg.tasks` unless given), resume,
    records, summary, report, into `out` (default: named after the config). With a `solver`, its model; else the
    config's, loaded on each process's device. `labels` (task id -> label) are written into the grid records, for
    analysis only (`grid.evaluate`)."""
    from testtime.core.config import MINUTES, SECONDS, check_value

    check_value("max_minutes", max_minutes, MINUTES)
    model, codec, tokenizer = (solver.model, solver.codec, solver.tokenizer) if solver else (None, None, None)
    if isinstance(cfg, TextEvalConfig):
        if max_seconds != "auto" and max_seconds is not None:
            raise ConfigError("max_seconds applies to grid tasks, not text tasks")
        if labels is not None:
            raise ConfigError("labels apply to grid tasks, not text tasks")
        from testtime.text.run import default_out, evaluate_text

        out = Path(out) if out is not None else default_out(cfg)
        records = evaluate_text(cfg, out, model=model, tokenizer=tokenizer, tasks=tasks, max_minutes=max_minutes,
                                show_progress=show_progress)
        return Run(out, records, [], text=True)
    if max_seconds != "auto":
        check_value("max_seconds", max_seconds, SECONDS)
    from testtime.core.distributed import pick_device

    limit = _max_seconds(max_seconds, solver.device if solver else pick_device(cfg.device))
    out = Path(out) if out is not None else grid.default_out(cfg)
    if tasks is None:
        tasks, skipped = load_task_set(cfg.tasks, strict=strict)
    records = grid.evaluate(cfg, out, model=model, codec=codec, tokenizer=tokenizer, tasks=tasks,
                            max_minutes=max_minutes, skipped=skipped, show_progress=show_progress, max_seconds=limit,
                            say=say, speed=solver.speed if solver else None, labels=labels)
    return Run(out, records, list(skipped))


def evaluate(tasks: str | Path = "arc1/eval", out: str | Path | None = None, *,
             recipe: str | EvalConfig | TextEvalConfig = "default", strict: bool = False,
             max_minutes: float | None = None, max_seconds: float | Literal["auto"] | None = "auto",
             show_progress: bool = True, say: Callable[[str], None] | None = None,
             labels: Mapping[str, str] | None = None, **settings: Any) -> Run:
    """Solve a task set into a run folder, as `testtime evaluate` does (and, like it, unchanged under torchrun: each
    process loads the model on its own device); `model` and `device` are settings here. A finished task is skipped
    when the run folder already holds it. For a model kept loaded across calls, see `Solver.evaluate`."""
    cfg = build_config(str(tasks), recipe, settings=settings)
    return run_evaluation(cfg, out, strict=strict, max_minutes=max_minutes, max_seconds=max_seconds,
                          show_progress=show_progress and from_env().is_main, say=say, labels=labels)


def several_models(models: Sequence[str | Path | None]) -> tuple[list[str | None], list[Path]]:
    """Two model folders or more (None: the shipped model), each once and each a model folder, before any loads or
    runs: their names as given and their paths; else a one-line ConfigError or ModelError."""
    names = [None if m is None else str(m) for m in models]
    paths = [default_model_dir() if m is None else Path(m) for m in names]
    if len(names) < 2:
        raise ConfigError(f"several models: name two or more, got {len(names)}")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ConfigError("a model is named twice: its answers would repeat the first's")
    for path in paths:
        check_model_dir(path)
    return names, paths


def run_checkpoints(cfg: EvalConfig | TextEvalConfig, models: Sequence[str | Path | None],
                    out: str | Path | None = None, *, max_minutes: float | None = None,
                    run: Callable[..., Run] | None = None, **run_args: Any) -> tuple[list[Run], dict[str, Any]]:
    """The run loop of `testtime evaluate --model A --model B`: `cfg` run with each base model in turn (None: the
    shipped one), a run folder each under OUT/checkpoints/ (resumed as any run), then their attempts combined into
    OUT as `combine` does: each run's first attempt at a test input, in the models' order, then their seconds.
    Checkpoints of one pretraining solve different tasks: two runs so combined made 227.5 to 231 of the 400 against
    220.5 for the better (results/h100-campaign-2026-12-07e.md). `max_minutes` bounds all the runs together; the
    other `run_args` go to each `run_evaluation` (or `run(cfg, folder, **run_args)`, which runs a model's config:
    `Checkpoints.evaluate`'s, with its models loaded). Returns the runs and the combination's summary."""
    import time

    from testtime.core.config import MINUTES, check_value
    from testtime.recipes.runs import check_run_dir

    check_value("max_minutes", max_minutes, MINUTES)
    if not isinstance(cfg, EvalConfig):
        raise ConfigError("several models combine grid runs; a text run takes one model")
    if from_env().enabled:  # each run would tear down the process group the next one needs
        raise ConfigError("several models run in one process; under torchrun, evaluate each model apart and "
                          "`testtime combine` their runs")
    names, paths = several_models(models)
    out = Path(out) if out is not None else grid.default_out(cfg).with_name(
        f"{grid.default_out(cfg).name}-{len(names)}models")
    folders = [out / "checkpoints" / f"{k}-{path.name}" for k, path in enumerate(paths, 1)]
    # Everything that can refuse does so now, not after the first model's whole run.
    check_out_folder(out, folders)
    made = combination_of(out)
    if made is not None and [Path(p).resolve() for p in made] != [f.resolve() for f in folders]:
        raise ConfigError(f"{out}: combines other runs ({', '.join(made)}); name a new --out for these models")
    for name, folder in zip(names, folders, strict=True):
        check_run_dir(folder, grid.config_to_dict(replace(cfg, model=name)))
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    runs = []
    for name, folder in zip(names, folders, strict=True):
        left = None if deadline is None else max((deadline - time.monotonic()) / 60, 1e-3)
        runs.append((run or run_evaluation)(replace(cfg, model=name), folder, max_minutes=left, **run_args))
    return runs, combine([r.out for r in runs], out)


def evaluate_checkpoints(models: Sequence[str | Path | None], tasks: str | Path = "arc1/eval",
                         out: str | Path | None = None, *, recipe: str | EvalConfig = "default", strict: bool = False,
                         max_minutes: float | None = None, max_seconds: float | Literal["auto"] | None = "auto",
                         show_progress: bool = True, **settings: Any) -> tuple[list[Run], dict[str, Any]]:
    """`evaluate` with each of `models` in turn, their attempts combined (`run_checkpoints`): the runs, and the
    combination's summary (its score, and each run's own in `run_scores`)."""
    if "model" in settings:
        raise ConfigError("evaluate_checkpoints takes its models as its first argument, not as a setting")
    cfg = build_config(str(tasks), recipe, settings=settings)
    return run_checkpoints(cfg, models, out, strict=strict, max_minutes=max_minutes, max_seconds=max_seconds,
                           show_progress=show_progress and from_env().is_main)


class TaskSolver(ABC):
    """One task solved as `solve_many` of one: what a Solver and several models as one (`testtime.checkpoints`)
    share."""

    @abstractmethod
    def solve_many(self, tasks: Sequence[Task | Mapping[str, Any] | str | Path], **kwargs: Any) -> list[Solution]:
        """Tasks solved together, one Solution each, in order."""

    def solve(self, task: Task | Mapping[str, Any] | str | Path, *, recipe: str | EvalConfig = "default",
              max_seconds: float | Literal["auto"] | None = "auto", spent: float = 0.0,
              say: Callable[[str], None] | None = None, show_progress: bool = True, **settings: Any) -> Solution:
        """Solve one task: test-time train, predict under augmentations, select two attempts (`solve_many` of one).
        `max_seconds` is its time budget ("auto": 300 s on a CPU, none on a GPU), less `spent` seconds already gone;
        `say` hears the plan the budget made before the work starts. A task that cannot run is a TaskError."""
        result = self.solve_many([task], recipe=recipe, max_seconds=max_seconds, spent=spent, say=say,
                                 show_progress=show_progress, **settings)[0]
        if not result.candidates:
            raise TaskError(result.error)
        return result


class Solver(TaskSolver):
    """A model loaded once (`load`), with its tokenizer and grid codec, for any number of calls; one call runs at a
    time (see the module's docstring)."""

    def __init__(self, model, codec: Codec, tokenizer=None, *, name: str | None = None) -> None:
        """A solver of a model already in memory (`load` reads one from a folder); `name` is the folder a run's
        config.json names (None: the shipped model)."""
        self.model, self.codec, self.tokenizer, self.name = model, codec, tokenizer, name
        self.model.eval()
        self.speed: budget.Speed | None = None  # timed by the first call under a time budget, then kept
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def config(self, recipe: str | EvalConfig = "default", **settings: Any) -> EvalConfig:
        """The grid config a call of this solver runs with (see `build_config`)."""
        refused = [k for k in settings if k in NOT_FOR_SOLVING]
        if refused:
            raise ConfigError(f"setting {refused[0]!r} is not for solving: a solver keeps its model and device, and "
                              "takes its tasks as an argument")
        cfg = build_config(None, recipe, settings=settings)
        if not isinstance(cfg, EvalConfig):
            raise ConfigError("a solver solves grid tasks; evaluate text tasks with Solver.evaluate")
        return replace(cfg, model=self.name)

    def solve_many(self, tasks: Sequence[Task | Mapping[str, Any] | str | Path], *,
                   recipe: str | EvalConfig = "default", max_seconds: float | Literal["auto"] | None = "auto",
                   spent: float = 0.0, say: Callable[[str], None] | None = None, show_progress: bool = True,
                   **settings: Any) -> list[Solution]:
        """Solve tasks together: their adapters train in one batch and their views decode together, in the groups a
        run makes (`max_group` tasks at most). One Solution per task, in order; a task that cannot run has an
        `error` and no candidates. The same task given twice is solved once; two tasks of one id must be equal."""
        cfg = self.config(recipe, **settings)
        items = [as_task(t) for t in tasks]
        if not items:
            return []
        distinct: dict[str, Task] = {}
        for t in items:
            if distinct.setdefault(t.id, t) != t:
                raise TaskError(f"two different tasks have the id {t.id!r}; give each its own")
        with self._lock:
            solved = grid.solve_tasks(list(distinct.values()), cfg, self.model, self.codec,
                                      max_seconds=_max_seconds(max_seconds, self.device), spent=spent, say=say,
                                      speed=self.speed, show_progress=show_progress)
            self.speed = solved.speed
        records = {r["task_id"]: r for r in solved.records}
        return [Solution(t, records[t.id], solved.candidates.get(t.id, [])) for t in items]

    def evaluate(self, tasks: str | Path = "arc1/eval", out: str | Path | None = None, *,
                 recipe: str | EvalConfig | TextEvalConfig = "default", strict: bool = False,
                 max_minutes: float | None = None, max_seconds: float | Literal["auto"] | None = "auto",
                 show_progress: bool = True, say: Callable[[str], None] | None = None,
                 labels: Mapping[str, str] | None = None, **settings: Any) -> Run:
        """Solve a task set (a dataset name, task file, challenges file or folder; or a text tasks .jsonl file) into a
        run folder with this solver's model, as `testtime evaluate` does: one record per task as it finishes, a
        finished task skipped when run again, then summary.json, submission.json and report.html."""
        if "model" in settings or "device" in settings:
            raise ConfigError("a solver keeps its model and device; load another solver for another")
        cfg = build_config(str(tasks), recipe, settings=settings)
        with self._lock:
            return run_evaluation(replace(cfg, model=self.name), out, solver=self, strict=strict,
                                  max_minutes=max_minutes, max_seconds=max_seconds, show_progress=show_progress,
                                  say=say, labels=labels)


def load(model: str | Path | None = None, device: str | None = None, dtype=None) -> Solver:
    """A solver of a model folder (None: the shipped model, or $TESTTIME_MODEL) on `device` (None: cuda where there
    is one); any Hugging Face causal LM folder works (see `model.loading.load_model`)."""
    from testtime.core.distributed import pick_device

    loaded = load_model(model, device=pick_device(device), dtype=dtype)
    return Solver(loaded.model, loaded.codec, loaded.tokenizer, name=None if model is None else str(model))
