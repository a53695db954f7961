"""The joint stage: one update of the whole model on the demonstrations of every task of a run, before any
task trains its own adapter.

Each task alone has two to five demonstrations; together, a run's tasks hold a few thousand, all of them
from the distribution being evaluated. mdlARC measured joint test-time training over all evaluation tasks at
about 44% against 18% for each task alone, and "How to Train Your HRM" found the best split of test-time
compute about 2:1 between a joint stage and per-task training. Here the joint stage comes first and the
per-task adapters (`testtime.stages.ttt`) start from its weights.

Data: leave-one-out sequences of the run's tasks. Every draw takes a task (uniformly), a random D8 + color
transform and a shuffle of its demonstrations; one demonstration is the query, the others the context, and
demo outputs from the second on are targets too. Test outputs never enter: the tasks are stripped of their
test examples before anything is sampled (`demo_tasks`), so the stage sees what a solver is given at test
time and nothing more.

Training is the pretraining loop (`testtime.recipes.pretrain.pretrain`) on a copy of the run's base model: full
weights, bf16 autocast on a GPU, data-parallel under torchrun, a progress bar, exact checkpoints in
`OUT/joint/` so a run killed during the stage resumes where it stopped, and the result exported to
`OUT/joint/model` (a standard model folder). `stage.json` there records which tasks and settings it was
trained for, so a folder trained for other tasks is never reused by mistake.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from testtime.core import distributed, store
from testtime.core.config import LENGTH, LR, MINUTES, SEED, TOKENS, ConfigError, Range, check
from testtime.data.encode import Codec, TooLongError, encode_example
from testtime.data.sources import Source, TaskSource, load_sources
from testtime.data.tasks import Task, leave_one_out
from testtime.recipes.pretrain import PretrainConfig, pretrain

STAGE_FILE = "stage.json"
# Padded tokens per step: what pretraining uses on a GPU; on a CPU a step's activations (fp32, about 0.5 MB a
# token for the shipped model) must stay within a laptop's memory.
GPU_BUDGET, CPU_BUDGET = 131072, 8192


@dataclass
class JointConfig:
    samples: Annotated[int, Range(0, 1_000_000)] = 0  # training sequences per task of the run (0: no joint stage)
    lr: Annotated[float, LR] = 2e-4
    min_lr_ratio: Annotated[float, Range(0, 1)] = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup: Annotated[float, Range(0, 1)] = 0.05  # share of the steps spent warming up
    weight_decay: Annotated[float, Range(0, 1)] = 0.0
    # padded tokens per step and process (None: GPU_BUDGET, or CPU_BUDGET on a CPU)
    token_budget: Annotated[int | None, TOKENS] = None
    pad_multiple: Annotated[int, Range(1, 4096)] = 64
    max_len: Annotated[int, LENGTH] = 8192
    min_tasks: Annotated[int, Range(1, 1_000_000)] = 2  # runs of fewer tasks skip the stage (nothing to share)
    # Pretraining datasets mixed in (testtime.data.sources names, hygiene-checked), and their share of the draws.
    mix: tuple[str, ...] = ()
    mix_weight: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    seed: Annotated[int, SEED] = 0
    compile: bool = True  # torch.compile on a GPU
    checkpoint_minutes: Annotated[float, MINUTES] = 3.0
    dir: str | None = None  # the stage's folder (None: OUT/joint); runs of the same tasks and settings may share one

    def __post_init__(self) -> None:
        self.mix = tuple(self.mix)
        check(self, "joint_cfg")  # every field's own limits; what follows relates fields to each other
        if bool(self.mix) != (self.mix_weight > 0):
            raise ConfigError("joint_cfg: mix_weight must be above 0 exactly when mix names datasets")

    def runs_for(self, n_tasks: int) -> bool:
        return self.samples > 0 and n_tasks >= self.min_tasks


def demo_tasks(tasks: Sequence[Task]) -> list[Task]:
    """The tasks as the joint stage may see them: demonstrations only (test inputs and outputs dropped), and only
    tasks with two demonstrations or more (leave-one-out needs a query and a context)."""
    return [Task(t.id, t.train, ()) for t in tasks if len(t.train) >= 2]


def mean_length(tasks: Sequence[Task], codec: Codec, max_len: int) -> float:
    """Mean token length of the tasks' leave-one-out sequences (untransformed): what one sample costs."""
    lengths = []
    for t in tasks:
        for i in range(len(t.train)):
            sub = leave_one_out(t, i)
            try:
                lengths.append(len(encode_example(codec, sub.train, sub.test[0], max_len=max_len)))
            except TooLongError:
                continue
    return float(np.mean(lengths)) if lengths else float(max_len)


def plan_steps(tasks: Sequence[Task], codec: Codec, cfg: JointConfig, budget: int, world: int = 1) -> int:
    """Optimizer steps for `cfg.samples` sequences per task: each step takes `budget` padded tokens on each of
    `world` processes, about 90% of them real (batches are length-bucketed)."""
    tokens = len(tasks) * cfg.samples * mean_length(tasks, codec, cfg.max_len)
    return max(1, math.ceil(tokens / (0.9 * budget * world)))


