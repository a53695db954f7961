"""An ensemble of adapters per task: K adapters trained together in the bank, their candidates pooled, and every
candidate scored through each of them (a product of experts over views and adapters).

Two runs of the default with different seeds swap 36 of 400 tasks (160 and 161.5 solved): each adapter finds
answers the other misses (issue 24). Member j of a task is, for everything random, the task under another name
(`member_key`): its adapter starts from its own seed, draws its own training order and (with `data`) its own
augmented sequences, and it may train at its own learning rate (`lr`). Member 0 is the task itself, under its own
name, so an ensemble of one is the run without an ensemble, draw for draw.

Slots: member j of item i of a group of n tasks sits in slot j * n + i of the bank (member 0 in slot i, where it
sits without an ensemble). Member j > 0 predicts into view groups of its own (`"rot90#m1"`): the vote counts each
member's view as one more voter, and the identity view's greedy answer stays member 0's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

from testtime.core.config import Range
from testtime.data.encode import Codec, Encoded
from testtime.data.tasks import Task
from testtime.model.lora import Adapters, MultiLoRA
from testtime.stages.predict import TaskPredictions
from testtime.stages.ttt import TTTConfig, build_dataset, group_adapters

# Adapters a task when none are asked for: two since 2026-12-07, 211.5 against one's 202 of ARC-AGI-1's 400 (10 won,
# 0 lost) at 1.8x the GPU time (results/h100-arch-adapters-2026-12-06.md).
DEFAULT_ADAPTERS = 2


@dataclass
class EnsembleConfig:
    # Adapters per task (1: no ensemble). None: DEFAULT_ADAPTERS where each task trains its own LoRA, 1 for the
    # shared ablation, full-weight adapters or no TTT; `policy.resolve_plan` decides, so a plan always holds a number.
    adapters: Annotated[int | None, Range(1, 16)] = None
    # Member j's learning rate: the configured one times lr[j % len(lr)] (None: all alike), e.g. [1, 0.5, 2].
    lr: Annotated[list[float] | None, Range(0, 100, lo_open=True)] = None
    data: bool = True  # each member draws its own augmented TTT sequences (else all train on member 0's)


def member_key(task_id: str, member: int) -> str:
    """The name member `member` of a task goes by wherever a draw is seeded by the task's name."""
    return task_id if member == 0 else f"{task_id}#m{member}"


def member_keys(task_ids: Sequence[str], cfg: EnsembleConfig) -> list[str]:
    """Every member of every task, in slot order (member-major: slot j * n + i)."""
    return [member_key(t, j) for j in range(cfg.adapters) for t in task_ids]


def member_lr(cfg: EnsembleConfig, member: int) -> float:
    """Member `member`'s learning rate, as a multiple of the configured one."""
    return 1.0 if not cfg.lr else float(cfg.lr[member % len(cfg.lr)])


def member_group(group: str, member: int) -> str:
    """The view group member `member`'s predictions of view `group` vote in."""
    return group if member == 0 else f"{group}#m{member}"


def group_member(group: str) -> int:
    """The member whose predictions vote in view group `group` (`member_group`'s inverse)."""
    _, sep, member = group.rpartition("#m")
    return int(member) if sep and member.isdigit() else 0


def member_datasets(task: Task, codec: Codec, tcfg: TTTConfig, cfg: EnsembleConfig) -> dict[str, list[Encoded]]:
    """Each member's TTT sequences, by its key (`member_key`): with `data`, each member's own draw of augmentations
    (the task's demonstrations only, as `ttt.build_dataset` always takes them); else member 0's for all."""
    first = build_dataset(task, codec, tcfg)
    return {member_key(task.id, j): first if j == 0 or not cfg.data
            else build_dataset(replace(task, id=member_key(task.id, j)), codec, tcfg) for j in range(cfg.adapters)}


def member_adapters(lora: MultiLoRA, n: int, tcfg: TTTConfig, cfg: EnsembleConfig) -> list[Adapters]:
    """For a group of n tasks, one handle per member: item i of handle j through member j of task i."""
    if cfg.adapters == 1:
        return [group_adapters(lora, n, tcfg)]
    return [Adapters(lora, tuple(j * n + i for i in range(n))) for j in range(cfg.adapters)]


@dataclass(frozen=True)
class MemberRows:
    """What training some items of a group of n tasks trains: each member of each item, member-major."""

    keys: list[str]  # the dataset (and draw) of each
    slots: list[int]  # its slot in the bank
    lr_scales: list[float]  # its learning rate against the configured one
    items: int  # how many items: row r belongs to item r % items

    @classmethod
    def of(cls, task_ids: Sequence[str], items: Sequence[int], n: int, cfg: EnsembleConfig) -> MemberRows:
        members = range(cfg.adapters)
        return cls([member_key(task_ids[i], j) for j in members for i in items],
                   [j * n + i for j in members for i in items],
                   [member_lr(cfg, j) for j in members for _ in items], len(items))

    def per_item(self, losses: Sequence[Sequence[float]]) -> list[list[float]]:
        """Each item's loss per step: the mean over its members (one member: its own losses)."""
        k = len(losses) // self.items
        return [[sum(step) / k for step in zip(*(losses[j * self.items + i] for j in range(k)), strict=True)]
                for i in range(self.items)]


def replicate(items: Sequence[int], cfg: EnsembleConfig) -> list[int]:
    """The items each member predicts, member-major (what `pool` takes apart)."""
    return [i for _ in range(cfg.adapters) for i in items]


def pool(predictions: Sequence[TaskPredictions], items: int) -> list[TaskPredictions]:
    """Predictions of `replicate`d items (member-major, `items` per member), pooled per item: member j's predictions
    renamed into its own view groups (`member_group`), after member 0's."""
    out = []
    for i in range(items):
        mine = [(j, predictions[j * items + i]) for j in range(len(predictions) // items)]
        tests = len(mine[0][1].predictions)
        out.append(TaskPredictions(
            [[replace(p, group=member_group(p.group, j)) if j else p for j, tp in mine for p in tp.predictions[q]]
             for q in range(tests)],
            sum(tp.invalid for _, tp in mine), sum(tp.generated_tokens for _, tp in mine)))
    return out

