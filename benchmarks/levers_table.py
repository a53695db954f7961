"""Issue 24's table: for each run folder, pass@2 (and on the tasks of several test inputs alone, where a second round
on confident answers should gain most), the recall of the right grid among its candidates, candidates per test input,
how near its misses came (test inputs missed by at most 3 cells: `miss_profile.py`), GPU-seconds per task, and the
run paired by task against a reference run (as `testtime compare`: tasks won, lost,
exact sign test).

    python benchmarks/levers_table.py --reference runs/default runs/default runs/adapters2 runs/dfs \
        --md results/levers.md --json results/levers.json

Runs are compared on the tasks both finished; a run not there (yet) is left out with a note. GPU-s/task is the mean
of the records' seconds (each record charges its task's share of its group's stages), as `testtime report` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # miss_profile beside this script

from miss_profile import profile_records, run_tasks, summary  # noqa: E402

from testtime.core.store import read_results  # noqa: E402
from testtime.report.compare import adapters_of, compare_runs  # noqa: E402
from testtime.report.report import summarize  # noqa: E402


def row(run: Path, reference: Path | None) -> dict[str, Any]:
    """One run's line of the table (paired against `reference` when given and not the run itself)."""
    records = read_results(run)
    s = summarize(records)
    out: dict[str, Any] = {"run": run.name, "tasks": s["n_tasks"], "pass2": s["score"], "n_scored": s["n_scored"],
                           "recall": s.get("recall"), "candidates": s.get("candidates"),
                           "seconds": s["mean_seconds"], "errors": s["errors"]}
    multi = [r for r in records if len(r.get("correct") or []) > 1]
    out.update(multi=sum(float(r.get("score") or 0.0) for r in multi), n_multi=len(multi),
               second_rounds=sum(1 for r in records if (r.get("second_round") or {}).get("steps")))
    try:  # near misses need the tasks' solutions, which a run of unsolved tasks does not have
        out["near"] = sum(summary(profile_records(records, run_tasks(run)))["bands"][:2])
    except (OSError, ValueError, KeyError):
        out["near"] = None
    # From the records: a config may leave the count to the plan (None: two a task with per-task LoRA; one shared,
    # full-weight or without TTT).
    out["adapters"] = max(adapters_of(records), default=1)
    if reference is not None and reference.resolve() != run.resolve():
        cmp = compare_runs(reference, run)
        out.update(paired=len(cmp.pairs), won=cmp.b_won, lost=cmp.b_lost, p=cmp.p_value,
                   reference_pass2=cmp.totals[0])
    return out


def table(runs: list[Path], reference: Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of the runs that hold results, and a note for each that does not."""
    rows, notes = [], []
    for run in runs:
        if not (run / "results.jsonl").exists():
            notes.append(f"{run}: no results yet")
            continue
        rows.append(row(run, reference if reference is not None and (reference / "results.jsonl").exists() else None))
    return rows, notes


def _num(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(rows: list[dict[str, Any]], reference: str | None = None) -> str:
    against = f" against {reference}" if reference else ""
    lines = [f"| run | tasks | pass@2 | several test inputs | recall | missed by 1-3 cells | candidates / test input | "
             f"GPU-s/task | won / lost{against} | p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paired = f"{r['won']} / {r['lost']}" if "won" in r else ""
        lines.append(f"| {r['run']} | {r['tasks']} | {r['pass2']:g} | {r['multi']:g} / {r['n_multi']} | "
                     f"{_num(r['recall'], 'g')} | {_num(r.get('near'), 'd')} | "
                     f"{_num(r['candidates'], '.1f')} | {r['seconds']:.2f} | {paired} | {_num(r.get('p'), '.3g')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (testtime evaluate --out), in the table's order")
    ap.add_argument("--reference", type=Path, help="the run every other run is paired with (say, the default)")
    ap.add_argument("--md", type=Path, help="write the table here (markdown)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    rows, notes = table(args.runs, args.reference)
    text = markdown(rows, args.reference.name if args.reference else None)
    print(text, end="")
    for n in notes:
        print(n)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
