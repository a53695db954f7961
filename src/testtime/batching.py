"""Micro-batching over a warm solver: tasks that arrive together are solved together, each with its own answer.

    batcher = Batcher(solver, window=0.02, max_batch=64).start()
    future = batcher.submit(Job(task, cfg, key))     # from any thread; future.result() is an Answer
    batcher.close()                                   # waiting jobs refused (503), the running batch finished

One worker thread takes the first job waiting, gathers more for `window` seconds or until `max_batch`, and hands
them to one `Solver.solve_many` call: their adapters train together, each in its own slot of the batched bank, and
their views decode together. Jobs of another config (`key`), or of another task under the same id (an id seeds a
task's augmentations and adapter), wait for a batch of their own. A batch that raises is solved again one task at a
time, so a bad task fails only its own job; the worker never dies. A job whose future was cancelled (its client went
away) before its batch started is dropped. `testtime.serve` puts HTTP in front of it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from testtime.core.config import one_line
from testtime.data.tasks import Task

if TYPE_CHECKING:
    from testtime.api import EvalConfig, Solution, Solver

log = logging.getLogger("testtime.serve")


class ServiceError(Exception):
    """A request the service answers with an HTTP `status` and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, one_line(message)


@dataclass(eq=False)
class Job:
    """One request's task, waiting for (or in) a batch; `future` receives its `Answer`."""

    task: Task
    cfg: EvalConfig
    key: str  # requests of one key may share a batch: the same config
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class Answer:
    solution: Solution
    batch_size: int
    batch_seconds: float
    queued: float  # seconds from arrival to the start of its batch


class Batcher:
    """Gathers jobs into `solver.solve_many` batches in one worker thread (see the module's docstring).

    `max_seconds` is each task's time budget ("auto": 300 s on a CPU, none on a GPU). `sizes` counts the batches
    run by their size."""

    def __init__(self, solver: Solver, *, window: float = 0.02, max_batch: int = 8, max_queue: int = 1024,
                 max_seconds: float | Literal["auto"] | None = "auto") -> None:
        self.solver, self.window, self.max_batch, self.max_queue = solver, window, max_batch, max_queue
        self.max_seconds = max_seconds
        self.closing = threading.Event()
        self.sizes: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        self.running = 0
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._held: deque[Job] = deque()  # taken from the queue, waiting for a batch of their own settings
        self._thread = threading.Thread(target=self._loop, name="testtime-batcher", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def busy(self) -> bool:
        """Whether the worker thread still runs (a batch past the grace period)."""
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize() + len(self._held)

    def submit(self, job: Job) -> Future:
        if self.closing.is_set():
            raise ServiceError(503, "the service is shutting down")
        if self.waiting >= self.max_queue:
            raise ServiceError(503, f"{self.waiting} tasks are waiting, the most this service holds; try again later")
        self._jobs.put(job)
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Take no more jobs, answer those waiting 503, and wait up to `timeout` s for the batch running."""
        self.closing.set()
        self._thread.join(timeout)

    def _get(self, timeout: float) -> Job | None:
        try:
            return self._jobs.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def _next_batch(self) -> list[Job]:
        first = self._held.popleft() if self._held else self._get(0.1)
        if first is None:
            return []
        batch, ids = [first], {first.task.id: first.task}

        def joins(job: Job) -> bool:  # same settings, and no other task of its id (an id seeds a task's work)
            same = job.key == first.key and ids.setdefault(job.task.id, job.task) == job.task
            if same:
                batch.append(job)
            return same

        for job in list(self._held):
            if len(batch) < self.max_batch and joins(job):
                self._held.remove(job)
        deadline = time.perf_counter() + self.window
        while len(batch) < self.max_batch and not self.closing.is_set():
            job = self._get(deadline - time.perf_counter())
            if job is None:
                break
            if not joins(job):
                self._held.append(job)
        return batch

    def _loop(self) -> None:
        while not self.closing.is_set():
            try:
                batch = [j for j in self._next_batch() if j.future.set_running_or_notify_cancel()]
                if self.closing.is_set():
                    self._refuse(batch)
                elif batch:
                    self._run(batch)
            except Exception:  # never let the worker die: the service would hang
                log.exception("batcher: unexpected error")
        self._refuse(list(self._held) + self._drain())

    def _drain(self) -> list[Job]:
        out = []
        while (job := self._get(0)) is not None:
            out.append(job)
        return out

    def _refuse(self, jobs: list[Job]) -> None:
        for job in jobs:  # a job a disconnected client cancelled is skipped
            if job.future.running() or job.future.set_running_or_notify_cancel():
                job.future.set_exception(ServiceError(503, "the service is shutting down; the task was not started"))
        self._held.clear()

    def _run(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        self.running = len(batch)
        try:
            solutions = self.solver.solve_many([j.task for j in batch], recipe=batch[0].cfg,
                                               max_seconds=self.max_seconds, show_progress=False)
        except Exception as e:
            if len(batch) > 1:  # one bad task fails only its own request: each again alone
                log.warning("a batch of %d failed (%s: %s); solving each alone", len(batch), type(e).__name__, e)
                for job in batch:
                    self._run([job])
            else:
                batch[0].future.set_exception(e)
                self.counts["failed"] += 1
            return
        finally:
            self.running = 0
        took = time.perf_counter() - start
        self.sizes[len(batch)] += 1
        for job, sol in zip(batch, solutions, strict=True):
            job.future.set_result(Answer(sol, len(batch), took, start - job.arrived))
            self.counts["solved"] += 1

