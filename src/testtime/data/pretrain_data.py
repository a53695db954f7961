"""Pretraining data pipeline: sources -> encoded sequences -> batches -> a prefetch thread.

    SequenceSampler (seeded stream of encoded samples) -> BatchStream (pools sorted by length, cut to a token
    budget, each sequence padded) or PackedStream (pools packed into rows of one length, each row several
    documents) -> Prefetcher (batches built ahead on a thread)

Every stage has `state_dict`/`load_state_dict`, so a resumed run continues the exact stream it left. For a model
with a per-task embedding the sampler also tags each sequence with its task's row (`TaskSequence`), and batches
carry it per token (`Batch.task_index`: a packed row holds several tasks).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from testtime.data.encode import PAD, Codec, Encoded, GridCodec, TooLongError, encode_example
from testtime.data.sources import Source
from testtime.data.tasks import Task

PAD_DOCUMENT = -1  # the document index of a row's padding
NO_TASK = -1  # the task row of padding, and of a task the embedding has no row for (it gets the table's mean)


@dataclass(frozen=True)
class TaskSequence(Encoded):
    """An encoded sequence with the row of its task in a per-task embedding."""

    task: int = NO_TASK


def round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def validation_set(tasks: Sequence[Task], max_len: int, pad_multiple: int, codec: Codec | None = None) -> list[Batch]:
    """Each held-out task as evaluation poses it: its demos in context, each test output the only target."""
    codec = codec or GridCodec()
    seqs = []
    for t in tasks:
        for q in t.test:
            try:
                seqs.append(encode_example(codec, list(t.train), q, max_len=max_len, loss_on_demos=False))
            except TooLongError:
                continue
    return _answer_batches(seqs, pad_multiple, codec.pad_id)


def answer_draws(source: Source, n: int, max_len: int, codec: Codec, seed: int) -> list[tuple[Encoded, str]]:
    """n draws of a source as pretraining draws them (its demos, a query, an augmentation), each encoded with its
    answer the only target, with its task id; a draw over max_len is drawn again (20n draws at most)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[Encoded, str]] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        demos, query, task_id = source.sample(rng)
        try:
            out.append((encode_example(codec, demos, query, max_len=max_len, loss_on_demos=False), task_id))
        except TooLongError:
            continue
    return out


def probe_set(source: Source, n: int, max_len: int, pad_multiple: int, codec: Codec, seed: int) -> list[Batch]:
    """n draws of a training source (`answer_draws`), posed as `validation_set` poses a held-out task: the loss on
    their answers says how far the model has fit that source. Beside the held-out loss it tells a source the model
    still learns from from one it has memorized."""
    seqs = [seq for seq, _ in answer_draws(source, n, max_len, codec, seed)]
    return _answer_batches(seqs, pad_multiple, codec.pad_id)


def source_probes(names: Sequence[str], sources: Sequence[Source], n: int, max_len: int, pad_multiple: int,
                  codec: Codec, seed: int, suffix: str = "") -> dict[str, list[Batch]]:
    """`probe_set` of each source, by its name in logs (+ `suffix`): "re-arc" or "gen" for a path's, the dataset's
    name otherwise (the whole name where two datasets share the short one: "gen:a.npz", "gen:b.npz"; source0,
    source1, ... for sources given without names). Their draws are their own (seeded apart from the training
    stream, which they leave untouched). A source none of whose draws fits max_len is left out: its loss would
    read 0."""
    if n == 0:
        return {}
    if len(names) == len(sources):
        short = [d.split(":", 1)[0] for d in names]
        labels = [s if short.count(s) == 1 else d for s, d in zip(short, names, strict=True)]
    else:
        labels = [f"source{i}" for i in range(len(sources))]
    probes = {label + suffix: probe_set(src, n, max_len, pad_multiple, codec, seed + 7919)
              for label, src in zip(labels, sources, strict=True)}
    return {label: batches for label, batches in probes.items() if batches}  # none fits max_len: nothing to say


def _answer_batches(seqs: list[Encoded], pad_multiple: int, pad_id: int) -> list[Batch]:
    seqs = sorted(seqs, key=len)
    return [collate(seqs[i: i + 8], pad_multiple, pad_id) for i in range(0, len(seqs), 8)]


