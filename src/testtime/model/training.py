"""Training primitives shared by every recipe that trains (test-time adapters, text adapters; pretraining may
import them too): the learning-rate schedules, right padding of a batch, the loss on target tokens, the
per-task seeds that make every random draw reproducible, and the stop on a diverged loss.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from testtime.data.encode import Encoded
from testtime.model.loading import head_logits


class TrainingDiverged(ValueError):
    """A NaN or infinite training loss. Training stops and writes nothing; the message is one line for a user."""


def check_finite(loss: float, step: int, what: str) -> None:
    """Raise TrainingDiverged when `loss` (at `step`, counted from 1) is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{what} diverged at step {step} (loss {loss}); nothing was written from it "
                               "(try a lower learning rate)")


def task_seed(seed: int, key: str) -> int:
    """A seed for one task (or adapter, or round), the same on every machine and in every process."""
    return zlib.crc32(f"{seed}:{key}".encode())


def warmup_cosine(steps: int, warmup: float, floor: float = 0.0, *, warmup_steps: int | None = None
                  ) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warmup over `warmup` of the steps (or `warmup_steps` steps;
    at least one), then a cosine decay from 1 to `floor` at the last step, and `floor` after it."""
    warm = max(1, warmup_steps if warmup_steps is not None else int(warmup * steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def decay_start(steps: int, decay_frac: float, align: int = 1) -> int:
    """How many steps `warmup_stable_decay` takes before its decay over the last `decay_frac` of `steps` (at least
    one step), rounded down to a multiple of `align`: pretraining exports the weights there at a log step, after
    the loss since the last one was checked, so diverged weights are never kept."""
    start = steps - max(1, round(decay_frac * steps))
    return start - start % align


def lr_schedule(kind: str, steps: int, warmup_steps: int, floor: float, decay_frac: float, align: int = 1
                ) -> Callable[[int], float]:
    """Pretraining's schedule of `steps` by name: "cosine" or "wsd" (warmup, stable, decay)."""
    if kind == "wsd":
        return warmup_stable_decay(steps, warmup_steps, floor, steps - decay_start(steps, decay_frac, align))
    return warmup_cosine(steps, 0.0, floor, warmup_steps=warmup_steps)


def warmup_stable_decay(steps: int, warmup_steps: int, floor: float, decay_steps: int) -> Callable[[int], float]:
    """Linear warmup over `warmup_steps` (at least one), then 1 until the last `decay_steps`, which fall from 1 to
    `floor` at the last step as 1 - sqrt (Hagele et al. 2024's cooldown), and `floor` after it. A long run cut into
    stretches continues from the weights at the decay's start (a stretch's `stable/`): the next stretch then picks up
    the run at its full rate, instead of re-warming a decayed model as a restarted cosine does."""
    warm = max(1, warmup_steps)
    start = steps - decay_steps

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if step < start:
            return 1.0
        t = min(1.0, (step - start + 1) / max(1, decay_steps))
        return floor + (1 - floor) * (1 - math.sqrt(t))

    return f


def pad_right(seqs: Sequence[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right to one width, and the loss mask (False on padding)."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s.input_ids
        mask[i, : len(s)] = s.loss_mask
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def target_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, rows: list[slice]) -> torch.Tensor:
    """Mean next-token loss on masked tokens, computed per row group and summed across groups.

    Only target positions go through the output head, so a model with a large vocabulary
    does not materialize logits for every token. Sequences are right-padded and run
    without an attention mask: under causal attention real tokens never see the padding.
    """
    hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    sel = mask[:, 1:]  # position t predicts token t+1
    logits = head_logits(model, hidden[:, :-1][sel])
    per_tok = nn.functional.cross_entropy(logits, ids[:, 1:][sel], reduction="none")
    # Which group each selected token belongs to.
    row_of = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(sel)[sel]
    group_of_row = torch.empty(ids.shape[0], dtype=torch.long, device=ids.device)
    for g, s in enumerate(rows):
        group_of_row[s] = g
    return group_means(per_tok, group_of_row[row_of], torch.ones_like(per_tok), len(rows))


def group_means(per_tok: torch.Tensor, groups: torch.Tensor, weights: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Each group's weighted mean of the token losses `per_tok` (0 for a group with no weight)."""
    sums = torch.zeros(n_groups, device=per_tok.device).index_add_(0, groups, per_tok * weights)
    counts = torch.zeros(n_groups, device=per_tok.device).index_add_(0, groups, weights)
    return sums / counts.clamp(min=1)


def static_target_loss(model: nn.Module, ids: torch.Tensor, pos: torch.Tensor, tgt: torch.Tensor, grp: torch.Tensor,
                       wt: torch.Tensor, n_groups: int) -> torch.Tensor:
    """`target_loss` over buffers of fixed shapes, with no host sync (so a CUDA graph can capture it): the target
    tokens come as flat positions `pos` into the [rows, width - 1] predicting positions, their ids `tgt`, their
    groups `grp` and weights `wt` (0 on the padding of a list longer than the step's targets)."""
    hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    flat = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, pos)
    return group_means(nn.functional.cross_entropy(head_logits(model, flat), tgt, reduction="none"), grp, wt, n_groups)


def autocast(device: torch.device, *, cache: bool = True):
    """bf16 autocast on a GPU, none on a CPU. `cache=False` (casts made afresh at every use) is what PyTorch's notes on
    CUDA graphs ask of autocast inside a capture."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return torch.autocast("cpu", enabled=False)
