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

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import nn

from testtime.core.config import LENGTH, LR, SEED, TOKENS, ConfigError, OneOf, Range
from testtime.data.augment import Transform, random_transform
from testtime.data.encode import Codec, Encoded, TooLongError, encode_example
from testtime.data.tasks import Task, leave_one_out
from testtime.model.lora import (
    ADAPTER_KINDS,
    Adapters,
    MultiLoRA,
    attach_multi_lora,
    find_target_modules,
    target_linears,
)
from testtime.model.task_vectors import attach_task_vectors
from testtime.model.training import autocast, check_finite, pad_right, target_loss, task_seed, warmup_cosine
from testtime.stages.engine import available_memory
from testtime.stages.ttt_graph import MIN_GRAPH_STEPS, GraphedStep, StaticBatch

DEFAULT_EPOCHS = 2


@dataclass
class TTTConfig:
    samples: Annotated[int, Range(1, 4096)] = 32  # training sequences per task (unique ones, topped up by repetition)
    # None: the evaluation policy's (see policy.Policy.epochs), else DEFAULT_EPOCHS
    epochs: Annotated[int | None, Range(1, 100)] = None
    batch_size: Annotated[int, Range(1, 1024)] = 2  # sequences per task per step
    # "lora": a low-rank adapter per task; "full": a full-weight update of the same layers per task (rank and
    # alpha then do not apply). Full updates are usually trained with a lower lr (say 1e-4) than LoRA's; the
    # default lr is LoRA's, and none has been tuned for full here.
    adapter: Annotated[str, OneOf(*ADAPTER_KINDS)] = "lora"
    lr: Annotated[float, LR] = 5e-4
    rank: Annotated[int, Range(1, 1024)] = 32  # LoRA only
    alpha: Annotated[float, Range(0, 1e4, lo_open=True)] = 32.0  # LoRA only
    targets: list[str] | None = None  # None: every linear layer of the transformer blocks
    warmup: Annotated[float, Range(0, 1)] = 0.1  # a fraction of the steps
    weight_decay: Annotated[float, Range(0, 1)] = 0.0
    grad_clip: Annotated[float, Range(0, 1e4)] = 1.0  # 0: no clipping
    loss_on_demos: bool = True  # also learn demo outputs from the 2nd on (the paper's demonstration loss)
    augment: bool = True  # D8 + color permutation + demo order per sample
    leave_one_out: bool = True  # False: each demo alone as a plain input->output pair
    shared: bool = False  # ablation: one adapter for all tasks of a batch
    max_len: Annotated[int, LENGTH] = 8192
    token_budget: Annotated[int, TOKENS] = 131072  # padded tokens per training step, all tasks together
    # Capture the training step as a CUDA graph and replay it (a GPU only; `stages.ttt_graph`): every step is padded
    # to the widest sequence, so it pays where the host's launches bound a step (one task at a time), not in a
    # batch of many tasks. None: as `wants_graphs` decides (banks of up to GRAPHED_ADAPTERS LoRA adapters). One task
    # at a time on one H100, warm, a solve took 2.22 s median with it against 7.95 without
    # (results/h100-latency-2026-12-06.md), and 2.86 s with two adapters (results/h100-a2-2026-12-07.md).
    cuda_graphs: bool | None = None
    seed: Annotated[int, SEED] = 0

    def __post_init__(self) -> None:
        if self.targets is not None and not self.targets:  # [] would read as None: every linear layer
            raise ConfigError("ttt_cfg: targets must name at least one layer, got []; leave it out (or null) for "
                              "every linear layer of the transformer blocks")

    @property
    def steps(self) -> int:
        return (self.epochs or DEFAULT_EPOCHS) * math.ceil(self.samples / self.batch_size)


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
        sub = leave_one_out(task, q) if cfg.leave_one_out else Task(task.id, (), (demos[q],))
        context = sub.train
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


