"""The text recipe: text few-shot tasks -> (TTT adapters) -> answers -> exact-match accuracy.

`TextKind` is how the run pipeline (`runs`) runs text tasks: each group's adapters train on sequences built from
the demonstrations (`text.ttt`: shuffled, leave-one-out or single pairs), one adapter per task, trained once and
serving all its queries in one batch; then every query is answered by greedy decoding or by ranking the task's
options (`text.predict`), with or without the demonstrations in the prompt, under one or several demo orders.
`score` is a task's accuracy over its scored queries; the run ends with `report.html` (see `text.report`).

The paper's BBH rows, as configs (the CLI's flags in brackets):
- zero-shot: `ttt=False`, `predict_cfg.icl=False` [--no-ttt --no-icl]
- in-context learning: `ttt=False` [--no-ttt]
- TTT without demonstrations in the prompt: `ttt_data="pairs"`, `predict_cfg.icl=False` [--ttt-data pairs --no-icl]
- TTT + in-context learning, the paper's recipe: the defaults
- the same with voting over demo orders: `predict_cfg.orders=5` [--orders 5]
- one adapter per query instead of one shared by the task's queries: `per_query=True` [--per-query]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from testtime.core.config import ConfigError, OneOf, Range, check, typed
from testtime.model.loading import load_model
from testtime.model.lora import MultiLoRA
from testtime.recipes import runs
from testtime.stages.ttt import TTTConfig, fresh_adapters, group_adapters, max_tasks_together, train_group
from testtime.text.encode import TextFormat, normalize
from testtime.text.predict import TextPredictConfig, predict_text
from testtime.text.report import summary, write_text_report
from testtime.text.tasks import TextTask, first_queries, load_text_tasks
from testtime.text.ttt import TTT_DATA, build_text_dataset, text_ttt_config


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
    ttt_data: Annotated[str, OneOf(*TTT_DATA)] = "shuffled"  # what the adapters learn from (text.ttt)
    # One adapter per query, each from its own draw of the task's TTT data, instead of one per task shared by its
    # queries; then max_group counts the adapters trained together, and a task runs as a group of its own.
    per_query: bool = False
    max_queries: Annotated[int | None, Range(1, 10**6)] = None  # only the first N queries of each task


# What each setting needs, said in the flag's words (the CLI's) and the key's: a contradiction is refused, not run.
def check_text(cfg: TextEvalConfig) -> TextEvalConfig:
    """`cfg` when its settings make sense together; else a one-line ConfigError."""
    check(cfg)
    if cfg.per_query and not cfg.ttt:
        raise ConfigError("--per-query (per_query) trains an adapter per query: it needs TTT, not --no-ttt")
    if cfg.per_query and cfg.ttt_cfg.shared:
        raise ConfigError("--per-query (per_query) and --shared (ttt_cfg.shared) contradict: one adapter per query "
                          "against one for a whole batch of tasks")
    if cfg.predict_cfg.orders > 1 and not cfg.predict_cfg.icl:
        raise ConfigError("--orders (predict_cfg.orders) votes over orders of the demonstrations in the prompt; "
                          "--no-icl (predict_cfg.icl=false) leaves none")
    return cfg


TTT_ONLY = ("samples", "epochs", "lr", "rank", "adapter", "demo_loss", "shared", "ttt_data", "per_query")


def check_text_flags(cfg: TextEvalConfig, given: Sequence[str]) -> None:
    """The flags given (by their option names, `demo_loss`) that only shape TTT are refused in a run without it."""
    if not cfg.ttt:
        for key in given:
            if key in TTT_ONLY:
                raise ConfigError(f"--{key.replace('_', '-')} shapes TTT, and this run has none (--no-ttt)")


def text_task_cost(task: TextTask) -> int:
    """Estimated work of a task, in characters: its context is read once per TTT sample and once per query."""
    context = len(task.instruction) + sum(len(x) + len(y) for x, y in task.demos)
    return context * (1 + len(task.queries)) + sum(len(x) for x, _ in task.queries)


def adapter_key(task_id: str, query: int) -> str:
    """What seeds a per-query adapter (its start and its draw of TTT data): a key of its own, so that the adapters
    of one task's queries differ."""
    return f"{task_id}#q{query}"


def task_record(task: TextTask, answers, seconds: float, loss: list[float] | None, tokens: int) -> dict[str, Any]:
    def marks(texts: list[str]) -> list[bool]:
        return [normalize(a) == normalize(y) for a, (_, y) in zip(texts, task.queries, strict=True) if y is not None]

    correct = marks([a.text for a in answers])
    rec = {
        "task_id": task.id,
        "kind": "text",
        "answers": [a.text for a in answers],
        "method": answers[0].method if answers else None,
        "scores": [a.scores for a in answers] if any(a.scores for a in answers) else None,
        "order_answers": [list(a.votes) for a in answers] if any(a.votes for a in answers) else None,
        "correct": correct if correct else None,
        "score": sum(correct) / len(correct) if correct else None,
        "ttt_loss": loss,
        "seconds": round(seconds, 3),
        "tokens": {"ttt": tokens},
        "error": None,
    }
    if rec["order_answers"] and correct:
        # What the task's own demo order alone answered, beside the vote, so one run pairs the two
        # (`testtime compare RUN RUN --selection-a first_order --selection-b vote`).
        first = marks([a.votes[0] if a.votes else a.text for a in answers])
        rec["selections"] = {"vote": rec["score"], "first_order": sum(first) / len(first)}
        rec["selection_correct"] = {"vote": correct, "first_order": first}
    return rec


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
    """A TextEvalConfig from a JSON object; unknown keys and values of the wrong type are one-line ConfigErrors.
    A `ttt_cfg` that names only some keys keeps the text recipe's values for the others (`text_ttt_config`), not
    those of the grid kind's TTTConfig (32 samples, rank 32, lr 5e-4)."""
    if isinstance(d, dict) and isinstance(d.get("ttt_cfg"), dict):
        d = {**d, "ttt_cfg": {**asdict(text_ttt_config()), **d["ttt_cfg"]}}
    return typed(TextEvalConfig, d, where)


