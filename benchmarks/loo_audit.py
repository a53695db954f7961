"""The leave-one-out check's cost inside the policies, and its verdicts against decoding's, from audited runs.

A run of `testtime evaluate --audit-loo` (any policy that checks: settle, anytime, loo-stop, adaptive) records, per
task, the held-out demos its checks scored, how many verdicts differed from greedy decoding of the same demos through
the same adapters, and decoding's seconds (`loo_audit`); the check's own seconds are the record's `compute.loo`.

    python benchmarks/loo_audit.py runs/ev-settle [runs/mx-settle ...] [--md results/FILE.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provenance import publish

from testtime.core.store import RESULTS, read_records


def audit(records: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over a run's audited records."""
    notes = [(r, r["loo_audit"]) for r in records if r.get("loo_audit")]
    checks = sum(a["checks"] for _, a in notes)
    return {"tasks": len(notes), "checks": checks, "disagree": sum(a["disagree"] for _, a in notes),
            "tasks_disagreeing": sum(a["disagree"] > 0 for _, a in notes),
            "check_s": sum(float((r.get("compute") or {}).get("loo", 0.0)) for r, _ in notes),
            "decode_s": sum(float(a["decode_s"]) for _, a in notes),
            "task_s": sum(float(r.get("seconds") or 0.0) for r, _ in notes)}


def markdown(runs: list[Path]) -> list[str]:
    lines = ["## The leave-one-out check: teacher-forced against decoding", "",
             "| run | tasks | held-out demos checked | verdicts differing (tasks) | check s (share of all compute) "
             "| decoding s | decoding / check |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        a = audit(read_records(run / RESULTS))
        if not a["tasks"]:
            lines.append(f"| `{run}` | 0 | not audited (run it with --audit-loo) | | | | |")
            continue
        share = 100 * a["check_s"] / a["task_s"] if a["task_s"] else 0.0
        ratio = f"{a['decode_s'] / a['check_s']:.1f}x" if a["check_s"] else "n/a"
        lines.append(f"| `{run}` | {a['tasks']} | {a['checks']} | {a['disagree']} ({a['tasks_disagreeing']}) "
                     f"| {a['check_s']:.1f} ({share:.1f}%) | {a['decode_s']:.1f} | {ratio} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--md", type=Path, default=None, help="append the table to this markdown file")
    args = ap.parse_args()
    missing = [str(r) for r in args.runs if not (r / RESULTS).exists()]
    if missing:
        raise SystemExit(f"error: no results.jsonl in {', '.join(missing)}")
    publish(markdown(args.runs), args.md)


if __name__ == "__main__":
    main()
