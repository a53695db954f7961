"""Test-time training for text tasks, as in the paper's BIG-Bench Hard setting.

A task's TTT data is `samples` sequences built from its demonstrations only (never a query), in one of three kinds:

- "shuffled" (the paper's BBH recipe): the instruction and every demo, each sequence in its own random order;
  loss on every answer, or with `loss_on_demos=False` on the last one only.
- "loo" (leave-one-out, as the grid kind builds its data): each demo in turn is the query, the others (in a
  random order) its context; loss on the held-out answer, and on the context's answers with `loss_on_demos`.
  With the demo loss it differs from "shuffled" only in who comes last: each demo is held out equally often.
- "pairs": each demo alone after the instruction, no context, as a prompt without demonstrations sees a query
  (the paper's fine-tuning without in-context examples).

Adapters train as grid tasks' do (`ttt.fresh_adapters`, `ttt.train_group`): one adapter per task (or per query),
many in one batch, or one adapter shared by all tasks of a batch (the ablation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from testtime.data.encode import Encoded, TooLongError
from testtime.data.tasks import TaskError
from testtime.model.training import task_seed
from testtime.stages.ttt import TTTConfig
from testtime.text.encode import TextFormat
from testtime.text.tasks import TextTask

TTT_DATA = ("shuffled", "loo", "pairs")


def text_ttt_config(**overrides) -> TTTConfig:
    """The paper's BBH recipe (40 shuffled sequences, 1 epoch, rank 64, lr 1e-4); ARC-only switches unused."""
    base = dict(samples=40, epochs=1, batch_size=2, lr=1e-4, rank=64, alpha=64.0, augment=False, max_len=8192)
    return TTTConfig(**{**base, **overrides})


def _named(enc: Encoded, order: list[int]) -> Encoded:
    """demos_used/dropped name the task's own demo indices, not positions in this sequence's order."""
    return dataclasses.replace(enc, demos_used=tuple(order[i] for i in enc.demos_used),
                               dropped=tuple(sorted(order[i] for i in enc.dropped)))


def build_text_dataset(task: TextTask, fmt: TextFormat, cfg: TTTConfig, kind: str = "shuffled",
                       key: str | None = None) -> list[Encoded]:
    """`cfg.samples` TTT sequences of `kind` (see the module's doc) from the task's demos, seeded by `key` (default
    the task's id; a per-query adapter passes its own, so its data is drawn apart from its task's)."""
    if kind not in TTT_DATA:
        raise ValueError(f"TTT data must be one of {', '.join(TTT_DATA)}, got {kind!r}")
    if not task.demos:
        raise TaskError(f"task {task.id}: no demonstrations to train on")
    rng = np.random.default_rng(task_seed(cfg.seed, key or task.id))
    n = len(task.demos)
    if kind == "shuffled":
        out = []
        for k in range(cfg.samples):
            order = list(range(n)) if k == 0 else [int(i) for i in rng.permutation(n)]  # first: the task as given
            demos = [task.demos[i] for i in order]
            if cfg.loss_on_demos or n == 1:
                enc = fmt.encode(task.instruction, demos, max_len=cfg.max_len)
            else:  # the loss on the last answer only: the last demo becomes the query
                enc = fmt.encode(task.instruction, demos[:-1], demos[-1][0], demos[-1][1], max_len=cfg.max_len,
                                 loss_on_demos=False)
            out.append(_named(enc, order))
        return out
    seen: set[bytes] = set()
    too_long: set[int] = set()
    out = []
    for _ in range(cfg.samples * 20):
        usable = [i for i in range(n) if i not in too_long]
        if len(out) >= cfg.samples or not usable or (kind == "pairs" and len(out) >= len(usable)):
            break
        q = usable[len(out) % len(usable)]  # each demo held out in turn, however many repeats were skipped
        x, y = task.demos[q]
        if kind == "pairs":
            context: list[int] = []
        else:
            context = [i for i in range(n) if i != q]
            if len(out) >= len(usable):  # the first pass keeps the task's order, so the task as given is learned
                context = [context[int(i)] for i in rng.permutation(len(context))]
        try:
            enc = fmt.encode(task.instruction, [task.demos[i] for i in context], x, y, max_len=cfg.max_len,
                             loss_on_demos=cfg.loss_on_demos)
        except TooLongError:
            too_long.add(q)
            continue
        if enc.input_ids.tobytes() in seen:  # few demos have few orders: repeats would only reweight them
            continue
        seen.add(enc.input_ids.tobytes())
        out.append(_named(enc, context))
    if not out:
        raise TooLongError(f"task {task.id}: no demonstration fits in {cfg.max_len} tokens")
    base = list(out)
    while len(out) < cfg.samples:
        out.append(base[len(out) % len(base)])
    return out
