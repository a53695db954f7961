"""Answers to text queries: greedy decoding, or likelihood ranking when the task lists its options.

Both run batched over every query of every task in flight, row i through adapter task(i) when
adapters are in place. Ranking scores an option by the summed log-probability of its answer
tokens (newline included) after the prompt; the prompt is read once for all of a query's options.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from testtime.encode import Encoded
from testtime.predict import budget_batches, greedy_generate, left_pad
from testtime.text import TextTask
from testtime.text_encode import TextFormat

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
    """Summed log-probability of each sequence's masked tokens.

    Sequences that share everything before their first masked token (one query's answer options)
    read that prefix once: its KV cache is copied for each continuation, so ranking k options of a long
    few-shot prompt costs about one prompt, not k. Prefixes run in length-sorted batches under
    `token_budget` (prefix plus longest continuation, per row).
    """
    device = next(model.parameters()).device
    groups: dict[tuple[int, bytes], list[int]] = {}  # (adapter, prefix tokens) -> sequences
    starts = []
    for i, s in enumerate(seqs):
        first = int(np.argmax(s.loss_mask)) if s.loss_mask.any() else len(s.input_ids)
        starts.append(max(first, 1))  # the first token has no logit: it can only be context
        key = (adapter_index[i] if adapter_index is not None else -1, s.input_ids[: starts[-1]].tobytes())
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    widths = [starts[g[0]] + max(len(seqs[i].input_ids) - starts[i] for i in g) for g in members]
    out = [0.0] * len(seqs)
    for cut in budget_batches(widths, token_budget):
        batch = [members[k] for k in cut]
        if select is not None and adapter_index is not None:
            select(torch.tensor([adapter_index[g[0]] for g in batch], device=device))
        _score_prefix_batch(model, seqs, starts, batch, pad_id, device, out)
    if select is not None:
        select(None)
    return out


def _score_prefix_batch(model, seqs: Sequence[Encoded], starts: list[int], batch: list[list[int]], pad_id: int,
                        device, out: list[float]) -> None:
    """One batch of prefix groups: each prefix once (left-padded), then the groups' j-th continuations together."""
    b = len(batch)
    ids, attn_t, pos = left_pad([seqs[g[0]].input_ids[: starts[g[0]]] for g in batch], pad_id, device)
    cache = DynamicCache(config=model.config)
    first = model(input_ids=ids, attention_mask=attn_t, position_ids=pos,
                  past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    first_lp = torch.log_softmax(first, -1)  # [b, vocab]: what the prefix predicts next
    for j in range(max(len(g) for g in batch)):
        rows = [g[j] if j < len(g) else None for g in batch]
        cw = max(len(seqs[i].input_ids) - starts[i] for i in rows if i is not None)
        cont = np.full((b, cw), pad_id, dtype=np.int64)
        cmask = np.zeros((b, cw), dtype=np.int64)
        tmask = np.zeros((b, cw), dtype=bool)
        for r, i in enumerate(rows):
            if i is not None:
                c = seqs[i].input_ids[starts[i]:]
                cont[r, : len(c)] = c
                cmask[r, : len(c)] = 1
                tmask[r, : len(c)] = seqs[i].loss_mask[starts[i]:]
        cont_t = torch.from_numpy(cont).to(device)
        logits = model(input_ids=cont_t, attention_mask=torch.cat([attn_t, torch.from_numpy(cmask).to(device)], 1),
                       position_ids=pos[:, -1:] + 1 + torch.arange(cw, device=device), past_key_values=copy.deepcopy(cache),
                       use_cache=True).logits.float()
        # Token t of the continuation is predicted by position t-1, and token 0 by the prefix's last.
        lp = torch.cat([first_lp[:, None], torch.log_softmax(logits[:, :-1], -1)], 1)
        tok_lp = lp.gather(2, cont_t[..., None])[..., 0]
        sums = (tok_lp * torch.from_numpy(tmask).to(device)).sum(1).tolist()
        for r, i in enumerate(rows):
            if i is not None:
                out[i] = sums[r]


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
