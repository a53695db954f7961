"""A group of grid tasks' second round on confident answers (`stages.second_round`), after the first selection.

For each task whose adapter answered some test input confidently, the adapters (every member of its ensemble) train
`steps` more steps on the task's demonstrations plus those answers, then the task, its test outputs stripped, is
predicted again through them; both rounds' predictions are pooled, voted and scored again. What the group's ops do
(`RoundOps`, the grid kind's `GridOps` over the stripped tasks and the extended tasks' sequences) is all the round
touches: the tasks it is handed never hold a test output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from torch import nn

from testtime.data.encode import Codec, Encoded
from testtime.data.tasks import Task
from testtime.model.lora import Adapters
from testtime.stages.ensemble import member_datasets
from testtime.stages.policy import Outcome, Plan
from testtime.stages.predict import TaskPredictions
from testtime.stages.second_round import answer, confident, pooled, pseudo_task, strip
from testtime.stages.selection import Ranked, rank_candidates, scoring_budget
from testtime.stages.vote import Candidate, hierarchical_vote


class RoundOps(Protocol):
    """The calls a second round makes on a group (the grid kind's `GridOps`)."""

    def train(self, items: Sequence[int], steps: int, round_index: int) -> tuple[list[list[float]], int]: ...

    def predict(self, items: Sequence[int], adapted: bool, more_orders: int = 1
                ) -> tuple[list[TaskPredictions], list[str]]: ...

    def members(self) -> list[Adapters]: ...

    def clock(self) -> float: ...


def second_round(plan: Plan, group: Sequence[Task], out: Outcome, votes: list[Any], ranked: list[Any],
                 ops_for: Callable[[list[Task], dict[str, list[Encoded]]], RoundOps], model: nn.Module,
                 codec: Codec, afford: Callable[[list[int]], list[int]] | None = None
                 ) -> list[dict[str, Any] | None]:
    """The plan's second round over a group whose first selection gave `ranked` (from `votes` of `out.final`): for
    the tasks it runs on, `out` (predictions, losses, tokens, seconds under "second"), `votes` and `ranked` are
    updated in place. `ops_for(tasks, sequences)` gives the group's ops over `tasks` (the group, test outputs
    stripped), training on `sequences` (by member key). Returns each task's note (None: not eligible): which test
    inputs were confident, and the steps trained. `afford(chosen)`, under a budget, keeps the tasks whose round still
    fits it; the others' notes say `"budget": true`."""
    sc = plan.second
    notes: list[dict[str, Any] | None] = [None] * len(group)
    chosen: list[int] = []
    extended: dict[int, Task] = {}
    for i, task in enumerate(group):
        # Only tasks with an adapter take the round: it goes on training that adapter.
        if not out.adapted(i) or len(task.test) < sc.min_tests:
            continue
        sure = [confident(ranked[i][q], out.final[i].predictions[q], sc) for q in range(len(task.test))]
        notes[i] = {"confident": sure, "steps": 0}
        if any(sure):
            chosen.append(i)
            extended[i] = pseudo_task(task, [answer(task, q, ranked[i][q]) if s else None for q, s in enumerate(sure)])
    if afford is not None:
        kept = afford(chosen)
        for i in chosen:
            if i not in kept:
                notes[i]["budget"] = True  # type: ignore[index]
        chosen = kept
    if not chosen:
        return notes
    stripped = [strip(t) for t in group]
    sequences = {key: seqs for i in chosen
                 for key, seqs in member_datasets(extended[i], codec, plan.ttt, plan.ensemble).items()}
    ops = ops_for(stripped, sequences)
    start = ops.clock()
    losses, tokens = ops.train(chosen, sc.steps, len(plan.rounds))
    preds, problems = ops.predict(chosen, adapted=True)
    again: list[list[list[Candidate]]] = []
    for i, p in zip(chosen, preds, strict=True):
        first = out.final[i]
        out.final[i] = TaskPredictions(pooled(first.predictions, p.predictions), first.invalid + p.invalid,
                                       first.generated_tokens + p.generated_tokens)
        votes[i] = [hierarchical_vote(pl, per_group=plan.predict.per_group) for pl in out.final[i].predictions]
        again.append(votes[i])
    scfg = replace(plan.select, token_budget=scoring_budget(plan.select, plan.predict.token_budget))
    got: list[list[list[Ranked]]] = rank_candidates(
        model, [stripped[i] for i in chosen], again, codec, scfg, adapters=[m.take(chosen) for m in ops.members()],
        max_len=plan.predict.max_len, attempts=plan.attempts)
    seconds = (ops.clock() - start) / len(chosen)
    for k, i in enumerate(chosen):
        ranked[i] = got[k]
        out.losses[i] += losses[k]
        out.tokens[i] += tokens // len(chosen)
        out.spent[i]["second"] = seconds
        notes[i]["steps"] = sc.steps  # type: ignore[index]
    out.problems += [p for p in dict.fromkeys(problems) if p not in out.problems]
    return notes