def _stage_key(tasks: Sequence[Task], cfg: JointConfig, base: str) -> dict[str, Any]:
    c = asdict(cfg)
    c.pop("dir")
    return json.loads(json.dumps({"tasks": [t.id for t in tasks], "config": c, "base": base}))  # as read back


@dataclass
class JointResult:
    model: Any  # the trained copy, in eval mode, in the dtype and on the device of the model given
    dir: Path
    steps: int
    seconds: float  # wall clock of training (this call and any earlier one it resumed), on `world` processes
    world: int
    tokens: int



def joint_stage(model, tokenizer, codec: Codec, tasks: Sequence[Task], cfg: JointConfig, stage_dir: str | Path, *,
                base: str = "", device: str | None = None, progress: bool = True) -> JointResult:
    """Train a copy of `model` on the leave-one-out demonstrations of `tasks` (see the module docstring), or
    continue or reuse the stage in `stage_dir`. `base` names the model for `stage.json` (a folder trained from
    another base is refused). Under torchrun every process calls this with the same tasks."""
    stage_dir = Path(stage_dir)
    dist = distributed.init()
    demos = demo_tasks(tasks)
    if not demos:
        raise ConfigError("joint stage: no task has two demonstrations or more")
    key = _stage_key(tasks, cfg, base)
    state_path = stage_dir / STAGE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if state is not None and state.get("key") != key:
        raise ConfigError(f"{stage_dir}: holds a joint stage of other tasks, settings or base model; "
                          "pick another joint dir or --out")
    dtype, where = next(model.parameters()).dtype, next(model.parameters()).device
    if state is not None and state.get("finished") and (stage_dir / "model" / "config.json").is_file():
        from testtime.model.loading import load_model

        trained = load_model(stage_dir / "model", device=str(where), dtype=dtype).model
        return JointResult(trained, stage_dir, state["steps"], state["seconds"], state["world"], state["tokens"])

    budget = cfg.token_budget or (GPU_BUDGET if where.type == "cuda" else CPU_BUDGET)
    steps = state["steps"] if state is not None else plan_steps(demos, codec, cfg, budget, dist.world)
    distributed.barrier(dist)  # every rank has read the stage state before rank 0 writes it
    if dist.is_main:
        store.write_atomic(state_path, json.dumps({"key": key, "steps": steps, "finished": False}, indent=1))
    sources: list[Source] = [TaskSource(demos), *load_sources(cfg.mix)]
    weights = [1.0 - cfg.mix_weight] + [cfg.mix_weight / len(cfg.mix)] * len(cfg.mix) if cfg.mix else None
    pcfg = PretrainConfig(
        datasets=("run demonstrations", *cfg.mix), dataset_weights=None if weights is None else tuple(weights),
        max_len=cfg.max_len, token_budget=budget, pool_size=1024, pad_multiple=cfg.pad_multiple,
        lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio, warmup_steps=max(1, round(cfg.warmup * steps)), total_steps=steps,
        weight_decay=cfg.weight_decay, seed=cfg.seed, compile=cfg.compile,
        device="cuda" if where.type == "cuda" else "cpu", log_every=min(25, steps), val_every=min(25, steps),
        checkpoint_minutes=cfg.checkpoint_minutes, export_dtype="float32")
    t0 = time.monotonic()
    res = pretrain(pcfg, stage_dir, sources=sources, progress=progress, label="joint stage",
                   start=(copy.deepcopy(model).float(), tokenizer, codec))
    trained = res.trained.to(device=where, dtype=dtype).eval()
    log = [json.loads(ln) for ln in (stage_dir / "log.jsonl").read_text().splitlines() if ln.strip()] \
        if (stage_dir / "log.jsonl").is_file() else []
    seconds = float(log[-1]["elapsed"]) if log else time.monotonic() - t0
    tokens = int(log[-1]["tokens"]) if log else 0
    if dist.is_main:
        store.write_atomic(state_path, json.dumps({"key": key, "steps": steps, "finished": res.finished,
                                                   "seconds": seconds, "world": dist.world, "tokens": tokens},
                                                  indent=1))
    distributed.barrier(dist)
    if not res.finished:
        raise ConfigError(f"{stage_dir}: the joint stage stopped at step {res.step}/{steps}; run again to continue")
    return JointResult(trained, stage_dir, steps, seconds, dist.world, tokens)


def read_joint(stage_dir: Path | None) -> dict[str, Any] | None:
    """What a finished joint stage in `stage_dir` cost (steps, seconds, processes, tokens), for a run's summary."""
    path = None if stage_dir is None else Path(stage_dir) / STAGE_FILE
    if path is None or not path.is_file():
        return None
    state = json.loads(path.read_text())
    if not state.get("finished"):
        return None
    return {"dir": str(stage_dir), **{k: state[k] for k in ("steps", "seconds", "world", "tokens")}}
