"""Pretraining recipe for the base model: augmented ARC training tasks, packed or length-bucketed batches, exact
resume.

Read top to bottom: config -> model -> loop -> export; the data comes from `testtime.data.sources` through
`testtime.data.pretrain_data`, a step's loss from `testtime.recipes.pretrain_step`, the checkpoint from
`testtime.recipes.checkpoint`. One call does it all:

    pretrain(PretrainConfig.from_json("configs/pretrain-base.json"), "runs/pretrain")

The run folder holds `log.jsonl`, `loss.png`, `checkpoint/` (everything needed to continue bit-exactly)
and, once the schedule is done, `model/` (a standard Hugging Face folder, see `testtime.model.loading`).
Calling `pretrain` again on the same folder continues from `checkpoint/`.

With `init_from` (configs/finetune-gemma3-arc.json) the same loop is the paper's format fine-tune ("FT") of
a pretrained Hugging Face LM: tasks go through its own tokenizer in the text grid format, the output head
runs on target tokens only (`loss_sum_targets`), and the export carries the tokenizer.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from testtime.core.config import LENGTH, LR, MINUTES, SEED, TOKENS, ConfigError, OneOf, Range, check, read_json, typed
from testtime.data.encode import Codec
from testtime.data.pretrain_data import (
    Batch,
    Prefetcher,
    SequenceSampler,
    batch_stream,
    round_up,
    source_probes,
    validation_set,
)
from testtime.data.sources import FORBIDDEN_DATASETS, Source, load_sources, split_holdout
from testtime.model.attention import BLOCK_SIZES, KINDS, packed_mask, use_document_attention
from testtime.model.grid_model import is_grid_model
from testtime.model.loading import ModelConfig, save_model
from testtime.model.training import check_finite, decay_start, lr_schedule
from testtime.recipes import checkpoint as run_state
from testtime.recipes.pretrain_model import init_model, task_rows
from testtime.recipes.pretrain_step import (
    OPTIMIZERS,
    PEAK_BF16_FLOPS,
    ddp_loss,
    flops_per_token,
    held_out_solved,
    loss_module,
    loss_sum,
    loss_sum_targets,
    make_optimizer,
    over_ranks,
    validate,
)
from testtime.report.pretrain_log import plot_loss, read_log

__all__ = ["PretrainConfig", "PretrainResult", "pretrain", "read_log", "plot_loss"]

PACKING_NEEDS_GRID = ("packing needs our grid model with grid positions (they restart at each <bos>); other models "
                      "train on padded batches")
FIT_RESERVE_S = 45.0  # what `fit_minutes` keeps back for the last checkpoint, the export and the plot


# ---------------------------------------------------------------- config


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # A Hugging Face causal LM folder to start from instead of `model` (a format fine-tune of a pretrained LLM:
    # ARC tasks then go through its own tokenizer in the text grid format, and the export keeps that tokenizer).
    init_from: str | None = None
    train_embeddings: bool = True  # False freezes the token embeddings (most of a small LLM's weights, and tied to its head)
    # data
    # names (testtime.data.sources): "arc1/train", a task file or folder, "re-arc:PATH", "arc2/train-clean"
    datasets: tuple[str, ...] = ("arc1/train",)
    # how often each dataset is drawn (relative); None: in proportion to its number of tasks
    dataset_weights: Annotated[tuple[float, ...] | None, Range(0, 1e6)] = None
    max_len: Annotated[int, LENGTH] = 8192  # demos are dropped (longest first) to fit
    token_budget: Annotated[int, TOKENS] = 131072  # padded tokens (batch x padded length) per step
    # Pack sequences into rows of max_len tokens (rounded up to pad_multiple), each attending only to itself
    # (a FlexAttention block mask), instead of padding each to its length bucket: no padding, one compiled shape.
    # Our grid model only (its positions restart at each sequence's <bos>).
    packing: bool = False
    # packed rows attend through FlexAttention's block masks of attention_block tokens (64: only where the GPU lane's
    # test of them passes; torch 2.11 fails to compile them), or FlashAttention's variable-length spans ("varlen")
    attention: Annotated[str, OneOf(*KINDS)] = "flex"
    attention_block: Annotated[int, Range(64, 128), OneOf(*BLOCK_SIZES)] = 128
    pool_size: Annotated[int, Range(1, 65536)] = 2048  # sequences sorted by length together, then cut into batches
    # padded lengths are multiples of this (fewer compiled shapes, aligned kernels)
    pad_multiple: Annotated[int, Range(1, 4096)] = 128
    holdout: Annotated[int, Range(0, 100_000)] = 0  # training tasks (of the first dataset) kept out of training, to validate on
    # steps between validations (a multiple of log_every; also at the last step); the best one is exported
    val_every: Annotated[int, Range(1, 10**9)] = 500
    # steps between counts of the held-out tasks greedy decoding solves without TTT (`val_solved`; also at the last
    # step), a multiple of log_every; 0: never. Its time adds to the run's wall clock, not to fit_minutes' schedule.
    solve_every: Annotated[int, Range(0, 10**9)] = 0
    # Draws of each training source whose answer loss is logged at each validation (`probe_loss`); 0: none. As for
    # the held-out loss, a model with a per-task embedding reads them with no task's row.
    probe_samples: Annotated[int, Range(0, 100_000)] = 64
    # Datasets probed the same way but never trained on (logged as "NAME (not trained)"): a second generated corpus
    # of another seed tells whether what the model learns of the generated tasks carries over to new ones.
    probe_datasets: tuple[str, ...] = ()
    # optimisation
    # adamw, or muon: Muon for the transformer body's matrices (AdamW for the rest), both at `lr` and `weight_decay`
    optimizer: Annotated[str, OneOf(*OPTIMIZERS)] = "adamw"
    lr: Annotated[float, LR] = 1e-3
    min_lr_ratio: Annotated[float, Range(0, 1)] = 0.1  # the schedule ends at lr * min_lr_ratio
    # "cosine" from lr down, or "wsd": lr until the last decay_frac of the steps, which fall as 1 - sqrt; the weights
    # at the decay's start go to stable/, where a campaign's next stretch continues (cpu-wsd-2026-12-06.md)
    schedule: Annotated[str, OneOf("cosine", "wsd")] = "cosine"
    decay_frac: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.2
    warmup_steps: Annotated[int, Range(0, 10**9)] = 200
    total_steps: Annotated[int, Range(1, 10**9)] = 10000
    weight_decay: Annotated[float, Range(0, 1)] = 0.1
    betas: Annotated[tuple[float, float], Range(0, 1, hi_open=True)] = (0.9, 0.95)
    grad_clip: Annotated[float, Range(0, 1e4, lo_open=True)] = 1.0
    # run control
    seed: Annotated[int, SEED] = 0
    compile: bool = True  # torch.compile on CUDA (ignored on CPU)
    device: str = "auto"  # auto | cuda | cuda:N | cpu (checked by distributed.pick_device)
    log_every: Annotated[int, Range(1, 10**6)] = 25  # steps between host syncs (loss readout, log line)
    checkpoint_minutes: Annotated[float, MINUTES] = 3.0
    max_minutes: Annotated[float | None, MINUTES] = None  # wall clock for this call, then save and exit cleanly
    # Fit the schedule into this many minutes of wall clock (start-up included): the steps a second takes are
    # measured once warmup is done, and the cosine is laid over the steps that fit (at most total_steps). For GPU
    # jobs of a fixed length, whose throughput is known only once they run; the fitted length is kept on resume.
    fit_minutes: Annotated[float | None, MINUTES] = None
    # dtype of the exported model/ shards (loading on CPU gives fp32)
    export_dtype: Annotated[str, OneOf("bfloat16", "float16", "float32")] = "bfloat16"
    prefetch: Annotated[int, Range(1, 64)] = 6  # batches built ahead on a background thread
    # With a per-task embedding: the share of sequences trained as of an unknown task (the rows' mean), so that the
    # vector a new task gets (no TTT), and starts its TTT from, is one the model has learned to read.
    task_dropout: Annotated[float, Range(0, 1)] = 0.0

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.probe_datasets = tuple(self.probe_datasets)
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.dataset_weights is not None:
            self.dataset_weights = tuple(self.dataset_weights)
        check(self)  # every field's own limits; what follows relates fields to each other
        if round_up(self.max_len, self.pad_multiple) > self.token_budget:
            raise ConfigError(f"token_budget {self.token_budget} cannot hold one sequence of max_len {self.max_len}")
        if self.init_from is None and self.max_len > self.model.max_position_embeddings:
            raise ConfigError(
                f"max_len {self.max_len} exceeds the model's max_position_embeddings {self.model.max_position_embeddings}"
            )
        for name in ("val_every", "solve_every"):
            if getattr(self, name) % self.log_every:
                raise ConfigError(f"{name} must be a multiple of log_every ({self.log_every}), got {getattr(self, name)}")
        if not self.datasets:
            raise ConfigError("datasets is empty")
        if self.dataset_weights is not None:
            if len(self.dataset_weights) != len(self.datasets) or not sum(self.dataset_weights) > 0:
                raise ConfigError(f"dataset_weights must be {len(self.datasets)} finite non-negative numbers, not all 0")
        if self.packing and self.init_from is None and not self.model.grid_positions:
            raise ConfigError(PACKING_NEEDS_GRID)
        for name in (*self.datasets, *self.probe_datasets):
            if name in FORBIDDEN_DATASETS:
                raise ConfigError(f"dataset {name} cannot be a pretraining source: {FORBIDDEN_DATASETS[name]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "config") -> PretrainConfig:
        return typed(cls, obj, where)

    @classmethod
    def from_json(cls, path: str | Path) -> PretrainConfig:
        return cls.from_dict(read_json(path), str(path))


# ---------------------------------------------------------------- training


@dataclass
class PretrainResult:
    run_dir: Path
    step: int
    finished: bool  # the schedule ran to total_steps
    model_dir: Path | None  # the exported model, once finished
    last_loss: float | None
    best_val: float | None = None  # lowest held-out loss so far; that model is in run_dir/best
    trained: Any = None  # the model object as training left it (fp32, on the run's device)
    total_steps: int = 0  # the schedule's length (fitted, with fit_minutes)


def pretrain(
    config: PretrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    stop_at: int | None = None,
    progress: bool = True,
    sources: Sequence[Source] | None = None,
    export: bool | None = None,
    label: str = "pretrain",
    start: tuple[Any, Any, Codec] | None = None,
    on_step: Callable[[int, Batch], None] | None = None,
) -> PretrainResult:
    """Train (or continue training) the base model in `run_dir`.

    Stops at `total_steps` (then exports run_dir/model), at `stop_at` (a step, for tests and staged runs),
    or when `max_minutes` of wall clock have passed; each stop saves a checkpoint first.
    `export=True` writes run_dir/model even before the schedule is done (None: only once finished).

    Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, rank r draws its own
    stream (seed + r), and only rank 0 writes the log, checkpoints and the export. Stop and checkpoint
    decisions are rank 0's, shared at log steps, so every rank stops at the same step. A process group that
    existed before the call (an evaluation's) is left for its owner.

    `start` = (model, tokenizer or None, codec) trains that model object (fp32) instead of `cfg.model` or
    `cfg.init_from`; `label` names the progress bar; `on_step(step, batch)` runs after each optimizer step
    (benchmarks time a window of steps with it).
    """
    import torch
    from tqdm import tqdm

    from testtime.core import distributed
    t_start = time.monotonic()
    cfg = config
    owns_group = not distributed.initialized()
    dist = distributed.init()
    main = dist.is_main
    device = distributed.pick_device(cfg.device)  # a bad device fails before the run folder is touched
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cuda = device.startswith("cuda")
    if cuda and dist.enabled:
        device = f"cuda:{dist.local_rank}"
    log_path = run_dir / "log.jsonl"

    ckpt = run_state.find_checkpoint(run_dir) if resume else None
    meta: dict[str, Any] = run_state.read_state(ckpt) if ckpt else {}
    run_state.check_resumable(meta, cfg.to_dict(), run_dir)
    distributed.barrier(dist)  # every rank has read the checkpoint state before rank 0 touches the folder
    if main and not ckpt:
        run_state.clear_run(run_dir)
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def data() -> tuple[list[Source], list]:
        return split_holdout(sources if sources is not None else load_sources(cfg.datasets), cfg.holdout)

    # A fresh model's data first (a per-task embedding has a row for each training task); a model loaded from a
    # folder first, so that a bad folder fails before the data is read.
    fresh = start is None and cfg.init_from is None
    train_sources, held = data() if fresh else ([], [])
    # Model, optimizer, schedule. The seed fixes the init; a checkpoint then overwrites everything.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, tokenizer, codec, n, n_layers, width = init_model(cfg, device, start, train_sources)
    if cfg.packing and not is_grid_model(model):
        raise ConfigError(f"{cfg.init_from or 'the model'}: {PACKING_NEEDS_GRID}")
    model.train()
    optimizer = make_optimizer(model, cfg.lr, cfg.betas, cfg.weight_decay, fused=cuda, kind=cfg.optimizer)
    total = cfg.total_steps  # the schedule's length: fitted to fit_minutes once measured, if asked
    fitted = cfg.fit_minutes is None

    def schedule(total_steps: int):
        return lr_schedule(cfg.schedule, total_steps, cfg.warmup_steps, cfg.min_lr_ratio, cfg.decay_frac, cfg.log_every)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total))
    if not fresh:
        train_sources, held = data()
    sampler = SequenceSampler(train_sources, cfg.max_len, cfg.seed + dist.rank, cfg.dataset_weights, codec=codec,
                              task_rows=task_rows(model), task_dropout=cfg.task_dropout)
    val_batches = validation_set(held, cfg.max_len, cfg.pad_multiple, codec) if main else []
    n_probe = cfg.probe_samples if main else 0
    probes = source_probes(cfg.datasets, train_sources, n_probe, cfg.max_len, cfg.pad_multiple, codec, cfg.seed)
    if n_probe and cfg.probe_datasets:
        probes |= source_probes(cfg.probe_datasets, load_sources(cfg.probe_datasets), n_probe, cfg.max_len,
                                cfg.pad_multiple, codec, cfg.seed, suffix=" (not trained)")
    stream = batch_stream(sampler, cfg)
    step, elapsed_before, tokens_seen = 0, 0.0, 0
    best_val: float | None = None
    if ckpt:
        run_state.load_checkpoint(ckpt, meta, model, optimizer, scheduler, device)
        streams = meta.get("streams") or [meta["stream"]]
        if dist.rank < len(streams):  # a rank new to this run (a larger world) starts its own fresh stream
            stream.load_state_dict(streams[dist.rank])
        step, elapsed_before, tokens_seen = meta["step"], meta["elapsed"], meta["tokens"]
        best_val = meta.get("best_val")
        if meta.get("fitted_steps"):
            total, fitted = int(meta["fitted_steps"]), True
            scheduler.lr_lambdas = [schedule(total)] * len(optimizer.param_groups)
        if main:
            run_state.truncate_log(log_path, step)
    stream_state = stream.state_dict()
    end = min(total, stop_at) if stop_at is not None else total
    fit_from: tuple[int, float] | None = None  # (step, time) where the throughput measurement starts

    base_fn = loss_sum if model.config.get_text_config().vocab_size <= 4096 else loss_sum_targets
    fn = base_fn
    # Padded batches: one graph for all (batch, length) shapes (lengths are multiples of pad_multiple anyway).
    # Packed rows have one shape: a static graph.
    dynamic = not cfg.packing
    if cuda:
        torch.set_float32_matmul_precision("high")
        if cfg.compile:
            fn = torch.compile(base_fn, dynamic=dynamic)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # broadcast_buffers off: the one buffer, the rotary table, is a constant every rank builds alike.
        ddp = DDP(loss_module(model, base_fn), device_ids=[dist.local_rank] if cuda else None, broadcast_buffers=False)
        eager = ddp_loss(ddp)
        fn = ddp_loss(torch.compile(ddp, dynamic=dynamic)) if cuda and cfg.compile else eager
    else:
        eager = base_fn
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def agreed(flag: bool) -> bool:
        """Alone: `flag`. Under DDP: rank 0's flag, shared only at log steps (elsewhere False), so all agree."""
        if not dist.enabled:
            return flag
        return step % cfg.log_every == 0 and bool(distributed.broadcast(dist, flag))

    def checkpoint() -> None:
        # Never save diverged weights: every rank says whether its loss since the last log step is finite.
        gathered = distributed.all_gather(dist, (stream_state, float(acc_loss.item())))
        for _, loss in gathered:
            check_finite(loss, step, "pretraining")
        streams = [s for s, _ in gathered]
        if not main:
            return
        run_state.save_checkpoint(
            run_dir,
            model,
            optimizer,
            scheduler,
            {
                "step": step,
                "stream": stream_state,
                "streams": streams,
                "elapsed": elapsed_before + (time.monotonic() - t_start),
                "tokens": tokens_seen,
                "best_val": best_val,
                "fitted_steps": total if cfg.fit_minutes is not None and fitted else None,
                "config": cfg.to_dict(),
            },
        )

    prefetch = Prefetcher(stream, cfg.prefetch, pin=cuda) if step < end else None
    attention = ExitStack()  # packed rows: attention through their block masks until the loop ends
    if cfg.packing:
        attention.enter_context(use_document_attention(model))
    # Redraw often on a terminal, rarely into a log file (a GPU job's output is kept as a tail).
    bar = tqdm(
        total=end,
        initial=step,
        disable=not (progress and main),
        dynamic_ncols=True,
        desc=label,
        mininterval=0.2 if sys.stderr.isatty() else 30.0,
    )
    last_ckpt = time.monotonic()
    acc_loss = torch.zeros((), device=device)
    acc_steps = acc_real = acc_padded = acc_attended = 0
    t_log = time.monotonic()
    last_loss = None
    try:
        while step < end:
            if agreed(cfg.max_minutes is not None and time.monotonic() - t_start > cfg.max_minutes * 60):
                break
            assert prefetch is not None
            batch, next_state = prefetch.get()
            ids = batch.input_ids.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            mask = () if batch.doc_ids is None else (packed_mask(batch.doc_ids, device, cfg.attention,
                                                                 cfg.attention_block),)
            tasks = {} if batch.task_index is None else {"task_index": batch.task_index.to(device, non_blocking=True)}
            try:
                with autocast:
                    loss = fn(model, ids, labels, *mask, **tasks) / max(1, batch.n_targets)
            except Exception as e:  # a compiler failure should cost speed, not the run
                if fn is eager:
                    raise
                print(
                    f"pretrain: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); running eagerly"
                )
                fn = eager
                with autocast:
                    loss = fn(model, ids, labels, *mask, **tasks) / max(1, batch.n_targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            stream_state = next_state
            tokens_seen += batch.n_real
            acc_loss += loss.detach()
            acc_steps += 1
            acc_real += batch.n_real
            acc_padded += batch.n_padded
            acc_attended += batch.n_attended
            bar.update(1)
            if on_step is not None:
                on_step(step, batch)
            if step % cfg.log_every == 0 or step == end:
                if dist.enabled:  # totals over all ranks (every rank is at this same step)
                    local_real = acc_real
                    acc_loss, acc_real, acc_padded, acc_attended = over_ranks(
                        acc_loss, acc_real, acc_padded, acc_attended, dist.world)
                    tokens_seen += acc_real - local_real
                last_loss = float(acc_loss.item()) / acc_steps  # the one host sync per log interval
                check_finite(last_loss, step, "pretraining")  # before a log line, a checkpoint or an export
                if main and cfg.schedule == "wsd" and fitted and step == decay_start(total, cfg.decay_frac, cfg.log_every):
                    save_model(model, tokenizer, run_dir / "stable", dtype=getattr(torch, cfg.export_dtype))
                now = time.monotonic()
                dt = max(now - t_log, 1e-9)
                real_tps, padded_tps = acc_real / dt, acc_padded / dt
                attended = acc_attended / max(1, acc_real)
                mfu = (flops_per_token(n_layers, width, n, attended) * real_tps / (PEAK_BF16_FLOPS * dist.world)
                       if cuda else None)
                rec = {
                    "step": step,
                    "loss": last_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": tokens_seen,
                    "tokens_per_s": round(real_tps),
                    "padded_tokens_per_s": round(padded_tps),
                    "mfu": None if mfu is None else round(mfu, 4),
                    "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
                    "elapsed": round(elapsed_before + now - t_start, 2),
                    "data_wait": round(prefetch.waited / dt, 4),  # the interval's share spent waiting for a batch
                }
                # Also at the last step: runs of equal minutes compare their final models, whatever val_every.
                if (val_batches or probes) and (step % cfg.val_every == 0 or step == end):
                    if probes:
                        rec["probe_loss"] = {k: round(validate(model, b, device, autocast, base_fn), 5)
                                             for k, b in probes.items()}
                    if val_batches:
                        rec["val_loss"] = round(validate(model, val_batches, device, autocast, base_fn), 5)
                    if val_batches and (best_val is None or rec["val_loss"] < best_val):
                        # Exported as it happens: the run may memorize its tasks long before it ends.
                        best_val = rec["val_loss"]
                        save_model(model, tokenizer, run_dir / "best", dtype=getattr(torch, cfg.export_dtype))
                    now = time.monotonic()  # validation time stays out of the next interval's throughput
                if main and held and cfg.solve_every and (step % cfg.solve_every == 0 or step == end):
                    rec["val_solved"], rec["val_tasks"] = held_out_solved(model, held, codec, cfg.max_len), len(held)
                    now = time.monotonic()
                if main:
                    with log_path.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{real_tps / 1e3:.0f}k",
                                pad_tok_s=f"{padded_tps / 1e3:.0f}k", lr=f"{rec['lr']:.2e}", refresh=False)
                acc_loss = torch.zeros((), device=device)
                acc_steps = acc_real = acc_padded = acc_attended = 0
                t_log, prefetch.waited = now, 0.0
            if not fitted and step % cfg.log_every == 0:
                # Measure from the middle of warmup (compilation is over by then) to its end, then fit the cosine.
                if fit_from is None and step >= cfg.warmup_steps // 2:
                    fit_from = (step, time.monotonic())
                elif fit_from is not None and step >= cfg.warmup_steps and step > fit_from[0]:
                    per_step = (time.monotonic() - fit_from[1]) / (step - fit_from[0])
                    left = cfg.fit_minutes * 60 - (time.monotonic() - t_start) - FIT_RESERVE_S
                    fit = min(cfg.total_steps, step + max(1, int(0.97 * left / per_step)))
                    total, fitted = int(distributed.broadcast(dist, fit)), True
                    scheduler.lr_lambdas = [schedule(total)] * len(optimizer.param_groups)
                    end = min(total, stop_at) if stop_at is not None else total
                    bar.total = end
                    late = cfg.schedule == "wsd" and decay_start(total, cfg.decay_frac, cfg.log_every) <= step
                    if main:
                        bar.write(f"{label}: {per_step:.3f} s a step; the schedule fits {total} steps in "
                                  f"{cfg.fit_minutes:g} minutes{'; its decay has begun: no stable/' * late}")
            if agreed(time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60) and step < end:
                checkpoint()
                last_ckpt = time.monotonic()
    finally:
        attention.close()
        if prefetch is not None:
            prefetch.close()
        bar.close()
    checkpoint()
    finished = step >= total
    model_dir = None
    if finished or export:
        model_dir = run_dir / "model"
        if main:
            save_model(model, tokenizer, model_dir, dtype=getattr(torch, cfg.export_dtype))
    if main and log_path.exists():
        plot_loss(run_dir)
    distributed.barrier(dist)  # the checkpoint and export are on disk for every rank
    if owns_group:
        distributed.cleanup(dist)
    return PretrainResult(run_dir, step, finished, model_dir, last_loss, best_val, model, total)


