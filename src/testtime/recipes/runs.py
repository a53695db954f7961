"""The run pipeline, one for every kind of task: tasks -> groups -> records, resumable, sharded, merged.

A run folder holds one JSON line per task (`store`). Tasks run in groups: a group's adapters train together
and its predictions are generated together; each task's record is appended (and fsynced) as soon as its
group finishes, and a restarted run skips the tasks already recorded, so no finished work is lost.

Under `torchrun` the same call runs on every rank: the remaining tasks are sharded across ranks (balanced
by the kind's cost estimate), rank r appends to `results.rank{r}.jsonl`, and after a barrier rank 0 merges
every results file into `results.jsonl` (task order, one record per task, written atomically), then writes
`summary.json` and the kind's own outputs (report, submission). A restart, with any world size, reads all
the results files first, so only unfinished tasks run again.

A GPU out-of-memory error splits the group and retries, down to one task, then retries that task with a
smaller generation batch, and finally records it as failed (with the reason); the run goes on.

What differs between kinds of tasks (ARC grids, text few-shot tasks) is behind `TaskKind`: how a task is
encoded (`prepare`), trained on and predicted (`run_group`), scored (its records), and reported (`finish`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from testtime.core import distributed, store
from testtime.core.config import MINUTES, Range, check_value
from testtime.core.store import Record
from testtime.data.tasks import TaskError

# Tasks trained and predicted together, by kind: (on a GPU, on a CPU). On a GPU batching pays (5x for grid
# tasks, results/h100-2026-11-23c.md); on a CPU a group's results are written only when it ends and batching
# buys little.
GROUP_SIZES = {"grid": (64, 8), "text": (16, 4)}
TASKS = Range(1, 10**6)  # --limit
GROUP = Range(1, 4096)  # --max-group
OOM_RETRIES = 2  # retries of a single task, each with a 4x smaller generation token budget


class TaskKind(Protocol):
    """One kind of task, as the pipeline runs it. Records are JSON objects with at least `task_id`, `score`,
    `correct`, `seconds` and `error`."""

    name: str  # a key of GROUP_SIZES
    noun: str  # what the progress bar counts

    def cost(self, task: Any) -> int:
        """Estimated work of a task (for sharding across ranks)."""
        ...

    def load(self, device: str) -> Any:
        """Load the model (if not given) onto `device`; return it."""
        ...

    def before_tasks(self, tasks: Sequence[Any], out_dir: Path, pending: bool, show_progress: bool = True) -> None:
        """A stage over all the run's tasks before any of them runs (the grid kind's joint stage); `pending` says
        whether any task is left to run. Every rank calls it, with the same tasks."""
        ...

    def prepare(self, tasks: Sequence[Any]) -> tuple[list[Any], list[Record]]:
        """Encode tasks for training: those ready, and an error record for each that cannot run."""
        ...

    def groups(self, tasks: Sequence[Any], size: int) -> list[list[Any]]:
        """Groups of at most `size` tasks."""
        ...

    def run_group(self, group: list[Any], token_budget: int | None = None) -> list[Record]:
        """Train (as configured), predict and score a group; `token_budget` overrides the generation budget."""
        ...

    def token_budget(self) -> int:
        """The generation token budget an out-of-memory retry shrinks from."""
        ...

    def error_record(self, task: Any, error: str) -> Record: ...

    def recover(self) -> None:
        """Drop what a failed (out of memory) group left behind."""
        ...

    def close(self) -> None:
        """Detach the adapters (the model is the caller's again)."""
        ...

    def postfix(self, records: Sequence[Record]) -> dict[str, str]:
        """The running score the progress bar shows."""
        ...

    def summarize(self, records: Sequence[Record]) -> dict[str, Any]: ...

    def finish(self, out_dir: Path, records: Sequence[Record], tasks: Sequence[Any], all_tasks: Sequence[Any]) -> None:
        """The kind's own outputs of a finished run (report, submission)."""
        ...


def group_size(requested: int | None, device, kind: str) -> int:
    """Tasks a group: as requested, else by device and kind (see GROUP_SIZES)."""
    import torch

    gpu, cpu = GROUP_SIZES[kind]
    return requested or (gpu if torch.device(device).type == "cuda" else cpu)


def check_run_dir(out_dir: Path, cfg_dict: dict[str, Any]) -> Path:
    """The run's config.json path; a folder holding a run of another config (but for --limit) is refused."""
    cfg_path = out_dir / store.CONFIG
    cfg_dict = json.loads(json.dumps(cfg_dict))  # as it reads back (tuples become lists)
    old = store.read_config(out_dir)
    if old is not None:
        if {k: v for k, v in old.items() if k != "limit"} != {k: v for k, v in cfg_dict.items() if k != "limit"}:
            raise TaskError(f"{out_dir}: holds a run with another configuration; pick a new --out")
    return cfg_path


class AdapterSlots:
    """What a task kind holding a LoRA bank across groups (`self.lora`) does after a failure and at the end."""

    lora: Any = None

    def recover(self) -> None:
        recover(self.lora)

    def close(self) -> None:
        if self.lora is not None:
            self.lora.detach()
            self.lora = None


def recover(lora) -> None:
    """Drop what a failed (out of memory) group left behind: stale gradients, the adapter index, cached blocks."""
    import torch

    if lora is not None:
        for p in lora.parameters():
            p.grad = None
        lora.use(None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_group_safely(kind: TaskKind, group: list[Any], emit: Callable[[list[Record]], None]) -> None:
    """Run a group; on out-of-memory split it in halves (down to one task), then shrink the generation batch,
    then record the task as failed. Records go to `emit` as each piece finishes."""
    import torch

    try:
        emit(kind.run_group(group))
        return
    except torch.OutOfMemoryError:
        pass  # retry outside the handler, so the traceback's frames (and their tensors) are freed first
    kind.recover()
    if len(group) > 1:
        half = len(group) // 2
        run_group_safely(kind, group[:half], emit)
        run_group_safely(kind, group[half:], emit)
        return
    budget = kind.token_budget()
    for _ in range(OOM_RETRIES):
        budget = max(1, budget // 4)
        try:
            emit(kind.run_group(group, token_budget=budget))
            return
        except torch.OutOfMemoryError:
            pass
        kind.recover()
    emit([kind.error_record(group[0], f"out of GPU memory (alone, and with a generation token budget down to {budget})")])


def run_groups(kind: TaskKind, tasks: Sequence[Any], size: int, emit: Callable[[list[Record]], None], *,
               stop: Callable[[], bool] | None = None) -> None:
    """The loop of every run: `tasks` prepared (one that cannot run is emitted at once, as an error record), in the
    kind's groups of at most `size`, each run safely (`run_group_safely`); `emit` hears the records of each piece as
    it ends. `stop()`, asked before each group, ends the loop early."""
    ready, bad = kind.prepare(tasks)
    if bad:
        emit(bad)
    for group in kind.groups(ready, size):
        if stop is not None and stop():
            return
        run_group_safely(kind, group, emit)


def solve(kind: TaskKind, tasks: Sequence[Any], size: int) -> list[Record]:
    """`tasks` through the loop of a run (`run_groups`) on the model the kind holds, without a run folder; the
    records, in the order of `tasks` (whose ids must be distinct). What a caller that keeps a model loaded runs for
    a batch of tasks."""
    got: dict[str, Record] = {}
    try:
        run_groups(kind, tasks, size, lambda records: got.update((r["task_id"], r) for r in records))
    finally:
        kind.close()
    return [got[t.id] for t in tasks]


def labelled(labels: Mapping[str, str]) -> Callable[[Record], None]:
    """What `run(annotate=...)` takes to write each task's label (`labels`: task id -> label) into its record."""

    def annotate(record: Record) -> None:
        if record["task_id"] in labels:
            record["label"] = labels[record["task_id"]]

    return annotate


def run(kind: TaskKind, cfg: dict[str, Any], tasks: Sequence[Any], out_dir: str | Path, *, device: str | None,
        limit: int | None = None, max_group: int | None = None, max_minutes: float | None = None,
        skipped: Sequence[str] = (), show_progress: bool = True,
        annotate: Callable[[Record], None] | None = None) -> list[Record]:
    """Run (or resume) `tasks` (the first `limit`) into `out_dir`; with `max_minutes`, start no group after that
    time. `cfg` is the run's config as written to config.json; `skipped` lists task files left out as
    invalid, for summary.json. `annotate` edits each record before it is written, after the kind made it (what the
    kind must not see goes in there: `labelled`). Returns the records of the tasks run (under torchrun: merged on
    rank 0, this rank's own on the others)."""
    started = time.monotonic()
    check_value("max_minutes", max_minutes, MINUTES)
    dist = distributed.init()
    device = distributed.device(dist, device)  # a bad device fails here, before the run folder is touched
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = check_run_dir(out_dir, cfg)
    all_tasks = list(tasks)
    tasks = all_tasks[:limit] if limit else all_tasks
    own_path = store.own_results(out_dir, dist.rank if dist.enabled else None)
    store.drop_cut_tail(own_path)
    done = store.finished_ids(out_dir)
    distributed.barrier(dist)  # every rank has read what is done before any rank writes
    if dist.is_main:
        store.write_atomic(cfg_path, json.dumps(cfg, indent=1))
    todo = [t for t in tasks if t.id not in done]
    n_todo = len(todo)
    if dist.enabled:
        todo = distributed.shard(todo, dist.world, dist.rank, cost=kind.cost)

    model = kind.load(device)
    kind.before_tasks(tasks, out_dir, pending=n_todo > 0, show_progress=show_progress)
    mine: list[Record] = []
    if dist.enabled:  # one bar per rank, over its own shard
        total, initial, desc = len(todo), 0, f"{kind.noun} (rank {dist.rank}/{dist.world})"
    else:
        total, initial, desc = len(tasks), len(tasks) - n_todo, kind.noun
    bar = tqdm(total=total, initial=initial, desc=desc, disable=not show_progress, unit="task")

    def emit(records: list[Record]) -> None:
        if annotate is not None:
            for r in records:
                annotate(r)
        store.append_records(own_path, records)
        mine.extend(records)
        bar.update(len(records))
        post = kind.postfix(mine)
        if post:
            bar.set_postfix(**post)

    def stop() -> bool:
        late = max_minutes is not None and time.monotonic() - started > 60 * max_minutes
        if late:
            bar.write(f"stopping after {max_minutes} minutes; run the same command again to resume")
        return late

    try:
        run_groups(kind, todo, group_size(max_group, next(model.parameters()).device, kind.name), emit, stop=stop)
    finally:
        bar.close()
        kind.close()
    distributed.barrier(dist)  # every rank's file is complete
    if not dist.is_main:
        distributed.cleanup(dist)
        return mine
    records = store.merge_results(out_dir, [t.id for t in tasks])
    finish(kind, out_dir, records, tasks, all_tasks, skipped=skipped, world=dist.world)
    distributed.cleanup(dist)
    return records


def finish(kind: TaskKind, out_dir: Path, records: Sequence[Record], tasks: Sequence[Any], all_tasks: Sequence[Any],
           *, skipped: Sequence[str] = (), world: int = 1) -> None:
    """The run's `summary.json` (totals, failed tasks, skipped task files), then the kind's own outputs."""
    done = {r["task_id"] for r in records}
    summary = {
        **kind.summarize(records),
        "complete": all(t.id in done for t in tasks),
        "missing": [t.id for t in tasks if t.id not in done],
        "failed": {r["task_id"]: r["error"] for r in records if r.get("error")},
        "skipped_files": list(skipped),
        "world_size": world,
    }
    store.write_atomic(out_dir / store.SUMMARY, json.dumps(summary, indent=1))
    kind.finish(out_dir, records, tasks, all_tasks)
