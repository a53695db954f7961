"""Answers to text queries: greedy decoding, or likelihood ranking when the task lists its options.

Both run batched over every query of every task in flight through the generation engine (`engine`), each
query through its task's adapter when `adapters` are given. Ranking scores an option by the summed log-probability of its answer
tokens (newline included) after the prompt; the prompt is read once for all of a query's options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from testtime.core.config import LENGTH, TOKENS, OneOf, Range
from testtime.data.encode import Encoded
from testtime.model.lora import Adapters
from testtime.stages.engine import greedy_generate, sequence_logprobs
from testtime.text.encode import TextFormat
from testtime.text.tasks import TextTask


@dataclass
class TextPredictConfig:
    # auto: rank when the task has options, else greedy; or "greedy" / "rank"
    method: Annotated[str, OneOf("auto", "greedy", "rank")] = "auto"
    max_new_tokens: Annotated[int, Range(1, 4096)] = 64  # cap on a greedy answer
    max_len: Annotated[int, LENGTH] = 8192
    token_budget: Annotated[int, TOKENS] = 1 << 17  # tokens per batch
    cuda_graphs: bool = True  # replay each batch's greedy decode step as one CUDA graph (GPU only)


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


def predict_text(
    model,
    tasks: Sequence[TextTask],
    fmt: TextFormat,
    cfg: TextPredictConfig,
    *,
    adapters: Adapters | None = None,
) -> list[list[Answer]]:
    """answers[task][query]: each task's demos in the order given as context, then the query; with `adapters`,
    task i's queries through its slot i."""
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
                    # Only the option is scored, so every option of a query shares its prompt (read once).
                    rank_seqs.append(
                        fmt.encode(
                            task.instruction, task.demos, x, opt, max_len=cfg.max_len - longest + len(fmt.answer(opt)),
                            loss_on_demos=False,
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
            adapters=None if adapters is None else adapters.take([k[0] for k in gen_keys]),
            cuda_graphs=cfg.cuda_graphs,
        )
        for (ti, qi), g in zip(gen_keys, gens, strict=True):
            answers[ti, qi] = Answer(ti, qi, fmt.decode_answer(g.tokens), "greedy")
    if rank_seqs:
        scores = sequence_logprobs(
            model,
            rank_seqs,
            fmt.pad_id,
            token_budget=cfg.token_budget,
            adapters=None if adapters is None else adapters.take([k[0] for k in rank_keys]),
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
