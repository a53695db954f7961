"""Text runs as the issue's tables (markdown): one row per run (mean task accuracy, queries right, seconds per
query), and two runs paired per task (ICL against TTT + ICL) with the sign tests by task and by query.

    python benchmarks/bbh_table.py runs/zero runs/icl runs/ttt-icl --pair runs/icl runs/ttt-icl --out table.md
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testtime.core.store import Record, read_config, read_results
from testtime.report.compare import compare_runs
from testtime.text.report import summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def run_row(run_dir: str | Path) -> dict:
    """One run's figures: tasks, mean task accuracy, queries right of scored, seconds per query (TTT and answers
    together; the model's load is not counted)."""
    records: list[Record] = read_results(run_dir)
    s = summary(records)
    right = sum(sum(r.get("correct") or []) for r in records)
    scored = sum(len(r.get("correct") or []) for r in records)
    queries = sum(len(r.get("answers") or []) for r in records)
    return {"run": Path(run_dir).name, "tasks": s["tasks"], "task_accuracy": s["task_accuracy"], "right": right,
            "scored": scored, "seconds": s["total_seconds"],
            "seconds_per_query": s["total_seconds"] / queries if queries else None,
            "errors": s["errors"], "config": read_config(run_dir) or {}}


def rows_table(run_dirs: Sequence[str | Path]) -> str:
    lines = ["| run | tasks | mean task accuracy (%) | queries right | s/query |", "|---|---|---|---|---|"]
    for d in run_dirs:
        r = run_row(d)
        spq = "n/a" if r["seconds_per_query"] is None else f"{r['seconds_per_query']:.3f}"
        errors = f" ({r['errors']} with errors)" if r["errors"] else ""
        lines.append(f"| {r['run']} | {r['tasks']}{errors} | {_pct(r['task_accuracy'])} | {r['right']}/{r['scored']} "
                     f"| {spq} |")
    return "\n".join(lines)


def paired_table(run_a: str | Path, run_b: str | Path) -> str:
    """Per task: A's and B's queries right and the difference; then both sign tests (by task, by query)."""
    cmp = compare_runs(run_a, run_b)
    if not cmp.pairs:
        raise ValueError(f"{run_a} and {run_b}: no task scored in both runs")
    la, lb = cmp.labels
    lines = [f"| task | {la} | {lb} | change |", "|---|---|---|---|"]
    for p in cmp.pairs:
        if p.a_correct is not None and p.b_correct is not None:
            n = len(p.a_correct)
            ra, rb = sum(p.a_correct), sum(p.b_correct)
            lines.append(f"| {p.task_id} | {ra}/{n} | {rb}/{n} | {rb - ra:+d} |")
        else:
            lines.append(f"| {p.task_id} | {p.a:.3f} | {p.b:.3f} | {p.b - p.a:+.3f} |")
    ta, tb = cmp.totals
    n = len(cmp.pairs)
    lines.append(f"| mean task accuracy (%) | {100 * ta / n:.1f} | {100 * tb / n:.1f} | {100 * (tb - ta) / n:+.1f} |")
    won, lost, paired = cmp.items
    tied = n - cmp.b_won - cmp.b_lost
    lines += ["", f"- by task: {lb} won {cmp.b_won}, lost {cmp.b_lost}, tied {tied} of {n}; "
                  f"sign test p = {cmp.p_value:.3g}"]
    if paired:
        lines.append(f"- by query: {lb} right where {la} was wrong on {won}, wrong where it was right on {lost}, "
                     f"of {paired} paired queries; sign test over the {won + lost} that differ p = "
                     f"{cmp.items_p_value:.3g}")
    return "\n".join(lines)
