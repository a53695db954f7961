"""Augmented inference: solve each test input under many invertible views, map answers back, vote.

Generation is batched across every view of every task in flight, with a KV cache, left
padding, length-sorted batches under a token budget, and a per-sequence stop (end token or
the answer size the task allows), so inference is not a Python loop over single sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import StaticCache

from testtime.augment import Transform, dihedral_views
from testtime.encode import Codec, TooLongError, encode_example
from testtime.tasks import Example, Task
from testtime.vote import Prediction


@dataclass
class PredictConfig:
    views: int = 8  # D8 elements to solve under (1: identity only, plain greedy)
    orders: int = 1  # demo orders per D8 element (extra orders vote within that element's group)
    max_len: int = 8192
    token_budget: int = 1 << 20  # (prompt + answer) tokens per generation batch
    per_group: int = 3  # candidates each view group keeps before the vote across groups
    seed: int = 0


@dataclass(frozen=True)
class Query:
    task: int  # index into the task list (and adapter index when adapters are in place)
    test: int  # which test input
    view: Transform
    group: str
    prompt: np.ndarray
    max_new: int


def make_queries(tasks: Sequence[Task], codec: Codec, cfg: PredictConfig) -> tuple[list[Query], list[str]]:
    """Every (task, test input, view) prompt; also the problems met (a task that fits no budget)."""
    queries: list[Query] = []
    problems: list[str] = []
    rng = np.random.default_rng(cfg.seed)
    for ti, task in enumerate(tasks):
        n = len(task.train)
        for vi, view in enumerate(dihedral_views()[: cfg.views]):
            for oi in range(cfg.orders):
                order = None if oi == 0 else tuple(int(i) for i in rng.permutation(n))
                v = Transform(view.d8, view.colors, order)
                vt = v.apply(task)
                for qi, test in enumerate(vt.test):
                    try:
                        enc = encode_example(codec, vt.train, Example(test.input), max_len=cfg.max_len)
                    except TooLongError as e:
                        if vi == 0 and oi == 0:
                            problems.append(f"task {task.id} test {qi}: {e}")
                        continue
                    budget = codec.answer_budget([vt.train[i] for i in enc.demos_used], test.input)
                    queries.append(Query(ti, qi, v, view.name, enc.input_ids, min(budget, cfg.max_len - len(enc.input_ids))))
    return queries, problems


@dataclass
class Generated:
    tokens: list[int]
    logprob: float


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    prompts: Sequence[np.ndarray],
    max_new: Sequence[int],
    codec: Codec,
    *,
    token_budget: int = 1 << 20,
    adapter_index: Sequence[int] | None = None,
    select: Callable[[torch.Tensor | None], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Generated]:
    """Greedy decoding of many prompts at once; row i may use adapter adapter_index[i]."""
    device = next(model.parameters()).device
    stop = torch.tensor(sorted(codec.stop_ids), device=device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + max_new[i])
    results: list[Generated | None] = [None] * len(prompts)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = len(prompts[i]) + max_new[i]
        if cur and (len(cur) + 1) * width > token_budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for batch in batches:
        b = len(batch)
        width = max(len(prompts[i]) for i in batch)
        ids = np.full((b, width), codec.pad_id, dtype=np.int64)
        attn = np.zeros((b, width), dtype=np.int64)
        for r, i in enumerate(batch):
            ids[r, width - len(prompts[i]):] = prompts[i]
            attn[r, width - len(prompts[i]):] = 1
        ids_t = torch.from_numpy(ids).to(device)
        attn_t = torch.from_numpy(attn).to(device)
        pos = (attn_t.cumsum(1) - 1).clamp(min=0)
        limit = torch.tensor([max_new[i] for i in batch], device=device)
        if select is not None and adapter_index is not None:
            select(torch.tensor([adapter_index[i] for i in batch], device=device))
        steps = int(limit.max())
        # A cache allocated once for the whole answer: a growing cache copies itself at every step.
        cache = StaticCache(config=model.config, max_cache_len=width + steps)
        with autocast:
            out = model(input_ids=ids_t, attention_mask=attn_t, position_ids=pos, past_key_values=cache,
                        use_cache=True, logits_to_keep=1, cache_position=torch.arange(width, device=device))
        toks = torch.full((b, steps), codec.pad_id, dtype=torch.long, device=device)
        logp = torch.zeros(b, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        last_pos = pos[:, -1:]
        for s in range(steps):
            lp = torch.log_softmax(out.logits[:, -1].float(), -1)
            best, nxt = lp.max(-1)
            nxt = torch.where(done, codec.pad_id, nxt)
            toks[:, s] = nxt
            logp += torch.where(done, 0.0, best)
            done |= torch.isin(nxt, stop) | (s + 1 >= limit)
            # One host sync every 8 steps keeps the GPU queue full while still stopping early.
            if s + 1 == steps or (s % 8 == 7 and bool(done.all())):
                break
            attn_t = torch.cat([attn_t, torch.ones(b, 1, dtype=attn_t.dtype, device=device)], 1)
            last_pos = last_pos + 1
            with autocast:
                out = model(input_ids=nxt[:, None], attention_mask=attn_t, position_ids=last_pos,
                            past_key_values=cache, use_cache=True,
                            cache_position=torch.tensor([width + s], device=device))
        toks_l = toks.cpu().tolist()
        logp_l = logp.cpu().tolist()
        for r, i in enumerate(batch):
            row = toks_l[r]
            results[i] = Generated(row[: max_new[i]], logp_l[r])
        if progress:
            progress(b)
        del cache, out
    if select is not None:
        select(None)
    return results  # type: ignore[return-value]


@dataclass
class TaskPredictions:
    """All view predictions for one task: predictions[test index] -> list of Prediction."""

    predictions: list[list[Prediction]]
    invalid: int
    generated_tokens: int


def predict_tasks(
    model: nn.Module,
    tasks: Sequence[Task],
    codec: Codec,
    cfg: PredictConfig,
    *,
    select: Callable[[torch.Tensor | None], None] | None = None,
    use_adapters: bool = False,
    adapter_of: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[TaskPredictions], list[str]]:
    """Solve every test input of every task under every view; answers come back in the original frame.

    With adapters, tasks[i] goes through adapter slot `adapter_of[i]` (default i).
    """
    queries, problems = make_queries(tasks, codec, cfg)
    slot = list(range(len(tasks))) if adapter_of is None else list(adapter_of)
    gens = greedy_generate(
        model, [q.prompt for q in queries], [q.max_new for q in queries], codec,
        token_budget=cfg.token_budget,
        adapter_index=[slot[q.task] for q in queries] if use_adapters else None,
        select=select, progress=progress,
    )
    out = [TaskPredictions([[] for _ in t.test], 0, 0) for t in tasks]
    for q, g in zip(queries, gens, strict=True):
        dec = codec.decode_grid(g.tokens)
        tp = out[q.task]
        tp.generated_tokens += next((n + 1 for n, t in enumerate(g.tokens) if t in codec.stop_ids), len(g.tokens))
        if dec.grid is None:
            tp.invalid += 1
            tp.predictions[q.test].append(Prediction(q.group, None, g.logprob))
        else:
            tp.predictions[q.test].append(Prediction(q.group, q.view.invert_grid(dec.grid), g.logprob))
    return out, problems
