"""A corpus of generated tasks for pretraining (issue 30, item 4): many programs of grid primitives
(`gen_programs.generate_task`), a few dozen pairs each, filtered, then written in RE-ARC's format so pretraining
draws from it as it draws from RE-ARC (`"gen:PATH"` in a config's `datasets`).

    testtime generate --out runs/gen/gen.npz --tasks 20000 --pairs 24 --seed 0

Why: the shipped base model memorizes RE-ARC's 400 generators (over v4's stretch, training loss 0.075 -> 0.028 while
the loss on 40 held-out training tasks rose 0.135 -> 0.197). New programs are new concepts to generalize over.

What is kept is filtered, not just added in volume:
- `generate_task`'s own filters (valid grids, no output equal to its input, outputs not all alike, no no-op step);
- at most `per_name` tasks per program description, so the cheap one-step programs cannot crowd out the rest;
- no two tasks with the same pairs;
- no task with a grid that pretraining's augmentation (a rotation/flip, colors 1-9 renamed) could turn into an
  evaluation test output, ARC-AGI-1's or ARC-AGI-2's (`eval_output_color_leaks`: stricter than the check every pretraining source
  passes when it loads, and done here so that a chance coincidence drops one task instead of refusing the file).

Task i is drawn from its own random stream (seed, i), so the corpus is the same for a seed whatever the workers.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from testtime.core.config import SEED, ConfigError, Range, check
from testtime.data.gen_programs import GenTask
from testtime.data.sources import eval_output_color_leaks, read_rearc

MAX_AUTO_WORKERS = 16
MAX_TRIES = 20  # draws a task index gets before it is left empty (generate_task returns None on a failed draw)


@dataclass(frozen=True)
class CorpusConfig:
    tasks: Annotated[int, Range(1, 10**7)] = 20_000
    # pairs a task keeps: pretraining draws 2-5 demos and a query from them, so a task is seen in many arrangements
    pairs: Annotated[int, Range(3, 10_000)] = 24
    seed: Annotated[int, SEED] = 0
    per_name: Annotated[int, Range(1, 10**7)] = 8
    workers: Annotated[int, Range(0, 1024)] = 0  # 0: one per CPU core, at most MAX_AUTO_WORKERS

    def __post_init__(self) -> None:
        check(self, "generate")


@dataclass
class CorpusReport:
    path: Path
    tasks: int
    pairs: int
    drawn: int  # task indices drawn (some left empty after MAX_TRIES failed draws)
    dropped: Counter = field(default_factory=Counter)  # why tasks were left out
    names: int = 0  # distinct program descriptions kept

    def line(self) -> str:
        why = ", ".join(f"{n} {k}" for k, n in self.dropped.most_common()) or "none"
        return (f"wrote {self.path}: {self.tasks} tasks ({self.names} distinct programs), {self.pairs} pairs; "
                f"of {self.drawn} drawn, left out: {why}")


def draw(seed: int, index: int, pairs: int) -> GenTask | None:
    """Task `index` of the corpus: the first of MAX_TRIES draws from its own stream that passes the generator's
    filters, or None."""
    from testtime.data import gen_programs  # looked up at call time: tests replace generate_task

    rng = np.random.default_rng([seed, index])
    for _ in range(MAX_TRIES):
        task = gen_programs.generate_task(rng, pairs)
        if task is not None:
            return task
    return None


def _draw_args(args: tuple[int, int, int]) -> GenTask | None:
    return draw(*args)


def _drawn(cfg: CorpusConfig, count: int) -> Iterator[GenTask | None]:
    """Tasks for indices 0..count-1, in order (a pool of processes draws them when workers != 1)."""
    args = [(cfg.seed, i, cfg.pairs) for i in range(count)]
    # Each worker imports the package (torch with it: about 0.4 GB and 4 s), so not one per core of a large host.
    workers = cfg.workers or min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    if workers == 1:
        yield from map(_draw_args, args)
        return
    import multiprocessing as mp

    # spawn: no torch state forked from a parent; Ctrl-C reaches the parent alone, which closes the pool.
    with mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint) as pool:
        yield from pool.imap(_draw_args, args, chunksize=64)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pairs_digest(task: GenTask) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for e in task.pairs:
        for g in (e.input, e.output):
            h.update(np.asarray(g.shape, np.int64).tobytes())
            h.update(np.ascontiguousarray(g, dtype=np.uint8).tobytes())
    return h.digest()


def generate_corpus(cfg: CorpusConfig, out: str | Path, progress: bool = True) -> CorpusReport:
    """Draw tasks until `cfg.tasks` are kept (or 4x as many were drawn), filter them, and write `out` (.npz) in
    RE-ARC's format with a `names` array beside it: the program description of each task."""
    out = writable(out)
    from tqdm import tqdm

    report = CorpusReport(out, 0, 0, 0)
    per_name: Counter = Counter()
    seen: set[bytes] = set()
    kept: list[GenTask] = []
    bar = tqdm(total=cfg.tasks, desc="generate", unit="task", disable=not progress)
    for task in _drawn(cfg, 4 * cfg.tasks):
        report.drawn += 1
        if task is None:
            report.dropped["failed draws"] += 1
        elif per_name[task.name] >= cfg.per_name:
            report.dropped[f"over {cfg.per_name} a program"] += 1
        elif (digest := _pairs_digest(task)) in seen:
            report.dropped["duplicates"] += 1
        elif eval_output_color_leaks((task.name, g) for e in task.pairs for g in (e.input, e.output)):
            report.dropped["equal to an evaluation output up to colors"] += 1
        else:
            seen.add(digest)
            per_name[task.name] += 1
            kept.append(task)
            bar.update(1)
            if len(kept) == cfg.tasks:
                break
    bar.close()
    if not kept:
        raise ConfigError(f"{out}: no generated task passed the filters in {report.drawn} draws")
    write_corpus(kept, out, cfg)
    report.tasks, report.pairs, report.names = len(kept), sum(len(t.pairs) for t in kept), len(per_name)
    return report