def default_out(cfg: TextEvalConfig) -> Path:
    """runs/text-TASKS-ROW: each of the paper's rows its own folder (a run folder resumes only its own config)."""
    icl = cfg.predict_cfg.icl
    row = ("ttt" if icl else "ttt-no-icl") if cfg.ttt else ("icl" if icl else "zero")
    if cfg.ttt and cfg.ttt_data != "shuffled":
        row += f"-{cfg.ttt_data}"
    if cfg.predict_cfg.orders > 1:
        row += f"-vote{cfg.predict_cfg.orders}"
    if cfg.per_query:
        row += "-per-query"
    return Path("runs") / f"text-{Path(cfg.tasks).stem}-{row}"


class TextKind(runs.AdapterSlots):
    """Text tasks in the run pipeline (`runs.TaskKind`); holds the model and its adapters across groups."""

    name, noun = "text", "text tasks"

    def __init__(self, cfg: TextEvalConfig, model=None, tokenizer=None, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.model, self.tokenizer = model, tokenizer
        self.lora: MultiLoRA | None = None
        self.show_steps = show_progress and cfg.ttt
        self.adapters_together = 1

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
        if self.cfg.per_query:  # `size` adapters train together, a task's queries in chunks of that many
            self.adapters_together = size
            size = 1
        return [list(tasks[i: i + size]) for i in range(0, len(tasks), size)]

    def _train(self, units: list[TextTask], keys: list[str]):
        """Fresh adapters for `units` (tasks, or single-query tasks), slot k seeded by keys[k], trained together on
        their TTT data: (adapters, loss curves, tokens)."""
        tcfg = self.cfg.ttt_cfg
        self.lora = fresh_adapters(self.model, self.lora, keys, tcfg)
        data = [build_text_dataset(u, self.fmt, tcfg, self.cfg.ttt_data, key=k) for u, k in zip(units, keys, strict=True)]
        with tqdm(total=tcfg.steps, desc="  test-time training", unit="step", leave=False,
                  disable=not self.show_steps) as steps:
            res = train_group(self.model, self.lora, data, tcfg, pad_id=self.fmt.pad_id, task_ids=keys,
                              progress=steps.update)
        return group_adapters(self.lora, len(units), tcfg), res.losses, res.tokens

    def _per_query(self, task: TextTask, pcfg: TextPredictConfig):
        """One adapter per query (`adapter_key`), `adapters_together` at a time: each query runs as a task of its
        own. Returns its answers, the mean loss curve of its adapters, and the TTT tokens."""
        answers, curves, tokens = [], [], 0
        units = [dataclasses.replace(task, queries=(q,)) for q in task.queries]
        for i in range(0, len(units), self.adapters_together):
            chunk = units[i: i + self.adapters_together]
            keys = [adapter_key(task.id, i + k) for k in range(len(chunk))]
            adapters, losses, n = self._train(chunk, keys)
            answers += [dataclasses.replace(a[0], task=0, query=i + k)
                        for k, a in enumerate(predict_text(self.model, chunk, self.fmt, pcfg, adapters=adapters))]
            curves += losses
            tokens += n
        mean = [sum(col) / len(col) for col in zip(*curves, strict=True)]
        return answers, mean, tokens

    def run_group(self, group: list[TextTask], token_budget: int | None = None) -> list[dict[str, Any]]:
        """TTT (optional) then prediction for one group of tasks, with a progress bar over the TTT steps."""
        cfg = self.cfg
        pcfg = cfg.predict_cfg if token_budget is None else TextPredictConfig(**{**asdict(cfg.predict_cfg),
                                                                                 "token_budget": token_budget})
        t0 = time.perf_counter()
        if cfg.per_query:
            records = []
            for task in group:
                answers, loss, tokens = self._per_query(task, pcfg)
                records.append(task_record(task, answers, time.perf_counter() - t0, [round(x, 4) for x in loss],
                                           tokens))
                t0 = time.perf_counter()
            return records
        losses: list[list[float] | None] = [None] * len(group)
        tokens, adapters = 0, None
        if cfg.ttt:  # one adapter a task, trained once; all its queries are answered through it, batched
            adapters, curves, tokens = self._train(group, [t.id for t in group])
            losses = [[round(x, 4) for x in row] for row in curves]
            tokens //= len(group)
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
    check_text(cfg)
    tasks = list(tasks) if tasks is not None else load_text_tasks(cfg.tasks)  # a bad file fails before any output
    tasks = [first_queries(t, cfg.max_queries) for t in tasks]
    show = show_progress and distributed.from_env().is_main
    return runs.run(TextKind(cfg, model, tokenizer, show), asdict(cfg), tasks, out_dir, device=cfg.device,
                    limit=cfg.limit, max_group=cfg.max_group, max_minutes=max_minutes, show_progress=show)
