"""Test-time training for text tasks, as in the paper's BIG-Bench Hard setting.

Each task's TTT data is `samples` sequences of its instruction plus all its demonstrations in
shuffled orders, with loss on every answer; no query is ever used. Adapters train as grid tasks'
do (`ttt.fresh_adapters`, `ttt.train_group`): one adapter per task, many tasks in one batch, or one adapter
shared by all tasks of a batch (the ablation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from testtime.data.encode import Encoded
from testtime.data.tasks import TaskError
from testtime.model.training import task_seed
from testtime.stages.ttt import TTTConfig
from testtime.text.encode import TextFormat
from testtime.text.tasks import TextTask


def text_ttt_config(**overrides) -> TTTConfig:
    """The paper's BBH recipe (40 shuffled sequences, 1 epoch, rank 64, lr 1e-4); ARC-only switches unused."""
    base = dict(samples=40, epochs=1, batch_size=2, lr=1e-4, rank=64, alpha=64.0, augment=False, max_len=8192)
    return TTTConfig(**{**base, **overrides})


def build_text_dataset(task: TextTask, fmt: TextFormat, cfg: TTTConfig) -> list[Encoded]:
    """`cfg.samples` sequences: the instruction and every demo, each sequence in its own random order."""
    if not task.demos:
        raise TaskError(f"task {task.id}: no demonstrations to train on")
    rng = np.random.default_rng(task_seed(cfg.seed, task.id))
    n = len(task.demos)
    out = []
    for k in range(cfg.samples):
        order = list(range(n)) if k == 0 else [int(i) for i in rng.permutation(n)]  # first: the task as given
        enc = fmt.encode(task.instruction, [task.demos[i] for i in order], max_len=cfg.max_len)
        # demos_used/dropped name the task's own demo indices, not positions in this order.
        out.append(
            dataclasses.replace(
                enc,
                demos_used=tuple(order[i] for i in enc.demos_used),
                dropped=tuple(sorted(order[i] for i in enc.dropped)),
            )
        )
    return out
