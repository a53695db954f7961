"""Choosing the two attempts: the hierarchical vote, or a product of experts over augmented views.

The vote (`testtime.stages.vote`) counts how many views decoded each answer. A product of experts (the ARChitects,
arXiv 2505.07859) asks the model instead how likely each candidate is: every candidate the views produced is
scored by its log-probability under many augmented versions of the task (each version an "expert": the same
model, with the task's adapter, seeing the puzzle in other clothes), and the candidates with the highest sum
are the attempts. A right answer stays likely under every rotation, flip and recoloring; an answer that one
view's greedy decoding happened to favour rarely does. The views' votes still pick which candidates are scored
and break ties.

    ranked = rank_candidates(model, tasks, candidates, codec, cfg, adapters=...)   # per task, per test input
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from torch import nn

from testtime.core.config import SEED, TOKENS, OneOf, Range, check
from testtime.data.augment import Transform, random_colors
from testtime.data.encode import Codec, Encoded, TooLongError, encode_example
from testtime.data.tasks import Example, Grid, Task
from testtime.model.lora import Adapters
from testtime.model.training import task_seed
from testtime.stages.engine import sequence_logprobs
from testtime.stages.vote import Candidate

METHODS = ("vote", "poe")


@dataclass
class SelectConfig:
    # "vote": the hierarchical vote alone; "poe": candidates ranked by a product of experts
    method: Annotated[str, OneOf(*METHODS)] = "poe"
    candidates: Annotated[int, Range(1, 64)] = 8  # the vote's top candidates per test input that are scored
    views: Annotated[int, Range(1, 8)] = 8  # D8 views each candidate is scored under (identity first)
    # color versions of each view: the original, then random permutations (0 kept)
    colors: Annotated[int, Range(1, 16)] = 2
    token_budget: Annotated[int, TOKENS] = 1 << 18  # (prefix + candidate) tokens per scoring batch
    seed: Annotated[int, SEED] = 0

    def __post_init__(self) -> None:
        check(self, "select_cfg")


@dataclass(frozen=True)
class Ranked:
    """A candidate as the selection ranks it: its votes, and (product of experts) its summed log-probability; under
    an ensemble, also each member's own (`members`: the mean over its views, whose mean is `logprob`), so a run's
    records tell what each adapter alone would have picked."""

    grid: Grid
    votes: int
    count: int
    logprob: float | None = None
    members: tuple[float, ...] | None = None

    def to_json(self) -> dict:
        out = {"grid": self.grid.astype(int).tolist(), "votes": self.votes, "count": self.count}
        if self.logprob is not None:
            out["logprob"] = _rounded(self.logprob)
        if self.members is not None:
            out["members"] = [_rounded(x) for x in self.members]
        return out


def _rounded(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def scoring_budget(cfg: SelectConfig, generation_budget: int | None) -> int:
    """Tokens per scoring batch: the configured ones, within the generation budget where one is set (an
    out-of-memory retry shrinks that one, and scoring batches with it)."""
    return cfg.token_budget if generation_budget is None else min(cfg.token_budget, generation_budget)


def expert_views(task: Task, cfg: SelectConfig) -> list[Transform]:
    """The task's scoring views: D8 elements (identity first), each in `colors` color versions, demos shuffled
    after the first; seeded by the task id, so a task is scored alike in every batch and process."""
    rng = np.random.default_rng(task_seed(cfg.seed, f"{task.id}#experts"))
    n = len(task.train)
    views = []
    for d8 in range(cfg.views):
        for c in range(cfg.colors):
            colors = tuple(range(10)) if c == 0 else random_colors(rng)
            order = None if (d8 == 0 and c == 0) or n < 2 else tuple(int(i) for i in rng.permutation(n))
            views.append(Transform(d8, colors, order))
    return views


def _sequences(task: Task, test: int, grids: Sequence[Grid], codec: Codec, cfg: SelectConfig, max_len: int
               ) -> list[tuple[int, Encoded]]:
    """(candidate index, sequence) for every candidate under every view that fits `max_len`; only the answer
    (the candidate, seen through the view) carries loss, so a sequence's score is log p(candidate | task)."""
    out = []
    for view in expert_views(task, cfg):
        vt = view.apply(task)
        for k, g in enumerate(grids):
            try:
                out.append((k, encode_example(codec, vt.train, Example(vt.test[test].input, view.apply_grid(g)),
                                              max_len=max_len, loss_on_demos=False)))
            except TooLongError:
                continue
    return out


