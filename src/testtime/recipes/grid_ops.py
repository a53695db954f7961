"""The plain calls a policy runs on one group of grid tasks (`policy.GroupOps`): predict, check, train, time.

They live apart from `GridKind` (testtime.recipes.grid), which holds the model and the adapter bank across groups
and builds one of these per group; a second round builds its own over the tasks it trains again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from testtime.data.tasks import Task
from testtime.model.lora import Adapters
from testtime.stages.engine import sequence_scores
from testtime.stages.ensemble import EnsembleConfig, MemberRows, member_adapters, member_keys, pool, replicate
from testtime.stages.loo_audit import Audit, decoded
from testtime.stages.policy import agreement, loo_tasks
from testtime.stages.predict import PredictConfig, TaskPredictions, answered, predict_tasks
from testtime.stages.selection import SelectConfig, scoring_budget
from testtime.stages.ttt import TTTConfig, fresh_adapters, group_adapters, train_group
from testtime.stages.vote import attempts, hierarchical_vote


def device_clock(cuda: bool) -> float:
    """Wall time, after the GPU has finished what was queued (so a stage's time is its own)."""
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


@dataclass
class GridOps:
    """The plain calls a policy runs on one group of grid tasks (see `policy.GroupOps`); item i is group[i],
    trained in adapter slot i (or, shared, all in slot 0)."""

    kind: Any  # the GridKind (testtime.recipes.grid) holding the model, codec, bank and TTT data; grid imports this
    group: list[Task]
    pcfg: PredictConfig
    tcfg: TTTConfig
    scfg: SelectConfig  # its scoring batches serve the leave-one-out check too
    progress: Any = None
    ecfg: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(adapters=1))
    datasets: dict[str, list] | None = None  # TTT sequences by member key (None: the kind's, from `prepare`)
    audit: Audit | None = None  # the check against decoding (`EvalConfig.audit_loo`), whose time `clock` leaves out

    def predict(self, items: Sequence[int], adapted: bool, more_orders: int = 1, views: int | None = None,
                first_view: int = 0) -> tuple[list[TaskPredictions], list[str]]:
        """Each item's predictions under views first_view.. (`views` of them: default the config's); adapted, through
        each member of its ensemble, pooled (`ensemble.pool`)."""
        pcfg = replace(self.pcfg, orders=self.pcfg.orders * more_orders) if more_orders > 1 else self.pcfg
        pcfg = replace(pcfg, views=views) if views is not None else pcfg
        if not adapted or self.ecfg.adapters == 1:
            return predict_tasks(self.kind.model, [self.group[i] for i in items], self.kind.codec, pcfg,
                                 adapters=self._adapters(items) if adapted else None, first_view=first_view)
        every = replicate(items, self.ecfg)
        slots = tuple(s for m in self.members() for s in m.take(items).slots)
        preds, problems = predict_tasks(self.kind.model, [self.group[i] for i in every], self.kind.codec, pcfg,
                                        adapters=Adapters(self.kind.lora, slots), first_view=first_view)
        return pool(preds, len(items)), list(dict.fromkeys(problems))

    def combine(self, prediction: TaskPredictions, more: TaskPredictions) -> TaskPredictions:
        return prediction + more

    def candidates(self, prediction: TaskPredictions) -> int:
        return max((len(hierarchical_vote(pl, per_group=self.pcfg.per_group)) for pl in prediction.predictions),
                   default=0)

    def _adapters(self, items: Sequence[int]) -> Adapters:
        """The j-th of some prompts or sequences through the adapter of item items[j] (its ensemble's first member)."""
        return group_adapters(self.kind.lora, len(self.group), self.tcfg).take(items)

    def members(self) -> list[Adapters]:
        """One handle per member of the ensemble: item i of handle j through member j of task i."""
        return member_adapters(self.kind.lora, len(self.group), self.tcfg, self.ecfg)

    def agreement(self, prediction: TaskPredictions) -> float:
        tops = [attempts(hierarchical_vote(pl, per_group=self.pcfg.per_group), 1)[0] for pl in prediction.predictions]
        return agreement(prediction.predictions, tops)  # the policy's signal, over this kind's votes

    def leave_one_out(self, items: Sequence[int], adapted: bool) -> list[float | None]:
        """Leave-one-out self-check: the share of each task's demos solved from the others (None: one demo).

        A held-out demo is solved where greedy decoding under the identity view would answer it exactly; all of
        them are told by one teacher-forced pass (`engine.sequence_scores`) instead of a decode loop. One whose
        prompt does not fit, or whose answer is longer than decoding may go, is not solved, as a decode fails. With a
        text tokenizer, an answer decoding would reach by another spelling of its digits counts as not solved."""
        k = self.kind
        held = [loo_tasks(self.group[i]) for i in items]
        hits = [[False] * len(h) for h in held]
        seqs, owner = [], []
        for n, lts in enumerate(held):
            for j, lt in enumerate(lts):
                seq = answered(k.codec, lt.train, lt.test[0], self.pcfg.max_len)
                if seq is not None:
                    seqs.append(seq)
                    owner.append((n, j))
        if seqs:
            adapters = self._adapters([items[n] for n, _ in owner]) if adapted else None
            scores = sequence_scores(k.model, seqs, k.codec.pad_id, adapters=adapters, stop_ids=k.codec.stop_ids,
                                     token_budget=scoring_budget(self.scfg, self.pcfg.token_budget))
            for (n, j), score in zip(owner, scores, strict=True):
                hits[n][j] = score.exact
        if self.audit is not None:
            flat = [lt for lts in held for lt in lts]
            owners = [i for i, lts in zip(items, held, strict=True) for _ in lts]
            slots = self._adapters(owners) if adapted and flat else None
            self.audit.check(items, hits, lambda: decoded(k.model, flat, k.codec, self.pcfg, slots))
        return [float(np.mean(h)) if h else None for h in hits]

    def fresh_adapters(self) -> None:
        k = self.kind
        k.lora = fresh_adapters(k.model, k.lora, member_keys([t.id for t in self.group], self.ecfg), self.tcfg)

    def train(self, items: Sequence[int], steps: int, round_index: int) -> tuple[list[list[float]], int]:
        """`steps` more steps of each member of each item's ensemble, all together; an item's loss is its members'
        mean."""
        k = self.kind
        data = k.datasets if self.datasets is None else self.datasets
        rows = MemberRows.of([t.id for t in self.group], items, len(self.group), self.ecfg)
        res = train_group(k.model, k.lora, [data[key] for key in rows.keys], self.tcfg, pad_id=k.codec.pad_id,
                          task_ids=rows.keys, slots=rows.slots, steps=steps, round_index=round_index,
                          progress=self.progress, lr_scales=rows.lr_scales)
        return rows.per_item(res.losses), res.tokens

    def clock(self) -> float:
        return device_clock(self.kind.cuda) - (self.audit.seconds if self.audit is not None else 0.0)
