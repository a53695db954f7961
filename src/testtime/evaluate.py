"""Evaluation recipe: tasks -> (TTT adapters) -> augmented predictions -> votes -> pass@2, one JSON line per task.

Tasks run in groups: a group's adapters train together in one batch and its predictions
are generated together. Each task's record is appended to `results.jsonl` as soon as its
group finishes, and a restarted run skips the tasks already there, so no finished work is lost.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from testtime.encode import Codec, TooLongError
from testtime.predict import PredictConfig, predict_tasks
from testtime.tasks import Task, TaskError, load_tasks
from testtime.ttt import TTTConfig, build_dataset, train_adapters
from testtime.vote import attempts, hierarchical_vote, is_solved


@dataclass
class EvalConfig:
    tasks: str = "arc1/eval"
    model: str | None = None  # None: the shipped base model
    ttt: bool = True
    limit: int | None = None
    device: str | None = None  # None: cuda when available
    max_group: int = 64  # tasks trained and predicted together
    attempts: int = 2
    ttt_cfg: TTTConfig = field(default_factory=TTTConfig)
    predict_cfg: PredictConfig = field(default_factory=PredictConfig)


def config_to_dict(cfg: EvalConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> EvalConfig:
    d = dict(d)
    known = {f.name for f in fields(EvalConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    ttt = TTTConfig(**d.pop("ttt_cfg", {}))
    pred = PredictConfig(**d.pop("predict_cfg", {}))
    return EvalConfig(**d, ttt_cfg=ttt, predict_cfg=pred)


def _grid(g) -> list[list[int]] | None:
    return None if g is None else np.asarray(g).astype(int).tolist()


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records from a results file; a line cut short by a crash is ignored, not fatal."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "task_id" in rec:
            out.append(rec)
    return out


def _append(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _record(task: Task, preds, n_attempts: int, per_group: int, seconds: float, ttt_loss: list[float] | None,
            ttt_tokens: int) -> dict[str, Any]:
    test_attempts, test_votes, correct, greedy, greedy_correct = [], [], [], [], []
    for qi, plist in enumerate(preds.predictions):
        cands = hierarchical_vote(plist, per_group=per_group)
        att = attempts(cands, n_attempts)
        first = next((p.grid for p in plist if p.group == "id"), None)
        test_attempts.append([_grid(a) for a in att])
        test_votes.append([c.to_json() for c in cands[:5]])
        greedy.append(_grid(first))
        truth = task.test[qi].output
        if truth is not None:
            correct.append(is_solved(att, truth))
            greedy_correct.append(is_solved([first], truth))
    solved = task.has_solutions
    return {
        "task_id": task.id,
        "attempts": test_attempts,
        "correct": correct if solved else None,
        "score": float(np.mean(correct)) if solved else None,
        "greedy": greedy,
        "greedy_correct": greedy_correct if solved else None,
        "greedy_score": float(np.mean(greedy_correct)) if solved else None,
        "votes": test_votes,
        "ttt_loss": ttt_loss,
        "seconds": seconds,
        "tokens": {"ttt": ttt_tokens, "generated": preds.generated_tokens},
        "invalid": preds.invalid,
        "error": None,
    }


def _error_record(task: Task, error: str) -> dict[str, Any]:
    solved = task.has_solutions
    zeros = [False] * len(task.test)
    return {"task_id": task.id, "attempts": [[None, None] for _ in task.test], "correct": zeros if solved else None,
            "score": 0.0 if solved else None, "greedy": [None for _ in task.test],
            "greedy_correct": zeros if solved else None, "greedy_score": 0.0 if solved else None, "votes": [],
            "ttt_loss": None, "seconds": 0.0, "tokens": {"ttt": 0, "generated": 0}, "invalid": 0, "error": error}


def plan_groups(tasks: Sequence[Task], lengths: dict[str, int], cfg: EvalConfig) -> list[list[Task]]:
    """Tasks of similar sequence length together, each group under the training token budget."""
    order = sorted(tasks, key=lambda t: lengths.get(t.id, 0))
    groups: list[list[Task]] = []
    cur: list[Task] = []
    for t in order:
        width = lengths.get(t.id, 0)
        rows = (len(cur) + 1) * cfg.ttt_cfg.batch_size
        if cur and (len(cur) >= cfg.max_group or rows * width > cfg.ttt_cfg.token_budget):
            groups.append(cur)
            cur = []
        cur.append(t)
    if cur:
        groups.append(cur)
    return groups


class Evaluator:
    """Holds the model (and its adapter slots) across groups; `run` is the whole recipe."""

    def __init__(self, cfg: EvalConfig, model, codec: Codec) -> None:
        self.cfg = cfg
        self.model = model
        self.codec = codec
        self.lora = None

    def _adapters(self, n: int):
        from testtime.lora import attach_multi_lora

        if self.lora is None or self.lora.n_adapters < n:
            if self.lora is not None:
                self.lora.detach()
            t = self.cfg.ttt_cfg
            self.lora = attach_multi_lora(self.model, n, rank=t.rank, alpha=t.alpha, targets=t.targets, seed=t.seed)
        return self.lora

    def run_group(self, group: list[Task], datasets: dict[str, list], progress=None) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        tcfg = self.cfg.ttt_cfg
        losses: list[list[float] | None] = [None] * len(group)
        ttt_tokens = 0
        select = None
        use_adapters = False
        if self.cfg.ttt:
            data = [datasets[t.id] for t in group]
            if tcfg.shared:
                # Ablation: one adapter learns every task of the group from the same data and steps.
                lora = self._adapters(1)
                data = [[s for d in data for s in d]]
                run_cfg = TTTConfig(**{**asdict(tcfg), "samples": tcfg.samples * len(group),
                                       "batch_size": tcfg.batch_size * len(group)})
            else:
                lora = self._adapters(len(group))
                run_cfg = tcfg
            lora.reset(tcfg.seed)
            result = train_adapters(self.model, lora.parameters(), data, run_cfg, pad_id=self.codec.pad_id,
                                    select=lora.use, task_ids=[t.id for t in group] if not tcfg.shared else ["shared"],
                                    progress=progress)
            losses = [result.losses[0 if tcfg.shared else k] for k in range(len(group))]
            ttt_tokens = result.tokens // len(group)
            use_adapters = True
            if tcfg.shared:
                def select(idx):  # every row goes through the one shared adapter
                    lora.use(None if idx is None else torch.zeros_like(idx))
            else:
                select = lora.use
        preds, problems = predict_tasks(self.model, group, self.codec, self.cfg.predict_cfg, select=select,
                                        use_adapters=use_adapters)
        seconds = (time.perf_counter() - t0) / len(group)
        records = [_record(t, p, self.cfg.attempts, self.cfg.predict_cfg.per_group, seconds,
                        [round(x, 4) for x in losses[k]] if losses[k] else None, ttt_tokens)
                   for k, (t, p) in enumerate(zip(group, preds, strict=True))]
        for r in records:
            notes = [p for p in problems if p.startswith(f"task {r['task_id']} ")]
            if notes:
                r["error"] = "; ".join(notes)
        return records


def evaluate(cfg: EvalConfig, out_dir: Path, *, model=None, codec: Codec | None = None,
             tasks: Sequence[Task] | None = None, show_progress: bool = True,
             max_minutes: float | None = None) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation into `out_dir`; with `max_minutes`, start no group after that time."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.json"
    cfg_dict = config_to_dict(cfg)
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if {k: v for k, v in old.items() if k != "limit"} != {k: v for k, v in cfg_dict.items() if k != "limit"}:
            raise TaskError(f"{out_dir}: holds a run with another configuration; pick a new --out")
    cfg_path.write_text(json.dumps(cfg_dict, indent=1))

    if tasks is None:
        tasks = load_tasks(cfg.tasks)
    tasks = list(tasks)[: cfg.limit] if cfg.limit else list(tasks)
    results_path = out_dir / "results.jsonl"
    done = {r["task_id"] for r in read_results(results_path)}
    todo = [t for t in tasks if t.id not in done]

    if model is None:
        from testtime.model import load_model

        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_model(cfg.model, device=device)
        model, codec = loaded.model, loaded.codec
    assert codec is not None
    model.eval()

    datasets: dict[str, list] = {}
    lengths: dict[str, int] = {}
    bad: list[dict[str, Any]] = []
    for t in todo:
        try:
            if cfg.ttt:
                datasets[t.id] = build_dataset(t, codec, cfg.ttt_cfg)
                lengths[t.id] = max(len(s) for s in datasets[t.id])
            else:
                lengths[t.id] = sum(e.input.size + e.output.size for e in t.train)
        except TooLongError as e:
            bad.append(_error_record(t, str(e)))
    if bad:
        _append(results_path, bad)
    bad_ids = {r["task_id"] for r in bad}
    todo = [t for t in todo if t.id not in bad_ids]
    groups = plan_groups(todo, lengths, cfg) if cfg.ttt else [todo[i: i + cfg.max_group] for i in range(0, len(todo), cfg.max_group)]

    ev = Evaluator(cfg, model, codec)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="tasks", disable=not show_progress, unit="task")
    try:
        for group in groups:
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                bar.write(f"stopping after {max_minutes} minutes; run the same command again to resume")
                break
            try:
                records = ev.run_group(group, datasets)
            except torch.OutOfMemoryError:
                if len(group) == 1:
                    records = [_error_record(group[0], "out of GPU memory")]
                else:
                    torch.cuda.empty_cache()
                    half = len(group) // 2
                    records = ev.run_group(group[:half], datasets) + ev.run_group(group[half:], datasets)
            _append(results_path, records)
            bar.update(len(group))
            scored = [r for r in read_results(results_path) if r.get("score") is not None]
            if scored:
                bar.set_postfix(pass2=f"{sum(r['score'] for r in scored):.1f}/{len(scored)}")
    finally:
        bar.close()
        if ev.lora is not None:
            ev.lora.detach()
    wanted = {t.id for t in tasks}
    return [r for r in read_results(results_path) if r["task_id"] in wanted]


def solve_task(task: Task, cfg: EvalConfig, model, codec: Codec, *, show_progress: bool = True) -> dict[str, Any]:
    """One task, start to end, with a progress bar over its TTT steps; returns its record."""
    datasets = {task.id: build_dataset(task, codec, cfg.ttt_cfg)} if cfg.ttt else {}
    ev = Evaluator(cfg, model, codec)
    model.eval()
    try:
        with tqdm(total=cfg.ttt_cfg.steps if cfg.ttt else 0, desc="test-time training", unit="step",
                  disable=not (show_progress and cfg.ttt)) as bar:
            return ev.run_group([task], datasets, progress=bar.update)[0]
    finally:
        if ev.lora is not None:
            ev.lora.detach()
