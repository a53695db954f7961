"""Depth-first sampling: every completion of a prompt whose probability stays at or above a threshold.

Greedy decoding gives each view one answer; the right grid is often the model's second or third guess (issue 24:
for 57% of the test inputs the right grid is not among the five best candidates). The ARChitects take instead every
completion whose probability is at least `min_prob` (arXiv 2505.07859): since every prefix of such a completion is at
least as likely as the completion, a search that drops a branch as soon as its cumulative probability falls below
`min_prob` loses none of them, and the completions are disjoint events, so there are at most 1 / `min_prob` of them.

`sample_above` runs that search for many prompts at once, with the engine's pieces (left-padded prompts, each row
through its own adapter, the model's own position ids) and one KV cache per batch: rows are the live branches of
every prompt of the batch; a step feeds each branch its last token, and a branch that forks has its cache row copied
(`reorder_cache`), one that ends leaves the batch. It visits the tree level by level instead of one branch to its
end at a time: the set found is the same, and each level is one batched forward pass. Memory is bounded: a batch
holds at most as many rows as the token budget allows, and branches beyond them wait in a queue, to be resumed
later from their prompt and the tokens they have so far (prefilled again, exactly as far as they got).

With `keep_greedy` the greedy completion is always among them, however unlikely (its branch is never dropped), so
the candidates of a view are never fewer than greedy decoding gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from testtime.data.encode import Codec
from testtime.model.lora import Adapters
from testtime.model.training import autocast
from testtime.stages.engine import (
    Generated,
    auto_token_budget,
    cache_keyword,
    left_pad,
    next_positions,
    prompt_positions,
)

# A batch starts with at most this share of the rows its token budget holds: branches fork, and a fork beyond the
# rows waits in the queue (to be prefilled again), which costs more than a smaller first batch.
GROWTH = 2


@dataclass(frozen=True)
class Branch:
    """A partial completion: the prompt it continues, its tokens so far, their log-probability, and whether every
    token so far was the likeliest (the greedy path)."""

    prompt: int
    tokens: tuple[int, ...]
    logprob: float
    greedy: bool


@torch.no_grad()
def sample_above(model: nn.Module, prompts: Sequence[np.ndarray], max_new: Sequence[int], codec: Codec, *,
                 min_prob: float, keep_greedy: bool = True, token_budget: int | None = None,
                 adapters: Adapters | None = None) -> list[list[Generated]]:
    """Every completion of each prompt (a stop token ends one, as do `max_new[i]` tokens) whose probability is at
    least `min_prob`, with (`keep_greedy`) the greedy completion too; per prompt, likeliest first. Prompt i goes
    through `adapters` slot i (if any). A batch holds at most `token_budget` (prompt + answer) tokens of rows (None:
    `engine.auto_token_budget`)."""
    if not 0 < min_prob <= 1:
        raise ValueError(f"min_prob must be > 0 and <= 1, got {min_prob}")
    budget = token_budget or auto_token_budget(model)
    floor = math.log(min_prob)
    limits = [max(1, int(m)) for m in max_new]
    found: list[list[Generated]] = [[] for _ in prompts]
    width = [len(p) + m for p, m in zip(prompts, limits, strict=True)]
    queue = sorted((Branch(i, (), 0.0, True) for i in range(len(prompts))), key=lambda b: width[b.prompt])
    while queue:
        rows = 0
        while rows < len(queue) and GROWTH * (rows + 1) * width[queue[rows].prompt] <= budget:
            rows += 1
        rows = max(1, rows)
        batch, queue = queue[:rows], queue[rows:]
        cap = max(rows, budget // max(width[b.prompt] for b in batch))
        waiting = _search(model, prompts, limits, codec, batch, cap, floor, keep_greedy, adapters, found)
        if waiting:  # rare: keep the queue ordered by width, so batches stay of like rows
            queue = sorted(queue + waiting, key=lambda b: width[b.prompt])
    if adapters is not None:
        adapters.use(None, next(model.parameters()).device)
    return [sorted(f, key=lambda g: (-g.logprob, g.tokens)) for f in found]


def _search(model: nn.Module, prompts: Sequence[np.ndarray], limits: Sequence[int], codec: Codec,
            live: list[Branch], cap: int, floor: float, keep_greedy: bool, adapters: Adapters | None,
            found: list[list[Generated]]) -> list[Branch]:
    """One batch: the branches `live` prefilled, then extended a level at a time until none is left, each completion
    into `found[prompt]`. Returns the branches that did not fit in `cap` rows."""
    device = next(model.parameters()).device
    stops = set(codec.stop_ids)
    kw = cache_keyword(model)
    ids, attn = left_pad([np.concatenate([prompts[b.prompt], np.asarray(b.tokens, dtype=np.int64)]) for b in live],
                         codec.pad_id, device)
    pos = prompt_positions(model, ids, attn)
    cache = DynamicCache(config=model.config)
    if adapters is not None:
        adapters.use([b.prompt for b in live], device)
    with autocast(device):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, **{kw: cache}, use_cache=True,
                       logits_to_keep=1).logits[:, -1]
    pos = next_positions(model, pos[:, -1:], ids[:, -1:])
    length = ids.shape[1]
    waiting: list[Branch] = []
    while True:
        lp = torch.log_softmax(logits.float(), -1)
        total = torch.tensor([b.logprob for b in live], device=device)[:, None] + lp
        best = lp.argmax(-1)
        keep = total >= floor
        if keep_greedy:
            greedy = torch.tensor([b.greedy for b in live], device=device)
            keep[greedy, best[greedy]] = True
        where = keep.nonzero().tolist()  # one host sync a level; at most 1/min_prob + 1 entries a prompt
        values = total[keep].tolist()  # row-major, as nonzero() lists them
        best_l = best.tolist()
        children: list[tuple[int, Branch]] = []
        for (r, t), v in zip(where, values, strict=True):
            b = live[r]
            tokens = (*b.tokens, t)
            if t in stops or len(tokens) >= limits[b.prompt]:
                found[b.prompt].append(Generated(list(tokens), v))
            else:
                children.append((r, Branch(b.prompt, tokens, v, b.greedy and t == best_l[r])))
        if not children:
            return waiting
        if len(children) > cap:  # the likeliest go on here; the rest wait, to be resumed from their tokens
            children.sort(key=lambda c: -c[1].logprob)
            waiting += [b for _, b in children[cap:]]
            children = children[:cap]
        parents = [r for r, _ in children]
        if parents != list(range(len(live))):  # a fork or an end: the cache rows follow their branches
            index = torch.tensor(parents, device=device)
            cache.reorder_cache(index)
            attn, pos = attn[index], pos[index]
            if adapters is not None:
                adapters.use([b.prompt for _, b in children], device)
        live = [b for _, b in children]
        token = torch.tensor([[b.tokens[-1]] for b in live], device=device)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        with autocast(device):
            logits = model(input_ids=token, attention_mask=attn, position_ids=pos, **{kw: cache}, use_cache=True,
                           cache_position=torch.tensor([length], device=device)).logits[:, -1]
        pos = next_positions(model, pos, token)
        length += 1
