"""The text recipe: text few-shot tasks -> (TTT adapters) -> answers -> exact-match accuracy.

`TextKind` is how the run pipeline (`runs`) runs text tasks: each group's adapters train on shuffled
demonstration sequences (`text_ttt`), then every query is answered by greedy decoding or by ranking the
task's options (`text_predict`). `score` is a task's accuracy over its scored queries; the run ends with
`report.html` (see `text_report`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from testtime.core.config import check, typed
from testtime.model.loading import load_model
from testtime.model.lora import MultiLoRA
from testtime.recipes import runs
from testtime.stages.ttt import TTTConfig, fresh_adapters, group_adapters, max_tasks_together, train_group
from testtime.text.encode import TextFormat, normalize
from testtime.text.predict import TextPredictConfig, predict_text
from testtime.text.report import summary, write_text_report
from testtime.text.tasks import TextTask, load_text_tasks
from testtime.text.ttt import build_text_dataset, text_ttt_config


@dataclass
class TextEvalConfig:
    tasks: str = "data/text/sample.jsonl"
    model: str | None = None
    ttt: bool = True
    limit: Annotated[int | None, runs.TASKS] = None
    device: str | None = None
    max_group: Annotated[int | None, runs.GROUP] = None  # tasks whose adapters train together; None: see runs.GROUP_SIZES
    ttt_cfg: TTTConfig = field(default_factory=text_ttt_config)
    predict_cfg: TextPredictConfig = field(default_factory=TextPredictConfig)


def text_task_cost(task: TextTask) -> int:
    """Estimated work of a task, in characters: its context is read once per TTT sample and once per query."""
    context = len(task.instruction) + sum(len(x) + len(y) for x, y in task.demos)
    return context * (1 + len(task.queries)) + sum(len(x) for x, _ in task.queries)


def task_record(task: TextTask, answers, seconds: float, loss: list[float] | None, tokens: int) -> dict[str, Any]:
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


def error_record(task: TextTask, error: str) -> dict[str, Any]:
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


def text_config_from_dict(d: Any, where: str = "config") -> TextEvalConfig:
    """A TextEvalConfig from a JSON object; unknown keys and values of the wrong type are one-line ConfigErrors."""
    return typed(TextEvalConfig, d, where)


def default_out(cfg: TextEvalConfig) -> Path:
    return Path("runs") / f"text-{Path(cfg.tasks).stem}-{'ttt' if cfg.ttt else 'icl'}"


class TextKind(runs.AdapterSlots):
    """Text tasks in the run pipeline (`runs.TaskKind`); holds the model and its adapters across groups."""

    name, noun = "text", "text tasks"

    def __init__(self, cfg: TextEvalConfig, model=None, tokenizer=None, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.model, self.tokenizer = model, tokenizer
        self.lora: MultiLoRA | None = None
        self.show_steps = show_progress and cfg.ttt

    def cost(self, task: TextTask) -> int:
        return text_task_cost(task)

    def load(self, device: str):
        if self.model is None:
            loaded = load_model(self.cfg.model, device)
            self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.model.eval()
        self.fmt = TextFormat(self.tokenizer)
        return self.model

    def before_tasks(self, tasks: Sequence[TextTask], out_dir: Path, pending: bool, show_progress: bool = True) -> None:
        """Text runs have no stage over all their tasks."""

    def prepare(self, tasks: Sequence[TextTask]) -> tuple[list[TextTask], list[dict[str, Any]]]:
        if not self.cfg.ttt:
            return list(tasks), []
        return [t for t in tasks if t.demos], [error_record(t, "no demonstrations to train on") for t in tasks if not t.demos]

    def groups(self, tasks: Sequence[TextTask], size: int) -> list[list[TextTask]]:
        if self.cfg.ttt:
            size = min(size, max_tasks_together(self.model, self.cfg.ttt_cfg) or size)
        return [list(tasks[i: i + size]) for i in range(0, len(tasks), size)]

    def run_group(self, group: list[TextTask], token_budget: int | None = None) -> list[dict[str, Any]]:
        """TTT (optional) then prediction for one group of tasks, with a progress bar over the TTT steps."""
        cfg, tcfg = self.cfg, self.cfg.ttt_cfg
        pcfg = cfg.predict_cfg if token_budget is None else TextPredictConfig(**{**asdict(cfg.predict_cfg),
                                                                                 "token_budget": token_budget})
        t0 = time.perf_counter()
        losses: list[list[float] | None] = [None] * len(group)
        tokens, adapters = 0, None
        if cfg.ttt:
            ids = [t.id for t in group]
            self.lora = fresh_adapters(self.model, self.lora, ids, tcfg)
            data = [build_text_dataset(t, self.fmt, tcfg) for t in group]
            with tqdm(total=tcfg.steps, desc="  test-time training", unit="step", leave=False,
                      disable=not self.show_steps) as steps:
                res = train_group(self.model, self.lora, data, tcfg, pad_id=self.fmt.pad_id, task_ids=ids,
                                  progress=steps.update)
            losses = [[round(x, 4) for x in row] for row in res.losses]
            tokens = res.tokens // len(group)
            adapters = group_adapters(self.lora, len(group), tcfg)
        answers = predict_text(self.model, group, self.fmt, pcfg, adapters=adapters)
        seconds = (time.perf_counter() - t0) / len(group)
        return [task_record(t, a, seconds, losses[k], tokens) for k, (t, a) in enumerate(zip(group, answers, strict=True))]

    def token_budget(self) -> int:
        return self.cfg.predict_cfg.token_budget

    def error_record(self, task: TextTask, error: str) -> dict[str, Any]:
        return error_record(task, error)

    def postfix(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        right = sum(sum(r["correct"] or []) for r in records)
        total = sum(len(r["correct"] or []) for r in records)
        return {"queries_right": f"{right}/{total}"} if total else {}

    def summarize(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return summary(records)

    def finish(self, out_dir: Path, records, tasks: Sequence[TextTask], all_tasks: Sequence[TextTask]) -> None:
        write_text_report(out_dir, all_tasks)  # all: the merged file may hold tasks of an earlier, larger --limit


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
    """Run (or resume) a text evaluation into `out_dir` (see `runs.run`); returns the records of the tasks asked
    for. Progress: a bar over tasks (with the running accuracy) and, with TTT, one over each group's steps."""
    from testtime.core import distributed
    check(cfg)
    tasks = list(tasks) if tasks is not None else load_text_tasks(cfg.tasks)  # a bad file fails before any output
    show = show_progress and distributed.from_env().is_main
    return runs.run(TextKind(cfg, model, tokenizer, show), asdict(cfg), tasks, out_dir, device=cfg.device,
                    limit=cfg.limit, max_group=cfg.max_group, max_minutes=max_minutes, show_progress=show)
