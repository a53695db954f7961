"""Test-time training: a task's demonstrations become a small training set for its own LoRA adapter.

The recipe, top to bottom:
1. `build_dataset`: leave-one-out tasks from the demos (each demo in turn is the query, the
   others the context), each under a random invertible transformation (D8, colors, demo order),
   deduplicated and topped up to a fixed size. Only the demonstrations are used: never test outputs.
2. `train_adapters`: one fresh adapter per task, many tasks in one batch (`lora.MultiLoRA`), or one
   task through peft (`train_peft`), the reference path; both run the same loop and give the same adapter.
3. The caller predicts with the adapters in place (`predict`), then throws them away.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from testtime.augment import Transform, random_transform
from testtime.encode import Codec, Encoded, TooLongError, encode_example
from testtime.model import head_logits
from testtime.tasks import Task


@dataclass
class TTTConfig:
    samples: int = 32  # training sequences per task (unique ones, topped up by repetition)
    epochs: int = 2
    batch_size: int = 2  # sequences per task per step
    lr: float = 5e-4
    rank: int = 32
    alpha: float = 32.0
    targets: list[str] | None = None  # None: every linear layer of the transformer blocks
    warmup: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss_on_demos: bool = True  # also learn demo outputs from the 2nd on (the paper's demonstration loss)
    augment: bool = True  # D8 + color permutation + demo order per sample
    leave_one_out: bool = True  # False: each demo alone as a plain input->output pair
    shared: bool = False  # ablation: one adapter for all tasks of a batch
    max_len: int = 8192
    token_budget: int = 131072  # padded tokens per training step, all tasks together
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.samples / self.batch_size)


def task_seed(seed: int, task_id: str) -> int:
    return zlib.crc32(f"{seed}:{task_id}".encode())


def build_dataset(task: Task, codec: Codec, cfg: TTTConfig) -> list[Encoded]:
    """The task's TTT sequences, from its demonstrations only."""
    rng = np.random.default_rng(task_seed(cfg.seed, task.id))
    demos = task.train
    n = len(demos)
    seen: set[bytes] = set()
    out: list[Encoded] = []
    for attempt in range(cfg.samples * 20):
        if len(out) >= cfg.samples:
            break
        q = attempt % n
        context = tuple(d for i, d in enumerate(demos) if i != q) if cfg.leave_one_out else ()
        sub = Task(task.id, context, (demos[q],))
        # The first pass over the demos is untransformed, so the task as given is always learned.
        if cfg.augment and attempt >= n:
            sub = random_transform(rng, len(context)).apply(sub)
        elif cfg.augment and len(context) > 1:
            sub = Transform(order=tuple(int(i) for i in rng.permutation(len(context)))).apply(sub)
        try:
            enc = encode_example(codec, sub.train, sub.test[0], max_len=cfg.max_len,
                                 loss_on_demos=cfg.loss_on_demos, min_demos=0)
        except TooLongError:
            continue
        key = enc.input_ids.tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append(enc)
    if not out:
        raise TooLongError(f"task {task.id}: no demonstration fits in {cfg.max_len} tokens")
    base = list(out)
    while len(out) < cfg.samples:
        out.append(base[len(out) % len(base)])
    return out


def target_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, rows: list[slice]) -> torch.Tensor:
    """Mean next-token loss on masked tokens, computed per row group and summed across groups.

    Only target positions go through the output head, so a model with a large vocabulary
    does not materialize logits for every token. Sequences are right-padded and run
    without an attention mask: under causal attention real tokens never see the padding.
    """
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    sel = mask[:, 1:]  # position t predicts token t+1
    logits = head_logits(model, hidden[:, :-1][sel])
    per_tok = nn.functional.cross_entropy(logits, ids[:, 1:][sel], reduction="none")
    # Which group each selected token belongs to.
    row_of = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(sel)[sel]
    group_of_row = torch.empty(ids.shape[0], dtype=torch.long, device=ids.device)
    for g, s in enumerate(rows):
        group_of_row[s] = g
    groups = group_of_row[row_of]
    sums = torch.zeros(len(rows), device=ids.device).index_add_(0, groups, per_tok)
    counts = torch.zeros(len(rows), device=ids.device).index_add_(0, groups, torch.ones_like(per_tok))
    return sums / counts.clamp(min=1)