def _lr_rescale(lr_scales: Sequence[float] | None, slots: Sequence[int], stacked: bool, device
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(slots, their scales) of the adapters whose learning rate is not the configured one; None if none."""
    if lr_scales is None or all(s == 1 for s in lr_scales):
        return None
    if not stacked:
        raise ValueError("a learning rate per adapter needs stacked adapters (a MultiLoRA bank)")
    scaled = [(slot, s) for slot, s in zip(slots, lr_scales, strict=True) if s != 1]
    return (torch.tensor([slot for slot, _ in scaled], device=device),
            torch.tensor([s for _, s in scaled], device=device, dtype=torch.float32))


def _scale_update(params: list[nn.Parameter], before: list[torch.Tensor], slots: torch.Tensor,
                  scales: torch.Tensor) -> None:
    """Scale the step just taken by these slots' adapters. One optimizer serves the whole bank (a slot is a slice of
    each stacked tensor, not a parameter group of its own); AdamW's step (weight decay included) is linear in the
    learning rate and its moments do not depend on it, so scaling the step is training at lr * scale."""
    with torch.no_grad():
        for p, old in zip(params, before, strict=True):
            s = scales.view(-1, *([1] * (p.dim() - 1))).to(p.dtype)
            p[slots] = old + (p[slots] - old) * s


@dataclass
class TrainResult:
    losses: list[list[float]]  # per adapter, per step
    tokens: int
    graph_steps: int = 0  # the steps a CUDA graph replayed (`TTTConfig.cuda_graphs`)


# The most adapters in a bank whose TTT steps replay as CUDA graphs unless told: one task's default two.
GRAPHED_ADAPTERS = 2


def wants_graphs(cfg: TTTConfig, n_adapters: int, device: torch.device, stacked: bool = True) -> bool:
    """Whether a run's TTT steps are captured as CUDA graphs: `cfg.cuda_graphs`, or where that is None, when the run
    trains at most GRAPHED_ADAPTERS LoRA adapters of our own (`stacked`): a bank that small (a lone task's two, or two
    tasks' one each) is bound by the host's launches (as many for two adapters as for one), a batch of many tasks by
    the device, where padding every step to the widest sequence costs. Those cases are the ones measured (the GPU
    lane's test, results/h100-latency-2026-12-06.md, results/h100-a2-2026-12-07.md); peft's adapters and full-weight
    training replay only when asked."""
    if cfg.cuda_graphs is not None:
        return device.type == "cuda" and cfg.cuda_graphs
    return device.type == "cuda" and n_adapters <= GRAPHED_ADAPTERS and stacked and cfg.adapter == "lora"


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
    lr_scales: Sequence[float] | None = None,
    static: bool | None = None,
) -> TrainResult:
    """Train adapter k on datasets[k], all in lockstep: each step takes `batch_size` sequences of every dataset.

    `select(index)` tells the model which adapter each row uses (None for peft, where there is one).
    `steps` (default `cfg.steps`) with its own warmup and cosine decay; `slots[k]` is the adapter slot of
    datasets[k] (default k), so a later round can go on training some of a group's adapters.
    `round_index` > 0 draws a different data order, so a second round does not replay the first.
    `lr_scales[k]` multiplies the learning rate of datasets[k]'s adapter (stacked adapters only).
    `static` runs every step over buffers of fixed shapes (`ttt_graph`; default: where `wants_graphs` says so, and
    each step is then captured once as a CUDA graph and replayed).
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

    def batch(step: int) -> tuple[list[Encoded], list[slice], list[int]]:
        """Step `step`'s sequences, the row range of each dataset among them, and each row's adapter slot."""
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
        return seqs, rows, index

    graphs_wanted = wants_graphs(cfg, n, device, stacked)
    if static is None:
        static = graphs_wanted and steps >= MIN_GRAPH_STEPS
    static = static and steps > 0
    graphs = static and graphs_wanted
    # Fixed steps read their learning rate from a tensor, written before each step (a captured step reads it on the
    # device); the others take it from the scheduler.
    lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device) if static else cfg.lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                            fused=device.type == "cuda", capturable=graphs)
    schedule = warmup_cosine(steps, cfg.warmup)
    sched = None if static else torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    rescale = _lr_rescale(lr_scales, slots, stacked, device)
    losses = []
    tokens = 0

    def update(per_task: torch.Tensor) -> None:
        per_task.sum().backward()
        _clip_per_adapter(params, cfg.grad_clip, stacked)
        before = [p.detach()[rescale[0]] for p in params] if rescale else None  # indexing copies
        opt.step()
        if rescale:
            _scale_update(params, before, *rescale)

    if static:
        # Every step the same rows: batch_size per dataset, padded where an epoch's last batch is short.
        fixed_rows = [slice(k * cfg.batch_size, (k + 1) * cfg.batch_size) for k in range(n)]
        buffers = StaticBatch.fitting([batch(t)[:2] for t in range(steps)], n * cfg.batch_size, pad_id, device)
        step_loss = torch.zeros(n, device=device)

        def body() -> None:
            with autocast(device, cache=not graphs):
                per_task = buffers.loss(model)
            update(per_task)
            step_loss.copy_(per_task.detach())

        run_step = GraphedStep(body, lambda: opt.zero_grad(set_to_none=True), device, graphs)
        if select is not None:
            select(torch.tensor([slots[k] for k in range(n) for _ in range(cfg.batch_size)], device=device))
    for step in range(steps):
        seqs, rows, index = batch(step)
        tokens += int(sum(len(s) for s in seqs))
        if static:
            buffers.load(seqs, rows, fixed_rows)
            opt.param_groups[0]["lr"].fill_(cfg.lr * schedule(step))
            run_step()
            losses.append(step_loss.clone())
        else:
            ids, mask = pad_right(seqs, pad_id, device)
            if select is not None:
                select(torch.tensor(index, device=device))
            with autocast(device):
                per_task = target_loss(model, ids, mask, rows)
            update(per_task)
            opt.zero_grad(set_to_none=True)
            losses.append(per_task.detach())
        if sched is not None:
            sched.step()
        if progress:
            progress(1)
    opt.zero_grad(set_to_none=True)
    if select is not None:
        select(None)
    table = torch.stack(losses, 1).cpu().tolist() if losses else [[] for _ in range(n)]
    for k, row in enumerate(table):  # one check after training, not a host sync per step
        bad = next((i for i, x in enumerate(row) if not math.isfinite(x)), None)
        if bad is not None:
            name = f"task {task_ids[k]}" if task_ids else f"adapter {k}"
            check_finite(row[bad], bad + 1, f"test-time training of {name}")
    return TrainResult(losses=table, tokens=tokens, graph_steps=run_step.replays if static else 0)


