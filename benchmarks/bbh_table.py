"""The issue's tables from finished text runs: one row per run (mean task accuracy, queries right, seconds per
query), then, for each `--pair A B`, the per-task table of A against B with the sign tests by task and by query.

    python benchmarks/bbh_table.py runs/bbh-zero runs/bbh-icl runs/bbh-ttt-icl --pair runs/bbh-icl runs/bbh-ttt-icl \
        --out results/bbh-table.md

Seconds are the runs' own (`seconds` of each record: TTT and answering, not the model's load); on a GPU run
they are GPU-seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from provenance import header, publish

from testtime.text.tables import paired_table, rows_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="text run folders, one row each")
    ap.add_argument("--pair", nargs=2, action="append", type=Path, default=[], metavar=("A", "B"),
                    help="a per-task table of B against A (repeatable)")
    ap.add_argument("--out", type=Path, help="append the tables to this markdown file")
    args = ap.parse_args()
    if not args.runs and not args.pair:
        ap.error("name at least one run or one --pair")
    lines = header("Text runs", "cpu")[2:] + [""]
    done = [r for r in args.runs if (r / "results.jsonl").exists()]
    lines += [f"(no results in {r}: left out)" for r in args.runs if r not in done]
    if done:
        lines += [rows_table(done), ""]
    for a, b in args.pair:
        if (a / "results.jsonl").exists() and (b / "results.jsonl").exists():
            lines += [f"#### {b.name} against {a.name}", "", paired_table(a, b), ""]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
