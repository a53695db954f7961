"""Pretraining recipe for the base model: augmented ARC training tasks, length-bucketed batches, exact resume.

Read top to bottom: config -> step -> loop -> checkpoint -> export; the data comes from
`testtime.data.sources` through `testtime.data.pretrain_data`. One call does it all:

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
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np

from testtime.core import jsonio
from testtime.core.config import LENGTH, LR, MINUTES, SEED, TOKENS, ConfigError, OneOf, Range, check, read_json, typed
from testtime.data.encode import Codec, GridCodec
from testtime.data.pretrain_data import Batch, BatchStream, Prefetcher, SequenceSampler, round_up, validation_set
from testtime.data.sources import FORBIDDEN_DATASETS, Source, load_sources, split_holdout
from testtime.model.loading import ModelConfig, build_model, head_logits, n_params, save_model
from testtime.model.training import check_finite, warmup_cosine

H100_BF16_FLOPS = 989e12
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
    pool_size: Annotated[int, Range(1, 65536)] = 2048  # sequences sorted by length together, then cut into batches
    # padded lengths are multiples of this (fewer compiled shapes, aligned kernels)
    pad_multiple: Annotated[int, Range(1, 4096)] = 128
    holdout: Annotated[int, Range(0, 100_000)] = 0  # training tasks (of the first dataset) kept out of training, to validate on
    # steps between validations (a multiple of log_every); the best one is exported
    val_every: Annotated[int, Range(1, 10**9)] = 500
    # optimisation
    lr: Annotated[float, LR] = 1e-3
    min_lr_ratio: Annotated[float, Range(0, 1)] = 0.1  # cosine ends at lr * min_lr_ratio
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

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
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
        if self.val_every % self.log_every:
            raise ConfigError(f"val_every must be a multiple of log_every ({self.log_every}), got {self.val_every}")
        if not self.datasets:
            raise ConfigError("datasets is empty")
        if self.dataset_weights is not None:
            if len(self.dataset_weights) != len(self.datasets) or not sum(self.dataset_weights) > 0:
                raise ConfigError(f"dataset_weights must be {len(self.datasets)} finite non-negative numbers, not all 0")
        for name in self.datasets:
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


# ---------------------------------------------------------------- validation


def validate(model, batches: Sequence[Batch], device: str, autocast, fn=None) -> float:
    """Mean next-token loss on the validation targets."""
    import torch

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast:
        for b in batches:
            total += float((fn or loss_sum)(model, b.input_ids.to(device), b.labels.to(device)))
            n += b.n_targets
    model.train(was_training)
    return total / max(1, n)


# ---------------------------------------------------------------- training


def loss_sum(model, input_ids, labels):
    """Summed next-token cross entropy over target positions, in fp32.

    The vocabulary has 32 entries, so logits for every position cost less memory than the hidden states;
    computing them all keeps shapes static for torch.compile (no data-dependent gather).
    """
    import torch.nn.functional as F

    hidden = model.model(input_ids=input_ids, use_cache=False).last_hidden_state
    logits = model.lm_head(hidden).float()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100, reduction="sum")


HEAD_CHUNK = 2048  # target rows per output-head chunk in `loss_sum_targets`


def _head_loss(model, hidden, targets):
    import torch.nn.functional as F

    return F.cross_entropy(head_logits(model, hidden), targets, reduction="sum")


def loss_sum_targets(model, input_ids, labels):
    """`loss_sum` for a large vocabulary (an LLM's 256k tokens): the output head runs only on target positions,
    in chunks whose logits are recomputed in the backward pass, so no [tokens x vocab] tensor is ever held."""
    from torch.utils.checkpoint import checkpoint

    hidden = model.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state
    sel = labels != -100
    h, y = hidden[sel], labels[sel]
    return sum(checkpoint(_head_loss, model, h[i: i + HEAD_CHUNK], y[i: i + HEAD_CHUNK], use_reentrant=False)
               for i in range(0, len(y), HEAD_CHUNK))


def make_optimizer(model, cfg: PretrainConfig, fused: bool):
    import torch

    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **kw)


def flops_per_token(layers: int, hidden: int, n: int, seq_len: float) -> float:
    """6 x (matmul) params + causal attention; `n` excludes an LLM's embedding (a lookup, and its tied head runs
    only on target tokens), so an init_from run's MFU is a slight underestimate."""
    return 6 * n + 6 * layers * hidden * seq_len