def fresh_adapters(model: nn.Module, lora: MultiLoRA | None, task_ids: Sequence[str], cfg: TTTConfig) -> MultiLoRA:
    """Adapters for a group of tasks, freshly initialized: one per task (seeded by its id), or with `cfg.shared`
    (the ablation) one for all. `lora` is kept when it has slots enough, else replaced. A model with a per-task
    embedding also learns a task vector in each slot (`testtime.model.task_vectors`)."""
    need = 1 if cfg.shared else len(task_ids)
    if lora is None or lora.n_adapters < need or lora.kind != cfg.adapter:
        if lora is not None:
            lora.detach()
        lora = attach_multi_lora(model, need, rank=cfg.rank, alpha=cfg.alpha, targets=cfg.targets, seed=cfg.seed,
                                 kind=cfg.adapter)
        attach_task_vectors(lora)
    lora.reset(cfg.seed, ["shared"] if cfg.shared else list(task_ids))
    return lora


# A full adapter holds, per weight of the target layers, its update, the update's gradient and AdamW's two moments,
# all float32, and on a GPU a training step keeps the bfloat16 copy of the update autocast made for the backward;
# the share of the memory free when groups are planned they may take (the rest: the frozen model's activations, the
# generation cache, which sizes itself to what is left). An estimate, not a measurement.
FULL_BYTES_PER_WEIGHT = 4 * 4 + 2
FULL_MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}  # less on a CPU, where running out kills the process


