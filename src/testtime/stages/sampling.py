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
    least `min_prob`, with (`keep_greedy`) the greedy completion too; per prompt, the greedy one first (where found),
    then likeliest first. Prompt i goes
    through `adapters` slot i (if any). A batch holds at most `token_budget` (prompt + answer) tokens of rows (None:
    `engine.auto_token_budget`)."""
    if not 0 < min_prob <= 1:
        raise ValueError(f"min_prob must be > 0 and <= 1, got {min_prob}")
    budget = token_budget or auto_token_budget(model)
    floor = math.log(min_prob)
    limits = [max(1, int(m)) for m in max_new]
    found: list[list[tuple[Generated, bool]]] = [[] for _ in prompts]  # each completion, and whether greedy
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
    # The greedy completion first (a view's first answer is what greedy decoding gives, as a record's `greedy` and the
    # vote's ties read it), then the likeliest.
    return [[g for g, _ in sorted(f, key=lambda x: (not x[1], -x[0].logprob, x[0].tokens))] for f in found]


def _search(model: nn.Module, prompts: Sequence[np.ndarray], limits: Sequence[int], codec: Codec,
            live: list[Branch], cap: int, floor: float, keep_greedy: bool, adapters: Adapters | None,
            found: list[list[tuple[Generated, bool]]]) -> list[Branch]:
    """One batch: the branches `live` prefilled, then extended a level at a time until none is left, each completion
    into `found[prompt]`. Returns the branches that did not fit in `cap` rows.

    A row's state stays on the device (its tokens so far, their count and log-probability, whether it is the greedy
    path, its prompt and answer limit) and follows its branch through every fork; the host reads, a level, only
    how many branches there are and the tokens of the ones that end."""
    device = next(model.parameters()).device
    stops = torch.tensor(sorted(codec.stop_ids), device=device)
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
    toks = torch.full((len(live), max(limits[b.prompt] for b in live)), codec.pad_id, dtype=torch.long)
    for r, b in enumerate(live):
        toks[r, : len(b.tokens)] = torch.tensor(b.tokens, dtype=torch.long)
    toks = toks.to(device)
    count = torch.tensor([len(b.tokens) for b in live], device=device)
    cum = torch.tensor([b.logprob for b in live], device=device)
    greedy = torch.tensor([b.greedy for b in live], device=device)
    owner = torch.tensor([b.prompt for b in live], device=device)
    limit = torch.tensor([limits[b.prompt] for b in live], device=device)
    waiting: list[Branch] = []
    while True:
        lp = torch.log_softmax(logits.float(), -1)
        total = cum[:, None] + lp
        best = lp.argmax(-1)
        keep = total >= floor
        if keep_greedy:
            keep[greedy, best[greedy]] = True
        rows, tok = keep.nonzero(as_tuple=True)  # at most 1/min_prob + 1 a prompt
        value = total[rows, tok]
        n = count[rows] + 1
        ends = torch.isin(tok, stops) | (n >= limit[rows])
        seqs = toks[rows]
        seqs[torch.arange(len(rows), device=device), count[rows]] = tok
        on_greedy = greedy[rows] & (tok == best[rows])
        for r in ends.nonzero()[:, 0].tolist():  # one host sync a level; the completions' tokens only where some end
            found[int(owner[rows[r]])].append((Generated(seqs[r, : int(n[r])].tolist(), float(value[r])),
                                               bool(on_greedy[r])))
        go = ~ends
        parents, seqs, n, value, on_greedy = rows[go], seqs[go], n[go], value[go], on_greedy[go]
        children = len(parents)
        if children == 0:
            return waiting
        if children > cap:  # the likeliest go on here; the rest wait, to be resumed from their tokens
            order = torch.argsort(value, descending=True)
            for r in order[cap:].tolist():
                waiting.append(Branch(int(owner[parents[r]]), tuple(seqs[r, : int(n[r])].tolist()), float(value[r]),
                                      bool(on_greedy[r])))
            stay = torch.sort(order[:cap]).values
            parents, seqs, n, value, on_greedy = parents[stay], seqs[stay], n[stay], value[stay], on_greedy[stay]
        if children != len(owner) or not bool((parents == torch.arange(len(owner), device=device)).all()):
            # a fork or an end: the cache rows follow their branches
            cache.reorder_cache(parents)
            attn, pos, owner, limit = attn[parents], pos[parents], owner[parents], limit[parents]
            if adapters is not None:
                adapters.use(owner.tolist(), device)
        toks, count, cum, greedy = seqs, n, value, on_greedy
        token = toks[torch.arange(len(toks), device=device), count - 1][:, None]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        with autocast(device):
            logits = model(input_ids=token, attention_mask=attn, position_ids=pos, **{kw: cache}, use_cache=True,
                           cache_position=torch.tensor([length], device=device)).logits[:, -1]
        pos = next_positions(model, pos, token)
        length += 1