class Start(NamedTuple):
    """What training starts from, and the shape its MFU is computed with."""

    model: Any
    tokenizer: Any  # None: the grid tokenizer, written at export
    codec: Codec
    matmul_params: int  # parameters less an LLM's input embedding (see flops_per_token)
    layers: int
    hidden: int


def _init_model(cfg: PretrainConfig, device: str, start: tuple[Any, Any, Codec] | None = None) -> Start:
    """A fresh model from `cfg.model`, the Hugging Face LM of `cfg.init_from`, or `start`: (a model object, its
    tokenizer or None, its codec), trained in place."""
    import torch

    from testtime.model.loading import load_model

    if start is not None:
        model, tokenizer, codec = start
        model = model.to(device)
        text = model.config.get_text_config()
        emb = model.get_input_embeddings().weight
        n = sum(p.numel() for p in model.parameters() if p is not emb or text.vocab_size <= 4096)
        return Start(model, tokenizer, codec, n, text.num_hidden_layers, text.hidden_size)
    if cfg.init_from is None:
        model = build_model(cfg.model).to(device)
        return Start(model, None, GridCodec(), n_params(model), cfg.model.num_layers, cfg.model.hidden_size)
    loaded = load_model(cfg.init_from, device="cpu", dtype=torch.float32)  # fp32 master weights; autocast runs bf16
    model = loaded.model.to(device)
    emb = model.get_input_embeddings().weight
    if not cfg.train_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            for p in module.parameters():
                p.requires_grad_(False)
    text = model.config.get_text_config()
    n = sum(p.numel() for p in model.parameters() if p is not emb)
    return Start(model, loaded.tokenizer, loaded.codec, n, text.num_hidden_layers, text.hidden_size)


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


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "python": _jsonable(random.getstate())}


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _set_rng_state(state: dict[str, Any]) -> None:
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    random.setstate(_tuplify(state["python"]))


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, meta: dict[str, Any]) -> Path:
    """Write run_dir/checkpoint atomically: a temp folder, then renames (an old one survives a crash)."""
    import torch

    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(tensors, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({**meta, "rng": _rng_state()}))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _read_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "state.json"
    try:
        meta = jsonio.read_json(path)
    except ValueError as e:
        raise ConfigError(f"{path}: corrupt checkpoint ({str(e).removeprefix(f'{path}: ')}); start over with --fresh") from None
    if not isinstance(meta, dict) or not {"step", "stream", "config", "rng"} <= set(meta):
        raise ConfigError(f"{path}: corrupt checkpoint (missing entries); start over with --fresh")
    return meta


def _loss_module(model, fn=None):
    """`model` with `fn` (default `loss_sum`) as its forward: DistributedDataParallel syncs gradients of forward calls only."""
    from torch import nn

    class LossModule(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, labels):
            return (fn or loss_sum)(self.inner, input_ids, labels)

    return LossModule(model)


def _ddp_loss(module):
    """`fn(model, ids, labels)` through a DDP-wrapped `_LossModule`, so gradients are all-reduced."""
    return lambda _model, ids, labels: module(ids, labels)


def _over_ranks(loss, real: int, padded: int, len_weighted: float, world: int):
    """Loss summed over log steps, averaged over ranks; token counts summed over ranks."""
    import torch
    import torch.distributed as tdist

    t = torch.cat([loss.detach().reshape(1).double(),
                   torch.tensor([real, padded, len_weighted], dtype=torch.float64, device=loss.device)])
    tdist.all_reduce(t)
    loss_mean, real_sum, padded_sum, lw_sum = t.tolist()
    return torch.tensor(loss_mean / world, device=loss.device), int(real_sum), int(padded_sum), lw_sum


