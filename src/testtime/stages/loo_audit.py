"""The leave-one-out check against what it stands for: greedy decoding of every held-out demo (`--audit-loo`).

The policies' check tells from one teacher-forced pass whether greedy decoding would give each held-out demo's answer
(`engine.sequence_scores`): exactly so in exact arithmetic, but decoding runs other kernels (one step at a time from a
cache, CUDA graphs, bfloat16 on a GPU), so where two logits nearly tie the verdicts can differ. An audit decodes the
same held-out demos, through the same adapters, counts the verdicts that differ, and times decoding, whose seconds the
caller keeps out of the stages' (the record's `compute` then holds the check's own cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from testtime.data.encode import Codec
from testtime.data.tasks import Task
from testtime.model.lora import Adapters
from testtime.stages.predict import PredictConfig, predict_tasks


def decoded(model: nn.Module, held_out: Sequence[Task], codec: Codec, cfg: PredictConfig,
            adapters: Adapters | None = None) -> list[bool]:
    """Whether greedy decoding under the identity view (no other view, no other demo order) answers each held-out
    task's first test input exactly; task i through `adapters` slot i."""
    preds, _ = predict_tasks(model, held_out, codec, replace(cfg, views=1, orders=1, dfs=None), adapters=adapters)
    out = []
    for t, p in zip(held_out, preds, strict=True):
        got = p.predictions[0][0].grid if p.predictions[0] else None
        out.append(got is not None and bool(np.array_equal(got, t.test[0].output)))
    return out


@dataclass
class Audit:
    """Per item of a group: held-out demos checked, verdicts that differ from decoding's, decoding's seconds."""

    notes: list[dict[str, float]]
    seconds: float = 0.0  # decoding's, over the group: what the group's clock leaves out
    clock: Callable[[], float] = field(default=time.perf_counter)

    @classmethod
    def of(cls, n: int, clock: Callable[[], float]) -> Audit:
        return cls([{"checks": 0, "disagree": 0, "decode_s": 0.0} for _ in range(n)], clock=clock)

    def check(self, items: Sequence[int], verdicts: Sequence[Sequence[bool]],
              decode: Callable[[], list[bool]]) -> None:
        """`verdicts[n]`: the check's, for each held-out demo of item items[n], in the order `decode()` answers them
        all (flattened)."""
        t0 = self.clock()
        got = iter(decode())
        dt = self.clock() - t0
        self.seconds += dt
        for i, checked in zip(items, verdicts, strict=True):
            note = self.notes[i]
            note["checks"] += len(checked)
            note["disagree"] += sum(v != next(got) for v in checked)
            note["decode_s"] = round(note["decode_s"] + dt / len(items), 4)