def _pad_right(seqs: Sequence[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s.input_ids
        mask[i, : len(s)] = s.loss_mask
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _schedule(cfg: TTTConfig, steps: int) -> Callable[[int], float]:
    warm = max(1, int(cfg.warmup * steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return f


def _clip_per_adapter(params: list[nn.Parameter], max_norm: float, stacked: bool) -> None:
    """Clip each adapter's gradient on its own, so adapters trained together stay independent."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    if stacked:
        sq = sum(g.float().pow(2).flatten(1).sum(1) for g in grads)  # [n_adapters]
    else:
        sq = sum(g.float().pow(2).sum() for g in grads).reshape(1)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))) if stacked else scale)


@dataclass
class TrainResult:
    losses: list[list[float]]  # per adapter, per step
    tokens: int


def train_adapters(
    model: nn.Module,
    params: list[nn.Parameter],
    datasets: Sequence[Sequence[Encoded]],
    cfg: TTTConfig,
    *,
    pad_id: int,
    select: Callable[[torch.Tensor | None], None] | None = None,
    stacked: bool = True,
    task_ids: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    steps: int | None = None,
    slots: Sequence[int] | None = None,
    round_index: int = 0,
) -> TrainResult:
    """Train adapter k on datasets[k], all in lockstep: each step takes `batch_size` sequences of every dataset.

    `select(index)` tells the model which adapter each row uses (None for peft, where there is one).
    `steps` (default `cfg.steps`) with its own warmup and cosine decay; `slots[k]` is the adapter slot of
    datasets[k] (default k), so a later round can go on training some of a group's adapters.
    `round_index` > 0 draws a different data order, so a second round does not replay the first.
    """
    device = params[0].device
    n = len(datasets)
    steps = cfg.steps if steps is None else steps
    slots = list(range(n)) if slots is None else list(slots)
    steps_per_epoch = math.ceil(cfg.samples / cfg.batch_size)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    orders = []
    for k in range(n):
        key = task_ids[k] if task_ids else str(k)
        rng = np.random.default_rng(task_seed(cfg.seed + 1, key if round_index == 0 else f"{key}#round{round_index}"))
        orders.append([rng.permutation(len(datasets[k])) for _ in range(epochs)])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, steps))
    losses = []
    tokens = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for step in range(steps):
        epoch, j = divmod(step, steps_per_epoch)
        seqs: list[Encoded] = []
        rows: list[slice] = []
        index: list[int] = []
        for k in range(n):
            pick = orders[k][epoch][j * cfg.batch_size: (j + 1) * cfg.batch_size]
            if len(pick) == 0:
                pick = orders[k][epoch][: cfg.batch_size]
            rows.append(slice(len(seqs), len(seqs) + len(pick)))
            seqs += [datasets[k][i] for i in pick]
            index += [slots[k]] * len(pick)
        ids, mask = _pad_right(seqs, pad_id, device)
        tokens += int(sum(len(s) for s in seqs))
        if select is not None:
            select(torch.tensor(index, device=device))
        with autocast:
            per_task = target_loss(model, ids, mask, rows)
        per_task.sum().backward()
        _clip_per_adapter(params, cfg.grad_clip, stacked)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(per_task.detach())
        if progress:
            progress(1)
    if select is not None:
        select(None)
    table = torch.stack(losses, 1).cpu().tolist() if losses else [[] for _ in range(n)]
    return TrainResult(losses=table, tokens=tokens)


def train_peft(model: nn.Module, dataset: Sequence[Encoded], cfg: TTTConfig, *, pad_id: int, task_id: str = "0",
               init: dict[str, torch.Tensor] | None = None):
    """The reference path: one task, one peft LoRA adapter. Returns (peft_model, TrainResult).

    `init` (names as `MultiLoRA.state`) sets lora_A so a test can start both paths alike.
    """
    from peft import LoraConfig, get_peft_model

    from testtime.lora import find_target_modules

    targets = cfg.targets or find_target_modules(model)
    peft_model = get_peft_model(model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=targets,
                                                  lora_dropout=0.0, bias="none"))
    named = dict(peft_model.named_parameters())
    if init is not None:
        with torch.no_grad():
            for key, value in init.items():
                module, _, kind = key.rpartition(".lora_")
                name = f"base_model.model.{module}.lora_{kind.split('.')[0]}.default.weight"
                named[name].copy_(value)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    result = train_adapters(peft_model, params, [dataset], cfg, pad_id=pad_id, stacked=False, task_ids=[task_id])
    return peft_model, result