def find_checkpoint(run_dir: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):
        d = run_dir / name
        if (d / "trainer.pt").is_file() and (d / "state.json").is_file():
            return d
    return None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    keep = [rec for _, rec in jsonio.read_json_lines(path, "log", ConfigError, complete_only=True)
            if isinstance(rec, dict) and rec.get("step", 0) <= step]
    path.write_text("".join(json.dumps(rec) + "\n" for rec in keep))


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
    `cfg.init_from`; `label` names the progress bar.
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

    ckpt = find_checkpoint(run_dir) if resume else None
    meta: dict[str, Any] = _read_state(ckpt) if ckpt else {}
    if meta and meta["config"]["model"] != asdict(cfg.model):
        raise ConfigError(f"{run_dir}: checkpoint was trained with a different model config; use another run dir")
    distributed.barrier(dist)  # every rank has read the checkpoint state before rank 0 touches the folder
    if main and not ckpt:
        log_path.unlink(missing_ok=True)
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    # Model, optimizer, schedule. The seed fixes the init; a checkpoint then overwrites everything.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, tokenizer, codec, n, n_layers, width = _init_model(cfg, device, start)
    model.train()
    optimizer = make_optimizer(model, cfg, fused=cuda)
    total = cfg.total_steps  # the schedule's length: fitted to fit_minutes once measured, if asked
    fitted = cfg.fit_minutes is None

    def schedule(total_steps: int):
        return warmup_cosine(total_steps, 0.0, cfg.min_lr_ratio, warmup_steps=cfg.warmup_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total))
    train_sources, held = split_holdout(sources if sources is not None else load_sources(cfg.datasets), cfg.holdout)
    sampler = SequenceSampler(train_sources, cfg.max_len, cfg.seed + dist.rank, cfg.dataset_weights, codec=codec)
    val_batches = validation_set(held, cfg.max_len, cfg.pad_multiple, codec) if main else []
    stream = BatchStream(sampler, cfg.token_budget, cfg.pool_size, cfg.pad_multiple)
    step, elapsed_before, tokens_seen = 0, 0.0, 0
    best_val: float | None = None
    if ckpt:
        try:
            tensors = torch.load(ckpt / "trainer.pt", map_location=device, weights_only=True)
        except Exception as e:  # a truncated or corrupt file: say which, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{ckpt / 'trainer.pt'}: corrupt checkpoint ({first}); start over with --fresh") from None
        model.load_state_dict(tensors["model"])
        optimizer.load_state_dict(tensors["optimizer"])
        scheduler.load_state_dict(tensors["scheduler"])
        torch.set_rng_state(tensors["torch_rng"].cpu())
        if cuda and tensors["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in tensors["cuda_rng"]])
        _set_rng_state(meta["rng"])
        streams = meta.get("streams") or [meta["stream"]]
        if dist.rank < len(streams):  # a rank new to this run (a larger world) starts its own fresh stream
            stream.load_state_dict(streams[dist.rank])
        step, elapsed_before, tokens_seen = meta["step"], meta["elapsed"], meta["tokens"]
        best_val = meta.get("best_val")
        if meta.get("fitted_steps"):
            total, fitted = int(meta["fitted_steps"]), True
            scheduler.lr_lambdas = [schedule(total)] * len(optimizer.param_groups)
        if main:
            _truncate_log(log_path, step)
    stream_state = stream.state_dict()
    end = min(total, stop_at) if stop_at is not None else total
    fit_from: tuple[int, float] | None = None  # (step, time) where the throughput measurement starts

    base_fn = loss_sum if model.config.get_text_config().vocab_size <= 4096 else loss_sum_targets
    fn = base_fn
    if cuda:
        torch.set_float32_matmul_precision("high")
        if cfg.compile:
            # One graph for all (batch, length) shapes; lengths are multiples of pad_multiple anyway.
            fn = torch.compile(base_fn, dynamic=True)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(_loss_module(model, base_fn), device_ids=[dist.local_rank] if cuda else None)
        eager = _ddp_loss(ddp)
        fn = _ddp_loss(torch.compile(ddp, dynamic=True)) if cuda and cfg.compile else eager
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
        save_checkpoint(
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
    acc_steps = acc_real = acc_padded = 0
    acc_len_weighted = 0.0
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
            try:
                with autocast:
                    loss = fn(model, ids, labels) / max(1, batch.n_targets)
            except Exception as e:  # a compiler failure should cost speed, not the run
                if fn is eager:
                    raise
                print(
                    f"pretrain: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); running eagerly"
                )
                fn = eager
                with autocast:
                    loss = fn(model, ids, labels) / max(1, batch.n_targets)
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
            acc_len_weighted += batch.n_real * batch.input_ids.shape[1]
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                if dist.enabled:  # totals over all ranks (every rank is at this same step)
                    local_real = acc_real
                    acc_loss, acc_real, acc_padded, acc_len_weighted = _over_ranks(
                        acc_loss, acc_real, acc_padded, acc_len_weighted, dist.world)
                    tokens_seen += acc_real - local_real
                last_loss = float(acc_loss.item()) / acc_steps  # the one host sync per log interval
                check_finite(last_loss, step, "pretraining")  # before a log line, a checkpoint or an export
                now = time.monotonic()
                dt = max(now - t_log, 1e-9)
                real_tps, padded_tps = acc_real / dt, acc_padded / dt
                seq = acc_len_weighted / max(1, acc_real)
                mfu = flops_per_token(n_layers, width, n, seq) * real_tps / (H100_BF16_FLOPS * dist.world) if cuda else None
                rec = {
                    "step": step,
                    "loss": last_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": tokens_seen,
                    "tokens_per_s": round(real_tps),
                    "padded_tokens_per_s": round(padded_tps),
                    "mfu": None if mfu is None else round(mfu, 4),
                    "elapsed": round(elapsed_before + now - t_start, 2),
                }
                if val_batches and step % cfg.val_every == 0:
                    rec["val_loss"] = round(validate(model, val_batches, device, autocast, base_fn), 5)
                    if best_val is None or rec["val_loss"] < best_val:
                        # Exported as it happens: the run may memorize its tasks long before it ends.
                        best_val = rec["val_loss"]
                        save_model(model, tokenizer, run_dir / "best", dtype=getattr(torch, cfg.export_dtype))
                    now = time.monotonic()  # validation time stays out of the next interval's throughput
                if main:
                    with log_path.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                bar.set_postfix(
                    loss=f"{last_loss:.4f}",
                    tok_s=f"{real_tps / 1e3:.0f}k",
                    pad_tok_s=f"{padded_tps / 1e3:.0f}k",
                    lr=f"{rec['lr']:.2e}",
                    refresh=False,
                )
                acc_loss = torch.zeros((), device=device)
                acc_steps = acc_real = acc_padded = 0
                acc_len_weighted = 0.0
                t_log = now
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
                    if main:
                        bar.write(f"{label}: {per_step:.3f} s a step; the schedule fits {total} steps in "
                                  f"{cfg.fit_minutes:g} minutes")
            if agreed(time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60) and step < end:
                checkpoint()
                last_ckpt = time.monotonic()
    finally:
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


# ---------------------------------------------------------------- reporting


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    return [rec for _, rec in jsonio.read_json_lines(path, "log", ConfigError)] if path.exists() else []


def plot_loss(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss (and throughput) against step, from run_dir/log.jsonl, to run_dir/loss.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_log(run_dir)
    out = Path(out) if out is not None else run_dir / "loss.png"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in recs]
    ax.plot(steps, [r["loss"] for r in recs], lw=1, label="training")
    val = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", lw=1, ms=3, label="held-out tasks")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(f"pretraining loss ({run_dir.name})")
    ax2.plot(steps, [r["tokens_per_s"] / 1e6 for r in recs], lw=1, label="real tokens/s (M)")
    if any(r.get("mfu") is not None for r in recs):
        ax2.plot(steps, [100 * (r.get("mfu") or 0) for r in recs], lw=1, label="MFU %")
    ax2.set_xlabel("step")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