def writable(out: str | Path) -> Path:
    """`out` when the corpus can be written there, checked before minutes of drawing; else a one-line ConfigError."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"{out}: the corpus is written as .npz (RE-ARC's arrays, not xz-compressed)")
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; name the corpus file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot make its folder ({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"{out}: its folder is not writable")
    return out


def write_corpus(tasks: list[GenTask], out: Path, cfg: CorpusConfig) -> None:
    """RE-ARC's arrays (see ../shared/data/re-arc/README.md) for `tasks`, written atomically; task i's id is
    `gen-<seed>-<i>` and its program description is names[i]."""
    grids = [g for t in tasks for e in t.pairs for g in (e.input, e.output)]
    shapes = np.array([g.shape for g in grids], dtype=np.uint8)
    cells = np.concatenate([np.asarray(g, dtype=np.uint8).ravel() for g in grids])
    pair_task = np.repeat(np.arange(len(tasks), dtype=np.uint32), [len(t.pairs) for t in tasks])
    buf = io.BytesIO()
    np.savez_compressed(buf, task_ids=np.array([f"gen-{cfg.seed}-{i}" for i in range(len(tasks))]),
                        names=np.array([t.name for t in tasks]), pair_task=pair_task, shapes=shapes, cells=cells,
                        config=np.array(repr({k: v for k, v in asdict(cfg).items() if k != "workers"})))
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp's 0600 is for the temporary file, not for the corpus
        read_rearc(tmp, "generated")  # what pretraining will read: never leave a file it cannot
        tmp.replace(out)
    except OSError as e:
        raise ConfigError(f"{out}: cannot write the corpus ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def program_names(path: str | Path) -> dict[str, str]:
    """Task id -> its program's description (`family|step>step`) in a corpus `testtime generate` wrote; empty for
    a file in RE-ARC's format without them."""
    with np.load(path, allow_pickle=False) as d:
        return dict(zip(d["task_ids"].tolist(), d["names"].tolist(), strict=True)) if "names" in d.files else {}


def corpus_tasks(path: str | Path, n: int, seed: int = 0, pairs: int = 4) -> list:
    """`n` tasks drawn from a corpus as `Task`s (the first `pairs` pairs, the last as the test), each named by its
    program: what the generator made, for a person to look at."""
    from testtime.data.tasks import Example, Task

    data = read_rearc(path, "generated")
    names = program_names(path)
    picks = np.random.default_rng(seed).choice(len(data.task_ids), size=min(n, len(data.task_ids)), replace=False)
    tasks = []
    for t in sorted(int(p) for p in picks):
        idx = np.flatnonzero(data.pair_task == t)[:pairs]
        ex = [Example(data.grid(2 * int(p)), data.grid(2 * int(p) + 1)) for p in idx]
        task_id = str(data.task_ids[t])
        tasks.append(Task(f"{task_id} ({names.get(task_id, task_id)})", tuple(ex[:-1]), tuple(ex[-1:])))
    return tasks


def gallery(path: str | Path, out: str | Path, n: int = 24, seed: int = 0) -> Path:
    """An HTML page of `n` tasks of the corpus at `path`, with their programs."""
    from testtime.data.render import html_page, task_section

    tasks = corpus_tasks(path, n, seed)
    out = Path(out)
    out.write_text(html_page(f"{len(tasks)} generated tasks from {Path(path).name}",
                             "\n".join(task_section(t) for t in tasks)))
    return out
