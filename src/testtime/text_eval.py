"""Evaluation recipe for text tasks: tasks -> (TTT adapters) -> answers -> exact-match accuracy.

One JSON line per task, appended as each group of tasks finishes; a restarted run skips the tasks
already recorded. `score` is the task's accuracy over its scored queries. The run ends with
`results.jsonl` merged in task order and `report.html` (see `text_report`).

Under `torchrun` the same call runs on every rank, as grid evaluation does (`evaluate`): the
remaining tasks are sharded across ranks (balanced by text length), rank r appends to
`results.rank{r}.jsonl`, and after a barrier rank 0 merges every results file into `results.jsonl`
and writes the report. A restart, with any world size, reads all the results files first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from testtime import distributed
from testtime.evaluate import append_records, check_run_dir, finished_ids, group_size, merge_results
from testtime.text import TextTask, load_text_tasks
from testtime.text_encode import TextFormat, normalize
from testtime.text_predict import TextPredictConfig, predict_text
from testtime.text_report import summary, write_text_report
from testtime.text_ttt import build_text_dataset, text_ttt_config, train_text_adapters
from testtime.ttt import TTTConfig

RESULTS = "results.jsonl"


@dataclass
class TextEvalConfig:
    tasks: str = "data/text/sample.jsonl"
    model: str | None = None
    ttt: bool = True
    limit: int | None = None
    device: str | None = None
    max_group: int | None = None  # tasks whose adapters train together; None: 16 on a GPU, 4 on a CPU
    ttt_cfg: TTTConfig = field(default_factory=text_ttt_config)
    predict_cfg: TextPredictConfig = field(default_factory=TextPredictConfig)


def text_task_cost(task: TextTask) -> int:
    """Estimated work of a task, in characters: its context is read once per TTT sample and once per query."""
    context = len(task.instruction) + sum(len(x) + len(y) for x, y in task.demos)
    return context * (1 + len(task.queries)) + sum(len(x) for x, _ in task.queries)


def _record(task: TextTask, answers, seconds: float, loss: list[float] | None, tokens: int) -> dict[str, Any]:
    correct = [
        normalize(a.text) == normalize(y) for a, (_, y) in zip(answers, task.queries, strict=True) if y is not None
    ]
    return {
        "task_id": task.id,
        "kind": "text",
        "answers": [a.text for a in answers],
        "method": answers[0].method if answers else None,
        "scores": [a.scores for a in answers] if any(a.scores for a in answers) else None,
        "correct": correct if correct else None,
        "score": sum(correct) / len(correct) if correct else None,
        "ttt_loss": loss,
        "seconds": round(seconds, 3),
        "tokens": {"ttt": tokens},
        "error": None,
    }


def _error_record(task: TextTask, error: str) -> dict[str, Any]:
    scored = [y for _, y in task.queries if y is not None]
    return {
        "task_id": task.id,
        "kind": "text",
        "answers": None,
        "method": None,
        "scores": None,
        "correct": [False] * len(scored) or None,
        "score": 0.0 if scored else None,
        "ttt_loss": None,
        "seconds": 0.0,
        "tokens": {"ttt": 0},
        "error": error,
    }


def run_group(model, fmt: TextFormat, group: list[TextTask], cfg: TextEvalConfig, lora_slot: list,
              progress: Callable[[int], None] | None = None) -> list[dict]:
    """TTT (optional) then prediction for one group of tasks; `lora_slot` holds the adapters across groups.
    `progress(1)` is called after each TTT step."""
    t0 = time.perf_counter()
    losses: list[list[float] | None] = [None] * len(group)
    tokens, select, use = 0, None, False
    tcfg = cfg.ttt_cfg
    if cfg.ttt:
        from testtime.lora import attach_multi_lora

        need = 1 if tcfg.shared else len(group)
        if not lora_slot or lora_slot[0].n_adapters < need:
            if lora_slot:
                lora_slot.pop().detach()
            lora_slot.append(
                attach_multi_lora(model, need, rank=tcfg.rank, alpha=tcfg.alpha, targets=tcfg.targets, seed=tcfg.seed)
            )
        lora = lora_slot[0]
        data = [build_text_dataset(t, fmt, tcfg) for t in group]
        res = train_text_adapters(model, lora, data, tcfg, pad_id=fmt.pad_id, task_ids=[t.id for t in group],
                                  progress=progress)
        losses = [[round(x, 4) for x in row] for row in res.losses]
        tokens = res.tokens // len(group)
        use = True
        if tcfg.shared:

            def select(idx):  # every row through the one shared adapter
                lora.use(None if idx is None else torch.zeros_like(idx))
        else:
            select = lora.use
    answers = predict_text(model, group, fmt, cfg.predict_cfg, select=select, use_adapters=use)
    seconds = (time.perf_counter() - t0) / len(group)
    return [_record(t, a, seconds, losses[k], tokens) for k, (t, a) in enumerate(zip(group, answers, strict=True))]


def evaluate_text(
    cfg: TextEvalConfig,
    out_dir: str | Path,
    *,
    model=None,
    tokenizer=None,
    tasks: Sequence[TextTask] | None = None,
    max_minutes: float | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) a text evaluation into `out_dir`; returns the records of the tasks asked for.

    Progress: a bar over tasks (with the running accuracy) and, with TTT, one over each group's steps.

    Under torchrun: rank 0 returns the merged records of every rank, the others their own.
    """
    started = time.monotonic()
    tasks = list(tasks) if tasks is not None else load_text_tasks(cfg.tasks)  # a bad file fails before any output
    dist = distributed.init()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = asdict(cfg)
    cfg_path = check_run_dir(out_dir, cfg_dict)
    all_tasks, tasks = tasks, tasks[: cfg.limit] if cfg.limit else tasks
    own_path = out_dir / (f"results.rank{dist.rank}.jsonl" if dist.enabled else RESULTS)
    done = finished_ids(out_dir)
    distributed.barrier(dist)  # every rank has read what is done before any rank writes
    if dist.is_main:
        cfg_path.write_text(json.dumps(cfg_dict, indent=1))
    todo = [t for t in tasks if t.id not in done]
    if dist.enabled:
        todo = distributed.shard(todo, dist.world, dist.rank, cost=text_task_cost)
    if model is None:
        from testtime.model import load_model

        loaded = load_model(cfg.model, device=distributed.device(dist, cfg.device))
        model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    size = group_size(cfg.max_group, next(model.parameters()).device, gpu=16, cpu=4)
    fmt = TextFormat(tokenizer)
    mine: list[dict[str, Any]] = []

    def emit(records: list[dict[str, Any]]) -> None:
        append_records(own_path, records)
        mine.extend(records)

    if cfg.ttt:
        bad = [t for t in todo if not t.demos]
        if bad:
            emit([_error_record(t, "no demonstrations to train on") for t in bad])
        todo = [t for t in todo if t.demos]
    slot: list = []
    show = show_progress and dist.is_main
    bar = tqdm(total=len(todo) + len(mine), desc="text tasks", unit="task", disable=not show)
    bar.update(len(mine))
    right = total = 0
    try:
        for i in range(0, len(todo), size):
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                break
            group = todo[i : i + size]
            steps = tqdm(total=cfg.ttt_cfg.steps, desc="  test-time training", unit="step", leave=False,
                         disable=not (show and cfg.ttt))
            with steps:
                records = run_group(model, fmt, group, cfg, slot, progress=steps.update)
            emit(records)
            right += sum(sum(r["correct"] or []) for r in records)
            total += sum(len(r["correct"] or []) for r in records)
            bar.update(len(group))
            if total:
                bar.set_postfix(queries_right=f"{right}/{total}")
    finally:
        bar.close()
        if slot:
            slot[0].detach()
    distributed.barrier(dist)  # every rank's file is complete
    if not dist.is_main:
        distributed.cleanup(dist)
        return mine
    records = merge_results(out_dir, tasks)
    write_text_report(out_dir, all_tasks)  # all: the merged file may hold tasks of an earlier, larger --limit
    distributed.cleanup(dist)
    return records


def evaluate_text_cli(
    tasks: str,
    model: str | None,
    ttt: bool,
    limit: int | None,
    out: Path | None,
    device: str | None,
    samples: int | None,
    epochs: int | None,
    lr: float | None,
    rank: int | None,
    shared: bool,
    max_minutes: float | None,
    max_group: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """What `testtime evaluate --tasks X.jsonl` runs: flags onto TextEvalConfig, then `evaluate_text`."""
    overrides = {
        k: v for k, v in (("samples", samples), ("epochs", epochs), ("lr", lr), ("rank", rank)) if v is not None
    }
    cfg = TextEvalConfig(
        tasks=tasks,
        model=model,
        ttt=ttt,
        limit=limit,
        device=device,
        ttt_cfg=text_ttt_config(**overrides, shared=shared),
    )
    if max_group is not None:
        cfg.max_group = max_group
    out = out or Path("runs") / f"text-{Path(tasks).stem}-{'ttt' if ttt else 'icl'}"
    records = evaluate_text(cfg, out, max_minutes=max_minutes)
    return out, summary(records)
