"""Answers to text queries: greedy decoding, or likelihood ranking when the task lists its options.

Both run batched over every query of every task in flight, row i through adapter task(i) when
adapters are in place. Ranking scores an option by the summed log-probability of its answer
tokens (newline included) after the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from testtime.encode import Encoded
from testtime.predict import greedy_generate
from testtime.text import TextTask
from testtime.text_encode import TextFormat
from testtime.ttt import _pad_right, target_loss

Select = Callable[[torch.Tensor | None], None]


@dataclass
class TextPredictConfig:
    method: str = "auto"  # auto: rank when the task has options, else greedy; or "greedy" / "rank"
    max_new_tokens: int = 64  # cap on a greedy answer
    max_len: int = 8192
    token_budget: int = 1 << 17  # tokens per batch


@dataclass(frozen=True)
class Answer:
    task: int
    query: int
    text: str
    method: str
    scores: tuple[float, ...] | None = None  # per option, when ranked


def _method(task: TextTask, cfg: TextPredictConfig) -> str:
    if cfg.method == "auto":
        return "rank" if task.options else "greedy"
    if cfg.method == "rank" and not task.options:
        return "greedy"
    return cfg.method


def _answer_room(task: TextTask, fmt: TextFormat, cfg: TextPredictConfig) -> int:
    longest = max((len(fmt.answer(y)) for _, y in task.demos), default=cfg.max_new_tokens)
    return min(cfg.max_new_tokens, 2 * longest + 4)


@torch.no_grad()
def sequence_logprobs(
    model,
    seqs: Sequence[Encoded],
    pad_id: int,
    *,
    adapter_index: Sequence[int] | None = None,
    select: Select | None = None,
    token_budget: int = 1 << 17,
) -> list[float]:
    """Summed log-probability of each sequence's masked tokens, in length-sorted batches."""
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(seqs[order[end]]) <= token_budget:
            end += 1
        batch = order[start:end]
        ids, mask = _pad_right([seqs[i] for i in batch], pad_id, device)
        if select is not None and adapter_index is not None:
            select(torch.tensor([adapter_index[i] for i in batch], device=device))
        mean = target_loss(model, ids, mask, [slice(r, r + 1) for r in range(len(batch))])
        counts = mask[:, 1:].sum(1)
        for r, i in enumerate(batch):
            out[i] = -float(mean[r] * counts[r])
        start = end
    if select is not None:
        select(None)
    return out


def predict_text(
    model,
    tasks: Sequence[TextTask],
    fmt: TextFormat,
    cfg: TextPredictConfig,
    *,
    select: Select | None = None,
    use_adapters: bool = False,
) -> list[list[Answer]]:
    """answers[task][query]: each task's demos in the order given as context, then the query."""
    gen_prompts, gen_max, gen_keys = [], [], []
    rank_seqs: list[Encoded] = []
    rank_keys: list[tuple[int, int]] = []
    for ti, task in enumerate(tasks):
        method = _method(task, cfg)
        room = _answer_room(task, fmt, cfg)
        for qi, (x, _) in enumerate(task.queries):
            if method == "greedy":
                enc = fmt.encode(task.instruction, task.demos, x, max_len=cfg.max_len, answer_room=room)
                gen_prompts.append(enc.input_ids)
                gen_max.append(room)
                gen_keys.append((ti, qi))
            else:
                assert task.options is not None
                longest = max(len(fmt.answer(o)) for o in task.options)
                for opt in task.options:
                    rank_seqs.append(
                        fmt.encode(
                            task.instruction, task.demos, x, opt, max_len=cfg.max_len - longest + len(fmt.answer(opt))
                        )
                    )
                    rank_keys.append((ti, qi))
    answers: dict[tuple[int, int], Answer] = {}
    if gen_prompts:
        gens = greedy_generate(
            model,
            gen_prompts,
            gen_max,
            fmt,
            token_budget=cfg.token_budget,
            adapter_index=[k[0] for k in gen_keys] if use_adapters else None,
            select=select,
        )
        for (ti, qi), g in zip(gen_keys, gens, strict=True):
            answers[ti, qi] = Answer(ti, qi, fmt.decode_answer(g.tokens), "greedy")
    if rank_seqs:
        scores = sequence_logprobs(
            model,
            rank_seqs,
            fmt.pad_id,
            token_budget=cfg.token_budget,
            select=select,
            adapter_index=[k[0] for k in rank_keys] if use_adapters else None,
        )
        by_query: dict[tuple[int, int], list[float]] = {}
        for key, s in zip(rank_keys, scores, strict=True):
            by_query.setdefault(key, []).append(s)
        for (ti, qi), s in by_query.items():
            opts = tasks[ti].options
            assert opts is not None
            best = max(range(len(s)), key=lambda i: (s[i], -i))
            answers[ti, qi] = Answer(ti, qi, opts[best], "rank", tuple(round(v, 4) for v in s))
    return [[answers[ti, qi] for qi in range(len(t.queries))] for ti, t in enumerate(tasks)]
