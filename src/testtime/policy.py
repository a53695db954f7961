"""Adaptive test-time training: per task, answer now, train briefly, or train longer and sample more.

A policy is a small, named recipe of stages over a group of tasks, driven by cheap signals:

- `agreement`: the share of all augmented views (invalid decodes included) whose answer, mapped back,
  equals the top voted answer without TTT. Views that agree on a non-trivial grid rarely agree by chance.
- `loo`: the leave-one-out self-check. Each demonstration in turn becomes the query, the others the
  context, and the model (with or without the task's adapter) answers it greedily under the identity
  view; `loo` is the share solved exactly. Without an adapter it is a true held-out check. With one
  it measures fit: TTT trains on these very leave-one-out tasks (under augmentations), so a task whose
  adapter still fails its own demos has not been learned yet and is worth more steps.
- `ttt_loss`: the adapter's last training losses (recorded, for analysis and for future policies).

Stages, in order (each optional per policy):
1. ICL: predict every task without TTT (`icl_first`); optionally the base LOO check (`loo_gate`).
   A task whose top answer holds at least `answer_at` of the views (and, with `loo_gate`, whose base
   model solves every held-out demo) is answered now.
2. TTT in `rounds` (fractions of the configured schedule): after each round but the last, with
   `loo_stop`, a task whose adapter solves all its held-out demos stops training and is predicted.
3. The tasks trained to the last round are predicted with `more_orders` times the demo orders per view
   (sample more: they are the hard ones).
4. With `pick_by_loo`, a task that has both answers keeps the ICL one when the base model's LOO score
   beats the adapter's (TTT can unlearn a task the base model already had).

All policies spend the same per-step compute; they differ in how many steps and views each task gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from testtime.config import ConfigError
from testtime.tasks import Example, Task, grids_equal


@dataclass(frozen=True)
class Policy:
    name: str
    summary: str
    icl_first: bool = False
    answer_at: float | None = None  # agreement at or above which a task is answered without TTT
    loo_gate: bool = False  # answering now also needs the base model to solve every held-out demo
    rounds: tuple[float, ...] = (1.0,)  # TTT rounds, as fractions of the configured steps; () = no TTT
    loo_stop: bool = False  # between rounds, stop training tasks whose adapter solves all held-out demos
    more_orders: int = 1  # demo orders per view, times the configured ones, for tasks trained to the end
    pick_by_loo: bool = False

    def __post_init__(self) -> None:
        if (self.answer_at is not None or self.pick_by_loo) and not self.icl_first:
            raise ConfigError(f"policy {self.name}: answering early or picking by LOO needs icl_first")
        if self.loo_gate and self.answer_at is None:
            raise ConfigError(f"policy {self.name}: loo_gate only gates answer_at")
        if any(f <= 0 for f in self.rounds) or self.more_orders < 1:
            raise ConfigError(f"policy {self.name}: rounds must be positive and more_orders at least 1")

    @property
    def ttt(self) -> bool:
        return bool(self.rounds)

    @property
    def needs_base_loo(self) -> bool:
        return self.loo_gate or self.pick_by_loo


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("never", "no TTT: augmented in-context inference only", icl_first=True, rounds=()),
        Policy("always", "TTT on every task with the configured schedule (the paper's recipe)"),
        Policy("extended", "TTT on every task for 1.5x the configured steps, predicted with twice the demo orders",
               rounds=(1.5,), more_orders=2),
        Policy("agree", "ICL first; TTT only where fewer than half the views agree",
               icl_first=True, answer_at=0.5),
        Policy("loo-stop", "TTT in two halves; stop after the first where the adapter solves its held-out demos",
               rounds=(0.5, 0.5), loo_stop=True),
        Policy("adaptive", "ICL first; answer where views agree and the base model solves its held-out demos; "
               "else a brief TTT round, a longer one (with twice the demo orders) where demos still fail; "
               "keep the ICL answer where the base model did better on held-out demos",
               icl_first=True, answer_at=0.5, loo_gate=True, rounds=(0.5, 1.0), loo_stop=True, more_orders=2,
               pick_by_loo=True),
    )
}

# The policy that measured best: on all 400 ARC-AGI-1 evaluation tasks on one H100, extended scored 27.5 in
# 0.52 s/task (results/h100-2026-11-23c.md), adaptive 25.5 in 0.84 s/task, always 20 in 0.35 s/task, loo-stop
# 21.5, agree 19, never 4.5 (results/h100-2026-11-23b.md). Extended beat always on 10 tasks and lost 2 (p = 0.04);
# against adaptive, 4 won and 2 lost: as accurate, for less time. All were chosen on that same set.
DEFAULT_POLICY = "extended"


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None


def round_steps(total: int, rounds: Sequence[float]) -> list[int]:
    """Steps of each round: the fractions of `total`, at least one step each."""
    return [max(1, round(f * total)) for f in rounds]


def agreement(predictions: Sequence[Sequence], top: Sequence[np.ndarray | None]) -> float:
    """Lowest, over test inputs, share of views (invalid ones included) that answered the top grid."""
    shares = []
    for plist, best in zip(predictions, top, strict=True):
        if best is None or not plist:
            shares.append(0.0)
            continue
        same = sum(grids_equal(p.grid, best) for p in plist)
        shares.append(same / len(plist))
    return min(shares) if shares else 0.0


def loo_tasks(task: Task) -> list[Task]:
    """One task per demonstration: that demo as the test (with its output), the others as demos."""
    if len(task.train) < 2:
        return []
    out = []
    for i, demo in enumerate(task.train):
        rest = tuple(d for j, d in enumerate(task.train) if j != i)
        out.append(Task(f"{task.id}#loo{i}", rest, (Example(demo.input, demo.output),)))
    return out
