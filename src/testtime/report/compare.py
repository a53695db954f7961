"""Two runs of the same tasks, side by side: which tasks each won, and whether the difference is more than luck.

Every method change is judged by a paired comparison on the same tasks (TTT against ICL, one policy
against another). Totals alone hide how many tasks moved each way, so this reports the tasks won and lost
and an exact two-sided sign test over them (ties carry no evidence either way). Works for grid and text runs
alike: both write one record per task with a `score` (pass@2 fraction, or the share of queries right).

    testtime compare runs/icl runs/ttt --png compare.png
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.core.store import Record, read_config, read_results

RunRecords = tuple[Sequence[Record], Sequence[Record]]  # two runs' records, A's then B's


@dataclass(frozen=True)
class TaskPair:
    task_id: str
    a: float
    b: float
    # Whether each query (text) or test input (grid) was right in either run, where both runs scored the same ones.
    a_correct: tuple[bool, ...] | None = None
    b_correct: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class Comparison:
    labels: tuple[str, str]
    pairs: tuple[TaskPair, ...]  # the tasks both runs scored, in run A's order

    @property
    def totals(self) -> tuple[float, float]:
        return sum(p.a for p in self.pairs), sum(p.b for p in self.pairs)

    @property
    def b_won(self) -> int:
        return sum(p.b > p.a for p in self.pairs)

    @property
    def b_lost(self) -> int:
        return sum(p.b < p.a for p in self.pairs)

    @property
    def p_value(self) -> float:
        return sign_test(self.b_won, self.b_lost)

    @property
    def changed(self) -> list[TaskPair]:
        return [p for p in self.pairs if p.a != p.b]

    @property
    def items(self) -> tuple[int, int, int]:
        """Paired by query (a text task's queries, a grid task's test inputs) over the tasks whose records both
        say which were right: (won by B, lost by B, paired in all)."""
        won = lost = total = 0
        for p in self.pairs:
            if p.a_correct is not None and p.b_correct is not None:
                won += sum(b and not a for a, b in zip(p.a_correct, p.b_correct, strict=True))
                lost += sum(a and not b for a, b in zip(p.a_correct, p.b_correct, strict=True))
                total += len(p.a_correct)
        return won, lost, total

    @property
    def items_p_value(self) -> float:
        """The sign test over the queries that differ: a finer test than by task when tasks hold many queries (it
        takes queries as independent, which the queries of one task are only roughly)."""
        won, lost, _ = self.items
        return sign_test(won, lost)


def sign_test(won: int, lost: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven if either side were as likely."""
    n = won + lost
    if n == 0:
        return 1.0
    k = min(won, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def score_of(record: Record, selection: str | None = None) -> float | None:
    """A record's score: its own, or (grid runs) what another way of choosing its attempts scores on the same
    predictions (`selections`: the vote, the product of experts, the greedy identity view)."""
    if selection is None:
        return record.get("score")
    return (record.get("selections") or {}).get(selection)


def correct_of(record: Record, selection: str | None = None) -> list[bool] | None:
    """Which queries (test inputs) a record got right: its own, or under another selection where the record says
    (`selection_correct`, text runs voting over demo orders); None where it does not."""
    if selection is None:
        return record.get("correct")
    return (record.get("selection_correct") or {}).get(selection)


def pair(a: Sequence[Record], b: Sequence[Record], labels: tuple[str, str] = ("A", "B"),
         selections: tuple[str | None, str | None] = (None, None)) -> Comparison:
    """The tasks both runs scored (a task with an error or no known answer has score None and is left out)."""
    scores_b = {r["task_id"]: score_of(r, selections[1]) for r in b}
    correct_b = {r["task_id"]: correct_of(r, selections[1]) for r in b}
    pairs = []
    for r in a:
        if score_of(r, selections[0]) is None or scores_b.get(r["task_id"]) is None:
            continue
        ca, cb = correct_of(r, selections[0]), correct_b[r["task_id"]]
        same = ca is not None and cb is not None and len(ca) == len(cb)  # pair queries only where both scored them
        pairs.append(TaskPair(r["task_id"], float(score_of(r, selections[0])), float(scores_b[r["task_id"]]),
                              tuple(ca) if same else None, tuple(cb) if same else None))
    return Comparison(labels, tuple(pairs))


def compare_runs(run_a: str | Path, run_b: str | Path, selection_a: str | None = None,
                 selection_b: str | None = None, records: RunRecords | None = None) -> Comparison:
    """Two runs paired by task; `selection_a`/`selection_b` score a run by another selection of its records (the
    same run twice then compares, say, the vote against the product of experts). `records`: both runs' records,
    read already (a 400-task run's take a second to read)."""
    labels = tuple(Path(r).name + (f" ({s})" if s else "") for r, s in ((run_a, selection_a), (run_b, selection_b)))
    a, b = records or read_both(run_a, run_b)
    return pair(a, b, labels, (selection_a, selection_b))  # type: ignore[arg-type]


def read_both(run_a: str | Path, run_b: str | Path) -> RunRecords:
    """Both runs' records, A's then B's."""
    return read_results(run_a), read_results(run_b)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`ttt_cfg.lr`), so two configs differ key by key."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def adapters_of(records: Sequence[Record]) -> set[int]:
    """Adapters a task in a run, as its scored records say (they name a count above one). A config's None is left to
    the plan, which has resolved it differently over time (two a task for per-task LoRA since 2026-12-07), so the
    config alone does not tell."""
    return {int(r.get("adapters", 1)) for r in records if r.get("error") is None}