def target_weights(model: nn.Module, targets: list[str] | None = None) -> int:
    """Weights of the linear layers adapters attach to (`lora.find_target_modules`, or `targets`)."""
    return sum(m.weight.numel() for _, m in target_linears(model, targets))


def max_tasks_together(model: nn.Module, cfg: TTTConfig) -> int | None:
    """The most tasks whose adapters may train together, by memory: a full adapter per task is a copy of the target
    weights and its optimizer state (FULL_BYTES_PER_WEIGHT each), so a group of full adapters is capped at
    FULL_MEMORY_SHARE of the memory available now; None (no cap) for LoRA, whose adapters are small, and for the
    shared ablation's one adapter."""
    if cfg.adapter != "full" or cfg.shared:
        return None
    device = next(model.parameters()).device
    room = FULL_MEMORY_SHARE.get(device.type, FULL_MEMORY_SHARE["cuda"]) * available_memory(device)
    return max(1, int(room // (FULL_BYTES_PER_WEIGHT * max(1, target_weights(model, cfg.targets)))))


def group_adapters(lora: MultiLoRA, n: int, cfg: TTTConfig) -> Adapters:
    """How the group's n tasks predict: task i through its own adapter, or (shared) all through the one."""
    return Adapters(lora, (0,) * n) if cfg.shared else Adapters.per_item(lora, n)


def train_group(model: nn.Module, lora: MultiLoRA, datasets: Sequence[Sequence[Encoded]], cfg: TTTConfig, *,
                pad_id: int, task_ids: Sequence[str], slots: Sequence[int] | None = None, steps: int | None = None,
                round_index: int = 0, progress: Callable[[int], None] | None = None,
                lr_scales: Sequence[float] | None = None) -> TrainResult:
    """Train a group's adapters (`fresh_adapters`) on datasets[k], the adapter of task k in `slots[k]`.

    With `cfg.shared` the one adapter learns every dataset at once, from the same steps (each step takes
    `batch_size` sequences per task from the merged data); every task gets its losses. `lr_scales[k]` multiplies
    the learning rate of adapter k (an ensemble's members, `stages.ensemble`).
    """
    if not cfg.shared:
        return train_adapters(model, lora.parameters(), datasets, cfg, pad_id=pad_id, select=lora.use,
                              task_ids=list(task_ids), progress=progress, steps=steps, slots=slots,
                              round_index=round_index, lr_scales=lr_scales)
    n = len(datasets)
    # one adapter, but a batch of n tasks' sequences a step: by default no graphs unless n is one
    run = dataclasses.replace(cfg, samples=cfg.samples * n, batch_size=cfg.batch_size * n,
                              cuda_graphs=False if cfg.cuda_graphs is None and n > 1 else cfg.cuda_graphs)
    merged = [s for d in datasets for s in d]
    result = train_adapters(model, lora.parameters(), [merged], run, pad_id=pad_id, select=lora.use,
                            task_ids=["shared"], progress=progress, steps=steps, round_index=round_index)
    return TrainResult(losses=result.losses * n, tokens=result.tokens)


def train_peft(model: nn.Module, dataset: Sequence[Encoded], cfg: TTTConfig, *, pad_id: int, task_id: str = "0",
               init: dict[str, torch.Tensor] | None = None):
    """The reference path: one task, one peft LoRA adapter. Returns (peft_model, TrainResult).

    `init` (names as `MultiLoRA.state`) sets lora_A so a test can start both paths alike.
    """
    from peft import LoraConfig, get_peft_model

    if cfg.adapter != "lora":
        raise ConfigError(f"the peft reference path trains LoRA adapters only, not adapter {cfg.adapter!r}")
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
