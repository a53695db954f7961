"""Text few-shot tasks (the paper's BIG-Bench Hard setting) as small immutable values, and how to read them.

A task file is JSON Lines, one task a line (or a `.json` file holding one task object, or a folder of both):

    {"id": "dyck_0", "instruction": "Complete the rest of the sequence ...",
     "demos": [{"input": "( [", "target": "] )"}, ...],
     "queries": [{"input": "{ <", "target": "> }"}, {"input": "( ("}],
     "options": null}

`demos` and `queries` also accept [input, target] pairs; a query's target is optional (unscored).
`options`, when given, lists every allowed answer: prediction then ranks them by likelihood, and
every target must be one of them. Targets are one line (the prompt format ends answers with a newline).
A bad file fails here with one line naming the file, line and problem.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testtime.core import jsonio
from testtime.data.tasks import TaskError

Pair = tuple[str, str]


@dataclass(frozen=True)
class TextTask:
    id: str
    instruction: str
    demos: tuple[Pair, ...]
    queries: tuple[tuple[str, str | None], ...]
    options: tuple[str, ...] | None = None

    @property
    def has_targets(self) -> bool:
        return all(t is not None for _, t in self.queries)

    def __str__(self) -> str:
        opts = f", {len(self.options)} options" if self.options else ""
        return f"TextTask({self.id}: {len(self.demos)} demos, {len(self.queries)} queries{opts})"


def _pair(value: Any, where: str, need_target: bool) -> tuple[str, str | None]:
    if isinstance(value, dict):
        unknown = set(value) - {"input", "target"}
        if unknown:
            raise TaskError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected input, target)")
        x, y = value.get("input"), value.get("target")
    elif isinstance(value, list) and len(value) in (1, 2):
        x, y = value[0], value[1] if len(value) == 2 else None
    else:
        raise TaskError(f'{where}: expected {{"input": ..., "target": ...}} or [input, target], got {str(value)[:40]}')
    if not isinstance(x, str):
        raise TaskError(f"{where}: input must be a string, got {type(x).__name__}")
    if y is None:
        if need_target:
            raise TaskError(f"{where}: a demonstration needs a target")
        return x, None
    if not isinstance(y, str):
        raise TaskError(f"{where}: target must be a string, got {type(y).__name__}")
    if not y.strip():
        raise TaskError(f"{where}: target is empty")
    if "\n" in y:
        raise TaskError(f"{where}: target has a newline; targets are one line")
    return x, y


def task_from_dict(d: Any, where: str) -> TextTask:
    """Validate one task object; `where` (e.g. "file.jsonl:3") starts every error message."""
    if not isinstance(d, dict):
        raise TaskError(f"{where}: a task must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - {"id", "instruction", "demos", "queries", "options"}
    if unknown:
        raise TaskError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    tid = d.get("id")
    if not isinstance(tid, str) or not tid:
        raise TaskError(f'{where}: missing or empty "id"')
    where = f"{where}: task {tid}"
    instruction = d.get("instruction") or ""
    if not isinstance(instruction, str):
        raise TaskError(f"{where}: instruction must be a string")
    demos_raw, queries_raw = d.get("demos", []), d.get("queries")
    if not isinstance(demos_raw, list):
        raise TaskError(f"{where}: demos must be a list")
    if not isinstance(queries_raw, list) or not queries_raw:
        raise TaskError(f'{where}: needs a non-empty "queries" list')
    demos = tuple(_pair(v, f"{where}: demo {i}", True) for i, v in enumerate(demos_raw))
    queries = tuple(_pair(v, f"{where}: query {i}", False) for i, v in enumerate(queries_raw))
    options = d.get("options")
    if options is not None:
        if not isinstance(options, list) or len(options) < 2:
            raise TaskError(f"{where}: options must be a list of at least 2 strings")
        if not all(isinstance(o, str) and o.strip() and "\n" not in o for o in options):
            raise TaskError(f"{where}: options must be non-empty one-line strings")
        if len(set(options)) != len(options):
            raise TaskError(f"{where}: options repeat")
        for kind, pairs in (("demo", demos), ("query", queries)):
            for i, (_, y) in enumerate(pairs):
                if y is not None and y not in options:
                    raise TaskError(f"{where}: {kind} {i} target {y[:40]!r} is not among the options")
        options = tuple(options)
    return TextTask(tid, instruction, demos, queries, options)  # type: ignore[arg-type]


def _read_file(path: Path) -> list[TextTask]:
    if path.suffix == ".json":
        return [task_from_dict(jsonio.read_json(path, error=TaskError), str(path))]
    return [task_from_dict(d, f"{path}:{n}") for n, d in jsonio.read_json_lines(path, error=TaskError)]


def is_text_task_path(spec: str | Path) -> bool:
    """A `.jsonl` file, or a folder holding `.jsonl` files: what `evaluate --tasks` routes to text evaluation."""
    p = Path(spec)
    return p.suffix == ".jsonl" or (p.is_dir() and any(p.glob("*.jsonl")))


def load_text_tasks(spec: str | Path) -> list[TextTask]:
    """Tasks from a .jsonl file (one a line), a .json file (one task), or a folder of those, sorted by file name."""
    p = Path(spec)
    if not p.exists():
        raise TaskError(f"{p}: no such file or folder")
    files = sorted([*p.glob("*.jsonl"), *p.glob("*.json")]) if p.is_dir() else [p]
    if not files:
        raise TaskError(f"{p}: no .jsonl or .json files in this folder")
    tasks: list[TextTask] = []
    seen: dict[str, str] = {}
    for f in files:
        for t in _read_file(f):
            if t.id in seen:
                raise TaskError(f"{f}: task id {t.id} repeats (first in {seen[t.id]})")
            seen[t.id] = str(f)
            tasks.append(t)
    if not tasks:
        raise TaskError(f"{p}: no tasks")
    return tasks


def first_queries(task: TextTask, n: int | None) -> TextTask:
    """The task with only its first `n` queries (all with None)."""
    return task if n is None or len(task.queries) <= n else TextTask(task.id, task.instruction, task.demos,
                                                                      task.queries[:n], task.options)


def task_to_dict(task: TextTask) -> dict[str, Any]:
    return {
        "id": task.id,
        "instruction": task.instruction,
        "demos": [{"input": x, "target": y} for x, y in task.demos],
        "queries": [{"input": x, "target": y} for x, y in task.queries],
        "options": list(task.options) if task.options else None,
    }


def write_text_tasks(tasks: Sequence[TextTask], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(task_to_dict(t)) + "\n" for t in tasks), encoding="utf-8")
    return path


def bbh_task(
    name: str,
    examples: Sequence[dict[str, str]],
    *,
    shots: int = 10,
    instruction: str = "",
    max_options: int = 0,
    seed: int = 0,
) -> TextTask:
    """A BIG-Bench Hard task file (`{"examples": [{"input", "target"}]}`) as a TextTask.

    `shots` random examples become the demos, the rest the queries. With `max_options` > 0 and at most
    that many distinct targets in the task (True/False, (A)..(F)), those targets become its options.
    """
    if len(examples) <= shots:
        raise TaskError(f"bbh task {name}: {len(examples)} examples, need more than {shots} shots")
    order = np.random.default_rng(seed).permutation(len(examples))
    pairs = [_pair(examples[i], f"bbh task {name}: example {i}", True) for i in order]
    targets = sorted({y for _, y in pairs if y is not None})
    options = tuple(targets) if 0 < len(targets) <= max_options else None
    return TextTask(name, instruction, tuple(pairs[:shots]), tuple(pairs[shots:]), options)  # type: ignore[arg-type]


MAX_FIXED_OPTIONS = 12  # more shared options than this (dyck's 84) are better generated than ranked


def _best(scores: dict[str, float]) -> str:
    return max(scores, key=lambda k: scores[k])


def bigbench_task(
    name: str, task_json: dict, *, shots: int = 10, queries: int = 20, max_chars: int = 1200, seed: int = 0
) -> TextTask | None:
    """A BIG-bench JSON task (`{"examples": [{"input", "target" | "target_scores"}], "task_prefix"}`) as a
    TextTask of `shots` demos and `queries` scored queries, picked at random (seeded by seed and name);
    None when it has too few usable examples.

    Answers follow BIG-Bench Hard's conventions: examples that all share one small option set (Yes/No)
    rank those options; options that change per example are appended to the input as "(A) ... (B) ..."
    and the letters are ranked; other tasks (and dyck_languages, whose options are every closing
    sequence) are generated and scored by exact match.
    """
    examples = [e for e in task_json["examples"] if len(e["input"]) <= max_chars]
    rng = random.Random(f"{seed}:{name}")
    rng.shuffle(examples)
    scored = [e for e in examples if "target_scores" in e]
    option_sets = {tuple(sorted(e["target_scores"])) for e in scored}
    all_scored = bool(examples) and len(scored) == len(examples)
    fixed = all_scored and len(option_sets) == 1 and len(next(iter(option_sets))) <= MAX_FIXED_OPTIONS
    lettered = all_scored and len(option_sets) > 1 and max(len(s) for s in option_sets) <= 26
    pairs: list[tuple[str, str]] = []
    for e in examples:
        x = e["input"].strip()
        if lettered:
            keys = list(e["target_scores"])
            rng.shuffle(keys)
            letters = [f"({c})" for c in string.ascii_uppercase[: len(keys)]]
            x += "\nOptions:\n" + "\n".join(f"{ltr} {k}" for ltr, k in zip(letters, keys, strict=True))
            y = letters[keys.index(_best(e["target_scores"]))]
        elif "target_scores" in e:
            y = _best(e["target_scores"])
        else:
            t = e["target"]
            y = t[0] if isinstance(t, list) else t
        y = y.strip()
        if y and "\n" not in y:
            pairs.append((x, y))
        if len(pairs) == shots + queries:
            break
    if len(pairs) < shots + queries:
        return None
    if fixed:
        options = tuple(sorted(next(iter(option_sets))))
    elif lettered:
        n = max(len(s) for s in option_sets)
        options = tuple(f"({c})" for c in string.ascii_uppercase[:n])
    else:
        options = None
    instruction = (task_json.get("task_prefix") or task_json.get("description") or "").strip()
    return TextTask(f"bigbench_{name.replace('/', '_')}", instruction, tuple(pairs[:shots]),
                    tuple((x, y) for x, y in pairs[shots:]), options)