def adapters_differ(a: Sequence[Record], b: Sequence[Record]) -> tuple[set[int], set[int]] | None:
    """Both runs' adapters a task where they differ, else None (also where a run has no scored record to tell): a
    paired comparison of such runs judges the adapters, not what the reader meant to compare."""
    counts = adapters_of(a), adapters_of(b)
    return counts if all(counts) and counts[0] != counts[1] else None


def settings_differ(run_a: str | Path, run_b: str | Path, records: RunRecords | None = None) -> list[str]:
    """What two runs were asked to do differently, `key: A -> B` (config.json, flattened; the adapters from the
    records, `records` where read already): a paired comparison judges whatever differs, so it should be only what
    the reader means to judge."""
    lines: list[str] = []
    configs: list[dict[str, Any] | None] = []
    for run in (run_a, run_b):
        try:
            config = read_config(run)
        except ValueError as e:  # the records still compare; the settings are then unknown, and said so
            config = None
            lines.append(str(e))
        configs.append(None if config is None else _flat(config))
    a, b = configs
    if a is not None and b is not None:
        lines += [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(a.keys() | b.keys())
                  if k != "ensemble_cfg.adapters" and a.get(k) != b.get(k)]
    elif (a is None) != (b is None) and not lines:
        lines.append(f"config.json: none in {'A' if a is None else 'B'} (settings not compared)")
    counts = adapters_differ(*(records or read_both(run_a, run_b)))
    if counts:
        na, nb = ("/".join(map(str, sorted(c))) for c in counts)
        lines.append(f"adapters a task: {na} -> {nb}")
    return lines


def plot(cmp: Comparison, out: str | Path, max_tasks: int = 60) -> Path:
    """Per-task scores of both runs as paired bars: every task for a small set (text tasks), else the tasks
    whose scores differ (a 400-task grid run is mostly zeros on both sides)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(cmp.pairs) if len(cmp.pairs) <= max_tasks else cmp.changed[:max_tasks]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * max(1, len(shown))))
    ys = range(len(shown))
    ax.barh([y + 0.2 for y in ys], [p.a for p in shown], height=0.4, label=cmp.labels[0], color="#9aa5b1")
    ax.barh([y - 0.2 for y in ys], [p.b for p in shown], height=0.4, label=cmp.labels[1], color="#2f7ed8")
    ax.set_yticks(list(ys), [p.task_id for p in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score per task")
    ta, tb = cmp.totals
    which = "all tasks" if len(shown) == len(cmp.pairs) else f"the {len(shown)} tasks that differ"
    ax.set_title(f"{cmp.labels[0]} {ta:g} vs {cmp.labels[1]} {tb:g} over {len(cmp.pairs)} tasks "
                 f"({cmp.b_won} won, {cmp.b_lost} lost, p={cmp.p_value:.2g}); {which}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
