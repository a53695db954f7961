"""A second round on confident answers: where the product of experts is sure of a test input's answer, that input
with its best candidate becomes one more demonstration, the task's adapter trains a few more steps on the
demonstrations so extended, and the task is predicted and scored again.

Only the model's own answers are ever added: `pseudo_task` builds the extended task from the demonstrations and the
test inputs alone (test outputs are dropped before anything is built), and the second round predicts and scores
the task with its test outputs stripped (`strip`). A task of several test inputs gains most: what the model is sure
of for one input teaches it the others.

Confidence, per test input (`confident`): the best candidate's product-of-experts score (its mean log-probability
per expert view) beats the runner-up's by at least `margin`; where the candidates were not scored (no more of them
than attempts), the best one's share of the views' answers is at least `agreement`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from testtime.core.config import Range
from testtime.data.tasks import Example, Task, grids_equal
from testtime.stages.selection import Ranked
from testtime.stages.vote import Prediction


@dataclass
class SecondRoundConfig:
    steps: Annotated[int, Range(0, 10000)] = 0  # TTT steps of the second round (0: no second round)
    # Confident: the best candidate's score beats the runner-up's by this much (nats of mean log-prob per view).
    margin: Annotated[float, Range(0, 1e4)] = 1.0
    agreement: Annotated[float, Range(0, 1)] = 0.5  # ... or, unscored, this share of the views gave it
    min_tests: Annotated[int, Range(1, 64)] = 1  # a task takes a second round only with this many test inputs


def confident(ranked: Sequence[Ranked], predictions: Sequence[Prediction], cfg: SecondRoundConfig) -> bool:
    """Whether the best of a test input's ranked candidates is sure enough to learn from (see the module's
    docstring)."""
    if not ranked:
        return False
    best = ranked[0]
    if best.logprob is not None and len(ranked) > 1 and ranked[1].logprob is not None:
        if not math.isfinite(best.logprob):
            return False
        return best.logprob - ranked[1].logprob >= cfg.margin
    greedy = [p for p in predictions if not p.sampled]  # each view's own answer, as `policy.agreement` counts
    share = sum(grids_equal(p.grid, best.grid) for p in greedy) / max(1, len(greedy))
    return share >= cfg.agreement


def strip(task: Task) -> Task:
    """The task with its test outputs dropped: all a second round may see of its test inputs."""
    return Task(task.id, task.train, tuple(Example(e.input) for e in task.test), task.source)


def pseudo_task(task: Task, answers: Sequence[Example | None]) -> Task:
    """The task whose demonstrations are its own and, for each test input given an answer, that input with the
    model's answer (`answers[q]`: an Example of test input q and a candidate grid; None: not confident). The test
    inputs stay the queries, their outputs dropped."""
    extra = tuple(a for a in answers if a is not None)
    return Task(task.id, task.train + extra, strip(task).test, task.source)


def answer(task: Task, q: int, ranked: Sequence[Ranked]) -> Example:
    """Test input q of `task` with its best candidate as the output: the demonstration a confident answer adds."""
    return Example(task.test[q].input, ranked[0].grid)


def pooled(first: Sequence[Sequence[Prediction]], second: Sequence[Sequence[Prediction]]) -> list[list[Prediction]]:
    """Both rounds' predictions of each test input: the second's in view groups of their own (`"rot90#r2"`), so
    each round's view is one voter."""
    return [list(a) + [Prediction(f"{p.group}#r2", p.grid, p.logprob, p.sampled) for p in b]
            for a, b in zip(first, second, strict=True)]