def product_of_experts(model: nn.Module, tasks: Sequence[Task], candidates: Sequence[Sequence[Sequence[Grid]]],
                       codec: Codec, cfg: SelectConfig, *, adapters: Adapters | Sequence[Adapters] | None = None,
                       max_len: int = 8192, by_member: bool = False) -> list[list[list]]:
    """scores[i][q][k]: candidate k of test input q of tasks[i], its log-probability under the expert views (the
    mean over the views it fits in, which ranks as their sum, the product of experts, whenever every candidate
    fits in every view; -inf where it fits in none), each sequence through `adapters` slot i (the task's adapter)
    when given. With a list of handles (an ensemble's members, `stages.ensemble`), every sequence goes through each,
    and the experts are every view under every adapter; `by_member` makes each score a tuple, each member's mean
    over the views (every member sees the same views, so their mean is the score). All of them score in one
    batched pass; sequences of one view share their prompt, which is read once per adapter
    (`engine.sequence_logprobs`)."""
    seqs: list[Encoded] = []
    where: list[tuple[int, int, int]] = []
    for i, (task, per_test) in enumerate(zip(tasks, candidates, strict=True)):
        for q, grids in enumerate(per_test):
            for k, enc in _sequences(task, q, grids, codec, cfg, max_len):
                seqs.append(enc)
                where.append((i, q, k))
    members = list(adapters) if isinstance(adapters, Sequence) else [adapters]
    sums = [[[[0.0] * len(members) for _ in grids] for grids in per_test] for per_test in candidates]
    views = [[[0] * len(grids) for grids in per_test] for per_test in candidates]  # each member scores them all
    for i, q, k in where:
        views[i][q][k] += 1
    if seqs:
        owners = [i for i, _, _ in where]
        slots = None if members[0] is None else Adapters(
            members[0].lora, tuple(s for m in members for s in m.take(owners).slots))
        scores = sequence_logprobs(model, seqs * len(members), codec.pad_id, adapters=slots,
                                   token_budget=cfg.token_budget)
        for m in range(len(members)):  # member-major, as the sequences were stacked
            for (i, q, k), lp in zip(where, scores[m * len(seqs):(m + 1) * len(seqs)], strict=True):
                sums[i][q][k][m] += lp

    def score(s: list[float], n: int):
        each = tuple(x / n if n else -math.inf for x in s)
        return each if by_member else joint_score(each)

    return [[[score(s, n) for s, n in zip(ss, nn_, strict=True)] for ss, nn_ in zip(st, ct, strict=True)]
            for st, ct in zip(sums, views, strict=True)]


def joint_score(members: Sequence[float]) -> float:
    """A candidate's product-of-experts score from each member's own (their mean: every member sees the same views)."""
    return sum(members) / len(members)


def rank_candidates(model: nn.Module, tasks: Sequence[Task], votes: Sequence[Sequence[Sequence[Candidate]]],
                    codec: Codec, cfg: SelectConfig, *, adapters: Adapters | Sequence[Adapters] | None = None,
                    max_len: int = 8192, attempts: int = 0) -> list[list[list[Ranked]]]:
    """Each test input's candidates, best first: by the vote (`method` "vote"), or the vote's top `candidates`
    by their product-of-experts score, the rest after them in vote order (ties keep the vote's order).

    A test input with no more candidates than `attempts` keeps the vote's order unscored: all of them are
    attempts whatever their order, so scoring them would change no score (and costs a pass over every view)."""
    if cfg.method == "vote":
        return [[[Ranked(c.grid, c.votes, c.count) for c in per_q] for per_q in per_task] for per_task in votes]
    top = [[[c.grid for c in per_q[: cfg.candidates]] if len(per_q) > attempts else [] for per_q in per_task]
           for per_task in votes]
    ensemble = isinstance(adapters, Sequence) and len(adapters) > 1
    scores = product_of_experts(model, tasks, top, codec, cfg, adapters=adapters, max_len=max_len, by_member=ensemble)
    out = []
    for per_task, task_scores in zip(votes, scores, strict=True):
        ranked_task = []
        for per_q, s in zip(per_task, task_scores, strict=True):
            scored = [Ranked(c.grid, c.votes, c.count, joint_score(s[k]), tuple(s[k])) if ensemble
                      else Ranked(c.grid, c.votes, c.count, s[k]) for k, c in enumerate(per_q[: len(s)])]
            scored.sort(key=lambda r: -r.logprob)  # stable: equal scores keep the vote's order
            ranked_task.append(scored + [Ranked(c.grid, c.votes, c.count) for c in per_q[len(s):]])
        out.append(ranked_task)
    return out
