"""Answers to text queries: greedy decoding, or likelihood ranking when the task lists its options.

Both run batched over every query of every task in flight through the generation engine (`engine`), each
query through its task's adapter when `adapters` are given. Ranking scores an option by the summed log-probability of its answer
tokens (newline included) after the prompt; the prompt is read once for all of a query's options.

The prompt holds the task's demonstrations in the order given (`icl`), or none (zero-shot). With `orders` > 1 each
query is also asked under other orders of its demonstrations and the answers vote, the text analogue of the grid
kind's augmented inference: the most frequent answer wins; a tie goes to the likeliest answer summed over the orders
(ranking) or to the earliest order (greedy), the task's own order first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from testtime.core.config import LENGTH, SEED, TOKENS, OneOf, Range
from testtime.data.encode import Encoded
from testtime.model.lora import Adapters
from testtime.model.training import task_seed
from testtime.stages.engine import greedy_generate, sequence_logprobs
from testtime.text.encode import TextFormat, normalize
from testtime.text.tasks import TextTask


@dataclass
class TextPredictConfig:
    # auto: rank when the task has options, else greedy; or "greedy" / "rank"
    method: Annotated[str, OneOf("auto", "greedy", "rank")] = "auto"
    max_new_tokens: Annotated[int, Range(1, 4096)] = 64  # cap on a greedy answer
    max_len: Annotated[int, LENGTH] = 8192
    token_budget: Annotated[int, TOKENS] = 1 << 17  # tokens per batch
    cuda_graphs: bool = True  # replay each batch's greedy decode step as one CUDA graph (GPU only)
    icl: bool = True  # the demonstrations in the prompt (False: instruction and query alone, zero-shot)
    orders: Annotated[int, Range(1, 64)] = 1  # demo orders each query is asked under; their answers vote
    seed: Annotated[int, SEED] = 0  # of the extra demo orders


@dataclass(frozen=True)
class Answer:
    task: int
    query: int
    text: str
    method: str
    scores: tuple[float, ...] | None = None  # per option, when ranked (the mean over the orders)
    votes: tuple[str, ...] | None = None  # each order's answer, when there are several


def _method(task: TextTask, cfg: TextPredictConfig) -> str:
    if cfg.method == "auto":
        return "rank" if task.options else "greedy"
    if cfg.method == "rank" and not task.options:
        return "greedy"
    return cfg.method


def _answer_room(task: TextTask, fmt: TextFormat, cfg: TextPredictConfig) -> int:
    longest = max((len(fmt.answer(y)) for _, y in task.demos), default=cfg.max_new_tokens)
    return min(cfg.max_new_tokens, 2 * longest + 4)


def demo_orders(n: int, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to `k` distinct orders of n demos: the order given first, then random ones (fewer when n! < k)."""
    out = [tuple(range(n))]
    for _ in range(50 * k):
        if len(out) >= min(k, math.factorial(n)):
            break
        order = tuple(int(i) for i in rng.permutation(n))
        if order not in out:
            out.append(order)
    return out


def vote(texts: list[str], sums: list[float] | None) -> str:
    """The most frequent answer; a tie goes to the higher summed score, else to the earliest order."""
    counts = Counter(normalize(t) for t in texts)
    top = max(counts.values())
    tied = [t for t in texts if counts[normalize(t)] == top]
    if sums is not None:
        return max(tied, key=lambda t: sums[texts.index(t)])
    return tied[0]


def predict_text(
    model,
    tasks: Sequence[TextTask],
    fmt: TextFormat,
    cfg: TextPredictConfig,
    *,
    adapters: Adapters | None = None,
) -> list[list[Answer]]:
    """answers[task][query]: each task's demos as context (see the module's doc), then the query; with `adapters`,
    task i's queries through its slot i."""
    gen_prompts, gen_max, gen_keys = [], [], []
    rank_seqs: list[Encoded] = []
    rank_keys: list[tuple[int, int, int]] = []
    for ti, task in enumerate(tasks):
        method = _method(task, cfg)
        room = _answer_room(task, fmt, cfg)
        for qi, (x, _) in enumerate(task.queries):
            if cfg.icl:
                rng = np.random.default_rng(task_seed(cfg.seed, f"{task.id}#{qi}"))
                contexts = [[task.demos[i] for i in o] for o in demo_orders(len(task.demos), cfg.orders, rng)]
            else:
                contexts = [[]]
            for oi, demos in enumerate(contexts):
                if method == "greedy":
                    enc = fmt.encode(task.instruction, demos, x, max_len=cfg.max_len, answer_room=room)
                    gen_prompts.append(enc.input_ids)
                    gen_max.append(room)
                    gen_keys.append((ti, qi, oi))
                else:
                    assert task.options is not None
                    longest = max(len(fmt.answer(o)) for o in task.options)
                    for opt in task.options:
                        # Only the option is scored, so every option of a query shares its prompt (read once).
                        rank_seqs.append(
                            fmt.encode(
                                task.instruction, demos, x, opt,
                                max_len=cfg.max_len - longest + len(fmt.answer(opt)), loss_on_demos=False,
                            )
                        )
                        rank_keys.append((ti, qi, oi))
    texts: dict[tuple[int, int], list[str]] = {}
    scores: dict[tuple[int, int], list[list[float]]] = {}
    if gen_prompts:
        gens = greedy_generate(
            model,
            gen_prompts,
            gen_max,
            fmt,
            token_budget=cfg.token_budget,
            adapters=None if adapters is None else adapters.take([k[0] for k in gen_keys]),
            cuda_graphs=cfg.cuda_graphs,
        )
        for (ti, qi, _), g in zip(gen_keys, gens, strict=True):
            texts.setdefault((ti, qi), []).append(fmt.decode_answer(g.tokens))
    if rank_seqs:
        logps = sequence_logprobs(
            model,
            rank_seqs,
            fmt.pad_id,
            token_budget=cfg.token_budget,
            adapters=None if adapters is None else adapters.take([k[0] for k in rank_keys]),
        )
        by_order: dict[tuple[int, int, int], list[float]] = {}
        for key, v in zip(rank_keys, logps, strict=True):
            by_order.setdefault(key, []).append(v)
        for (ti, qi, _), s in by_order.items():
            opts = tasks[ti].options
            assert opts is not None
            texts.setdefault((ti, qi), []).append(opts[max(range(len(s)), key=lambda i: (s[i], -i))])
            scores.setdefault((ti, qi), []).append(s)
    answers: dict[tuple[int, int], Answer] = {}
    for (ti, qi), said in texts.items():
        per_order = scores.get((ti, qi))
        if per_order is None:
            answers[ti, qi] = Answer(ti, qi, vote(said, None), "greedy", None,
                                     tuple(said) if len(said) > 1 else None)
            continue
        mean = [sum(col) / len(per_order) for col in zip(*per_order, strict=True)]
        opts = tasks[ti].options
        assert opts is not None
        sums = [mean[opts.index(t)] for t in said]
        answers[ti, qi] = Answer(ti, qi, vote(said, sums), "rank", tuple(round(v, 4) for v in mean),
                                 tuple(said) if len(said) > 1 else None)
    return [[answers[ti, qi] for qi in range(len(t.queries))] for ti, t in enumerate(tasks)]