class SequenceSampler:
    """An infinite, seeded stream of encoded training sequences; `state_dict` allows an exact resume."""

    def __init__(self, sources: Sequence[Source], max_len: int, seed: int = 0, weights: Sequence[float] | None = None,
                 codec: Codec | None = None, task_rows: Mapping[str, int] | None = None, task_dropout: float = 0.0):
        """`task_rows`: each task id's row in a per-task embedding; given, every sequence is a `TaskSequence`, tagged
        as of no known task (NO_TASK) with probability `task_dropout`."""
        self.sources = list(sources)
        self.task_rows, self.task_dropout = task_rows, task_dropout
        self.codec = codec or GridCodec()
        self.max_len = max_len
        w = np.asarray(weights if weights is not None else [len(s.task_ids()) for s in self.sources], dtype=float)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def task_ids(self) -> list[str]:
        return [i for s in self.sources for i in s.task_ids()]

    def next(self) -> tuple[Encoded, str]:
        for _ in range(100):
            src = (
                self.sources[int(self.rng.choice(len(self.sources), p=self.weights))]
                if len(self.sources) > 1
                else self.sources[0]
            )
            demos, query, task_id = src.sample(self.rng)
            try:
                enc = encode_example(self.codec, demos, query, max_len=self.max_len, loss_on_demos=True)
            except TooLongError:
                continue
            self.count += 1
            if self.task_rows is not None:
                dropped = self.task_dropout > 0 and self.rng.random() < self.task_dropout
                enc = TaskSequence(**{f.name: getattr(enc, f.name) for f in fields(enc)},
                                   task=NO_TASK if dropped else self.task_rows.get(task_id, NO_TASK))
            return enc, task_id
        raise ValueError(f"no sample fits max_len {self.max_len} after 100 tries")

    def __iter__(self) -> Iterator[tuple[Encoded, str]]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.count = int(state["count"])


@dataclass
class Batch:
    input_ids: Any  # LongTensor [B, T], right-padded with PAD
    labels: Any  # LongTensor [B, T]: next token where it is a target, else -100
    n_real: int  # non-pad tokens
    n_targets: int
    n_padded: int  # B * T
    # Sum over sequences of their squared lengths: what causal attention over them costs (MFU's attention term)
    n_attended: int = 0
    doc_ids: Any = None  # IntTensor [B, T] of packed rows: each token's document within its row (padding: -1)
    # LongTensor [B, T]: each token's task row in a per-task embedding (padding: NO_TASK); None without one
    task_index: Any = None


def token_tasks(rows: Sequence[Sequence[Encoded]], width: int) -> Any:
    """Each token's task row (`TaskSequence.task`), documents laid end to end in each row; None where no sequence
    carries one."""
    import torch

    if not any(isinstance(s, TaskSequence) for row in rows for s in row):
        return None
    out = np.full((len(rows), width), NO_TASK, dtype=np.int64)
    for b, row in enumerate(rows):
        at = 0
        for s in row:
            out[b, at: at + len(s)] = getattr(s, "task", NO_TASK)
            at += len(s)
    return torch.from_numpy(out)


def collate(seqs: Sequence[Encoded], pad_multiple: int, pad_id: int = PAD) -> Batch:
    """Each sequence a row of its own, right-padded to the longest rounded up to `pad_multiple`: `pack` with one
    document a row, and no document ids (each row's causal mask is already its document's)."""
    width = round_up(max(len(s) for s in seqs), pad_multiple)
    return replace(pack([[s] for s in seqs], width, pad_id), doc_ids=None)


def pack(rows: Sequence[Sequence[Encoded]], row_len: int, pad_id: int = PAD) -> Batch:
    """Rows of documents laid end to end, each row padded to `row_len`: the tokens and targets of every document
    exactly as `collate` gives them alone (a document's last token has no target: the next one is another's)."""
    import torch

    ids = np.full((len(rows), row_len), pad_id, dtype=np.int64)
    labels = np.full((len(rows), row_len), -100, dtype=np.int64)
    docs = np.full((len(rows), row_len), PAD_DOCUMENT, dtype=np.int32)
    for b, row in enumerate(rows):
        at = 0
        for d, s in enumerate(row):
            n = len(s)
            if at + n > row_len:
                raise ValueError(f"documents of {sum(len(x) for x in row)} tokens do not fit a row of {row_len}")
            ids[b, at: at + n] = s.input_ids
            labels[b, at: at + n - 1] = np.where(s.loss_mask[1:], s.input_ids[1:], -100)
            docs[b, at: at + n] = d
            at += n
    seqs = [s for row in rows for s in row]
    return Batch(
        torch.from_numpy(ids),
        torch.from_numpy(labels),
        int(sum(len(s) for s in seqs)),
        int((labels != -100).sum()),
        ids.size,
        int(sum(len(s) ** 2 for s in seqs)),
        torch.from_numpy(docs),
        token_tasks(rows, row_len),
    )


def first_fit(seqs: Sequence[Encoded], row_len: int) -> list[list[Encoded]]:
    """Rows of at most `row_len` tokens: longest first, each into the first row with room (first-fit decreasing
    leaves about as little room as any packing does, at this many short items)."""
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for s in sorted(seqs, key=len, reverse=True):
        n = len(s)
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(s)
                room[r] -= n
                break
        else:
            rows.append([s])
            room.append(row_len - n)
    return rows


