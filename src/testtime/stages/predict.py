"""Augmented inference: solve each test input under many invertible views, map answers back, vote.

Every view of every task in flight decodes together through the generation engine (`engine`),
each prompt through its task's adapter when `adapters` are given. With `dfs`, each view gives every answer at least
that likely (`sampling.sample_above`, the greedy one among them) instead of the greedy one alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
from torch import nn

from testtime.core.config import LENGTH, SEED, Range
from testtime.data.augment import Transform, dihedral_views
from testtime.data.encode import Codec, Encoded, TooLongError, encode_example
from testtime.data.tasks import Example, Grid, Task
from testtime.model.lora import Adapters
from testtime.stages.engine import Generated, greedy_generate
from testtime.stages.sampling import sample_above
from testtime.stages.vote import Prediction


@dataclass
class PredictConfig:
    views: Annotated[int, Range(1, 8)] = 8  # D8 elements to solve under (1: identity only, plain greedy)
    orders: Annotated[int, Range(1, 64)] = 1  # demo orders per D8 element (extra orders vote within that element's group)
    max_len: Annotated[int, LENGTH] = 8192
    # (prompt + answer) tokens per generation batch; None: auto_token_budget
    token_budget: Annotated[int | None, Range(1024, 2**30)] = None
    per_group: Annotated[int, Range(1, 64)] = 3  # candidates each view group keeps before the vote across groups
    seed: Annotated[int, SEED] = 0
    cuda_graphs: bool = True  # replay each batch's decode step as one CUDA graph (GPU only; see greedy_generate)
    # Depth-first sampling: every answer of probability at least this under each view, the greedy one always among
    # them (stages.sampling; the ARChitects' sampling); None: greedy decoding alone.
    dfs: Annotated[float | None, Range(0, 1, lo_open=True)] = None


@dataclass(frozen=True)
class Query:
    task: int  # index into the task list (and adapter index when adapters are in place)
    test: int  # which test input
    view: Transform
    group: str
    prompt: np.ndarray
    max_new: int


def task_seed(seed: int, task_id: str) -> int:
    """The seed of one task's demo orders: the run's seed and the task's id, nothing of the other tasks."""
    return seed * (1 << 32) + zlib.crc32(task_id.encode())


def make_queries(tasks: Sequence[Task], codec: Codec, cfg: PredictConfig, first_view: int = 0
                 ) -> tuple[list[Query], list[str]]:
    """Every (task, test input, view) prompt; also the problems met (a task that fits no budget). Views before
    `first_view` are left out (a later call adding views to those predicted already: the demo orders drawn are
    those a call of every view would draw). Each task draws its orders from its own stream, seeded by its id, so
    what a task gets depends neither on the other tasks of the call nor on how many views they drew."""
    queries: list[Query] = []
    problems: list[str] = []
    for ti, task in enumerate(tasks):
        rng = np.random.default_rng(task_seed(cfg.seed, task.id))
        n = len(task.train)
        for vi, view in enumerate(dihedral_views()[: cfg.views]):
            for oi in range(cfg.orders):
                order = None if oi == 0 else tuple(int(i) for i in rng.permutation(n))
                if vi < first_view:
                    continue
                v = Transform(view.d8, view.colors, order)
                vt = v.apply(task)
                for qi, test in enumerate(vt.test):
                    try:
                        enc, max_new = encode_query(codec, vt.train, test.input, cfg.max_len)
                    except TooLongError as e:
                        if vi == first_view and oi == 0:
                            problems.append(f"task {task.id} test {qi}: {e}")
                        continue
                    queries.append(Query(ti, qi, v, view.name, enc.input_ids, max_new))
    return queries, problems


def encode_query(codec: Codec, demos: Sequence[Example], query: Grid, max_len: int) -> tuple[Encoded, int]:
    """The prompt a query is answered from, and how many tokens decoding may add to it; TooLongError where even
    one demo leaves no room."""
    enc = encode_example(codec, demos, Example(query), max_len=max_len)
    budget = codec.answer_budget([demos[i] for i in enc.demos_used], query)
    return enc, min(budget, max_len - len(enc.input_ids))


def answered(codec: Codec, demos: Sequence[Example], example: Example, max_len: int) -> Encoded | None:
    """The prompt greedy decoding answers `example.input` from, followed by `example.output` as the only target, so
    that `engine.sequence_scores` tells whether decoding would give that answer; None where it could not (the
    prompt does not fit `max_len`, or the answer is longer than decoding may go)."""
    try:
        enc, max_new = encode_query(codec, demos, example.input, max_len)
    except TooLongError:
        return None
    answer = codec.answer_piece(example.output)
    if len(answer) > max_new:
        return None
    return replace(enc, input_ids=np.concatenate([enc.input_ids, answer]),
                   loss_mask=np.arange(len(enc) + len(answer)) >= len(enc))


@dataclass
class TaskPredictions:
    """All view predictions for one task: predictions[test index] -> list of Prediction."""

    predictions: list[list[Prediction]]
    invalid: int
    generated_tokens: int

    def __add__(self, more: TaskPredictions) -> TaskPredictions:
        """These predictions and those of further views of the same task."""
        return TaskPredictions([a + b for a, b in zip(self.predictions, more.predictions, strict=True)],
                               self.invalid + more.invalid, self.generated_tokens + more.generated_tokens)


def predict_tasks(
    model: nn.Module,
    tasks: Sequence[Task],
    codec: Codec,
    cfg: PredictConfig,
    *,
    adapters: Adapters | None = None,
    progress: Callable[[int], None] | None = None,
    first_view: int = 0,
) -> tuple[list[TaskPredictions], list[str]]:
    """Solve every test input of every task under every view (from `first_view` on); answers come back in the
    original frame.

    With `adapters`, tasks[i] goes through its slot i.
    """
    queries, problems = make_queries(tasks, codec, cfg, first_view)
    prompts, max_new = [q.prompt for q in queries], [q.max_new for q in queries]
    slots = None if adapters is None else adapters.take([q.task for q in queries])
    gens: list[list[Generated]]
    if cfg.dfs is None:
        gens = [[g] for g in greedy_generate(model, prompts, max_new, codec, token_budget=cfg.token_budget,
                                             adapters=slots, progress=progress, cuda_graphs=cfg.cuda_graphs)]
    else:
        gens = sample_above(model, prompts, max_new, codec, min_prob=cfg.dfs, token_budget=cfg.token_budget,
                            adapters=slots)
    out = [TaskPredictions([[] for _ in t.test], 0, 0) for t in tasks]
    for q, answers in zip(queries, gens, strict=True):
        tp = out[q.task]
        for j, g in enumerate(answers):  # likeliest first: a view's first answer wins its ties in the vote
            dec = codec.decode_grid(g.tokens)
            tp.generated_tokens += next((n + 1 for n, t in enumerate(g.tokens) if t in codec.stop_ids), len(g.tokens))
            if dec.grid is None:
                tp.invalid += 1
            grid = None if dec.grid is None else q.view.invert_grid(dec.grid)
            tp.predictions[q.test].append(Prediction(q.group, grid, g.logprob, sampled=j > 0))
    return out, problems