class BatchStream:
    """Length-bucketed batches: draw a pool, sort by length, cut to the token budget, shuffle the batches.

    State = sampler state at the start of the current pool + batches taken from it, so a restore rebuilds
    the pool and skips what was already used: the stream continues exactly.
    """

    def __init__(self, sampler: SequenceSampler, token_budget: int, pool_size: int, pad_multiple: int):
        self.sampler = sampler
        self.token_budget = token_budget
        self.pool_size = pool_size
        self.pad_multiple = pad_multiple
        self.pool_start = sampler.state_dict()
        self.pools = 0
        self.taken = 0
        self._batches: list[list[Encoded]] = []

    def _fill(self) -> None:
        """Draw a pool, group it into batches (`_group`), shuffle them."""
        self.pool_start = self.sampler.state_dict()
        batches = self._group([self.sampler.next()[0] for _ in range(self.pool_size)])
        order = self.sampler.rng.permutation(len(batches))
        self._batches = [batches[i] for i in order]
        self.pools += 1
        self.taken = 0

    def _group(self, pool: list[Encoded]) -> list[list[Encoded]]:
        """Length buckets: longest first, each batch as many sequences as fit the budget padded to its first."""
        batches: list[list[Encoded]] = []
        cur: list[Encoded] = []
        for s in sorted(pool, key=len, reverse=True):
            if cur and (len(cur) + 1) * round_up(len(cur[0]), self.pad_multiple) > self.token_budget:
                batches.append(cur)
                cur = []
            cur.append(s)
        # The last batch holds the shortest leftovers; a tiny step is noise and wasted launches, so skip it.
        if not batches or len(cur) * round_up(len(cur[0]), self.pad_multiple) >= self.token_budget // 4:
            batches.append(cur)
        return batches

    def _collate(self, batch: list[Encoded]) -> Batch:
        return collate(batch, self.pad_multiple, self.sampler.codec.pad_id)

    def next(self) -> Batch:
        if self.taken >= len(self._batches):
            self._fill()
        batch = self._batches[self.taken]
        self.taken += 1
        return self._collate(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"pool_start": self.pool_start, "pools": self.pools, "taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["pool_start"])
        if state["pools"] == 0:
            self._batches, self.pools, self.taken = [], 0, 0
            return
        self._fill()  # rebuilds the same pool from the same sampler state
        self.pools = int(state["pools"])
        self.taken = int(state["taken"])


class PackedStream(BatchStream):
    """Batches of `token_budget // row_len` rows of `row_len` tokens, each row several whole sequences: draw a pool,
    pack it first-fit, shuffle the batches. Every batch has one shape (one compiled graph for the run); its
    `doc_ids` tell attention where each sequence starts (`testtime.model.attention.document_mask`).

    Resumes exactly as `BatchStream` does (the pool is rebuilt from the sampler state at its start). A pool's
    last batch, short of rows, is filled with empty rows when at least half full, else left out.
    """

    def __init__(self, sampler: SequenceSampler, token_budget: int, pool_size: int, row_len: int):
        if row_len > token_budget:
            raise ValueError(f"a row of {row_len} tokens exceeds the token budget {token_budget}")
        super().__init__(sampler, token_budget, pool_size, pad_multiple=row_len)
        self.row_len = row_len
        self.rows = token_budget // row_len

    def _group(self, pool: list[Encoded]) -> list[list[list[Encoded]]]:
        """Rows packed first-fit, `self.rows` of them a batch."""
        rows = first_fit(pool, self.row_len)
        batches = [rows[i: i + self.rows] for i in range(0, len(rows), self.rows)]
        if len(batches) > 1 and 2 * len(batches[-1]) < self.rows:
            batches.pop()
        return batches

    def _collate(self, batch: list[list[Encoded]]) -> Batch:
        return pack(list(batch) + [[]] * (self.rows - len(batch)), self.row_len, self.sampler.codec.pad_id)


def batch_stream(sampler: SequenceSampler, cfg: Any) -> BatchStream:
    """The stream a pretraining config (`PretrainConfig`: packing, token_budget, pool_size, max_len, pad_multiple)
    draws its batches from: packed rows of max_len tokens, or sequences padded to their length bucket."""
    if cfg.packing:
        return PackedStream(sampler, cfg.token_budget, cfg.pool_size, round_up(cfg.max_len, cfg.pad_multiple))
    return BatchStream(sampler, cfg.token_budget, cfg.pool_size, cfg.pad_multiple)


class Prefetcher:
    """Builds batches ahead on a thread (pinned for fast copies); each comes with the stream state after it.
    `waited` sums the seconds `get` waited for a batch: the training loop's time starved of data."""

    def __init__(self, stream: BatchStream, depth: int, pin: bool):
        self.stream, self.pin = stream, pin
        self.waited = 0.0
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="batch-prefetch")
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self.stream.next()
                if self.pin:
                    batch.input_ids, batch.labels = batch.input_ids.pin_memory(), batch.labels.pin_memory()
                    if batch.doc_ids is not None:
                        batch.doc_ids = batch.doc_ids.pin_memory()
                    if batch.task_index is not None:
                        batch.task_index = batch.task_index.pin_memory()
                item = (batch, self.stream.state_dict())
                while not self.stop.is_set():
                    try:
                        self.q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surface data errors in the training thread
            self.q.put((e, None))

    def get(self) -> tuple[Batch, dict[str, Any]]:
        start = time.perf_counter()
        batch, state = self.q.get()
        self.waited += time.perf_counter() - start
        if isinstance(batch, BaseException):
            raise batch
        return batch, state

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
