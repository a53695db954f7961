"""How far a run's answers are from right, for the test inputs it missed (issue 24: more right candidates).

Recall says whether the right grid was among the candidates; this says how near the candidates came where it was
not, which tells the levers apart: a miss of the wrong shape needs another reading of the task, a miss of a few
cells wants more candidates near the best one (depth-first sampling), and a per-cell vote across the candidates
solves the misses whose views erred in different cells. For each run, from its records (the five best-ranked
candidates of each test input, kept with their votes) and the tasks' solutions:
- missed test inputs whose five held the right grid (ranked below the two attempts), whose best candidate has the
  right shape, and whose five have it at all;
- the fewest cells any right-shaped candidate of the five gets wrong, in bands;
- what a per-cell vote over the best candidate's shape (each candidate weighted by its views) would solve anew;
- the solve rate by the size of the right output, and by the best candidate's share of the votes (test inputs
  without candidates are in no share band).

    python benchmarks/miss_profile.py RUN [RUN...] [--tasks arc1/eval] [--md OUT.md] [--png OUT.png]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from testtime.core.store import read_config, read_results
from testtime.data.tasks import load_tasks

BANDS = ((1, 1), (2, 3), (4, 10), (11, 30), (31, None))  # cells wrong in the nearest right-shaped candidate
SIZES = ((1, 100), (101, 300), (301, 600), (601, None))  # cells of the right output
SHARES = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))  # the best candidate's share of the votes


def _in(x: float, lo: float, hi: float | None) -> bool:
    return x >= lo and (hi is None or x <= hi)


def cell_vote(candidates: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Each cell's most voted colour among the candidates of the first candidate's shape (weights: their votes)."""
    shape = candidates[0][0].shape
    tally = np.zeros((*shape, 10))
    rows, cols = np.indices(shape)
    for grid, votes in candidates:
        if grid.shape == shape:
            tally[rows, cols, grid] += votes
    return tally.argmax(-1)


def profile_input(truth, ranked: list[dict], solved: bool) -> dict:
    """One test input: its right output against the ranked candidates its record kept."""
    truth = np.asarray(truth)
    cands = [(np.asarray(c["grid"]), int(c.get("votes", 1))) for c in ranked if c.get("grid") is not None]
    same = [g for g, _ in cands if g.shape == truth.shape]
    total = sum(v for _, v in cands)
    vote = cell_vote(cands) if cands else None
    return {"solved": bool(solved), "cells": int(truth.size), "n": len(cands),
            "shape_top": bool(cands) and cands[0][0].shape == truth.shape, "shape_any": bool(same),
            "nearest": min((int((g != truth).sum()) for g in same), default=None),
            "share": cands[0][1] / total if total else None,
            "vote_new": vote is not None and vote.shape == truth.shape and bool((vote == truth).all())
            and not any(g.shape == vote.shape and (g == vote).all() for g, _ in cands)}


@functools.cache
def tasks_by_id(spec: str) -> dict:
    """A task set by id, loaded once however many runs of it are profiled."""
    return {t.id: t for t in load_tasks(spec)}


def run_tasks(run_dir: str | Path, tasks: str | None = None) -> dict:
    """The tasks a run was made on (`tasks`, else its config.json's)."""
    spec = tasks or (read_config(run_dir) or {}).get("tasks")
    if not spec:
        raise ValueError(f"{run_dir}: its config.json names no tasks; pass --tasks")
    return tasks_by_id(spec)


def profile_run(run_dir: str | Path, tasks: str | None = None) -> list[dict]:
    """Every test input of a run whose answer is known, profiled."""
    return profile_records(read_results(run_dir), run_tasks(run_dir, tasks))


def kept_candidates(rec: dict, qi: int) -> list[dict]:
    """The candidates a record kept for its test input `qi`, best first: product of experts' ranked list, or, for a
    run that selects by the vote and keeps none, its votes, alike in form."""
    kept = rec.get("ranked") or rec.get("votes") or []
    return (kept[qi] or []) if qi < len(kept) else []


def profile_records(records: list[dict], by_id: dict) -> list[dict]:
    """Every test input of these records whose task is in `by_id` with its answer, profiled."""
    rows = []
    for rec in records:
        task = by_id.get(rec["task_id"])
        if task is None or not rec.get("correct") or rec.get("error"):
            continue
        for qi, (ex, ok) in enumerate(zip(task.test, rec["correct"], strict=False)):
            if ex.output is not None:
                rows.append(profile_input(ex.output, kept_candidates(rec, qi), ok))
    return rows


def summary(rows: list[dict]) -> dict:
    missed = [r for r in rows if not r["solved"]]
    near = [r["nearest"] for r in missed if r["nearest"] is not None]

    def rate(sub: list[dict]) -> str:
        return f"{np.mean([r['solved'] for r in sub]):.2f} ({len(sub)})" if sub else "-"

    return {"inputs": len(rows), "solved": len(rows) - len(missed), "missed": len(missed),
            "ranked_not_picked": sum(r["nearest"] == 0 for r in missed),
            "shape_top": sum(r["shape_top"] for r in missed), "shape_any": sum(r["shape_any"] for r in missed),
            "bands": [sum(_in(d, lo, hi) for d in near) for lo, hi in BANDS],
            "vote_new": sum(r["vote_new"] for r in missed),
            "by_size": [rate([r for r in rows if _in(r["cells"], lo, hi)]) for lo, hi in SIZES],
            "by_share": [rate([r for r in rows if r["share"] is not None and lo <= r["share"] < hi])
                         for lo, hi in SHARES]}


def markdown(named: dict[str, dict]) -> list[str]:
    band = [f"{lo}" if lo == hi else f"{lo}-{hi}" if hi else f">{lo - 1}" for lo, hi in BANDS]
    size = [f"{lo}-{hi}" if hi else f">{lo - 1}" for lo, hi in SIZES]
    share = [f"{lo:.2f}-{min(hi, 1):.2f}" for lo, hi in SHARES]
    out = ["| run | test inputs | solved | missed | missed, right grid kept but not picked | "
           "missed, best of right shape | missed, any of right shape | "
           + " | ".join(f"nearest {b} cells off" for b in band) + " | a per-cell vote solves anew |",
           "|---" * (8 + len(BANDS)) + "|"]
    for name, s in named.items():
        out.append(f"| {name} | {s['inputs']} | {s['solved']} | {s['missed']} | {s['ranked_not_picked']} | "
                   f"{s['shape_top']} | {s['shape_any']} | " + " | ".join(map(str, s["bands"]))
                   + f" | {s['vote_new']} |")
    out += ["", "Solve rate (test inputs) by the right output's cells, and by the best candidate's share of the votes:",
            "", "| run | " + " | ".join(f"{c} cells" for c in size) + " | " + " | ".join(f"share {c}" for c in share)
            + " |", "|---" * (1 + len(SIZES) + len(SHARES)) + "|"]
    out += [f"| {name} | " + " | ".join(s["by_size"] + s["by_share"]) + " |" for name, s in named.items()]
    return out


def plot(named_rows: dict[str, list[dict]], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    edges = [0.5, 1.5, 3.5, 10.5, 30.5, 100.5, 1000.5]
    for name, rows in named_rows.items():
        near = [r["nearest"] for r in rows if not r["solved"] and r["nearest"] is not None]
        counts, _ = np.histogram(near, bins=edges)
        ax.step(range(len(counts) + 1), [*counts, counts[-1]], where="post",
                label=f"{name} ({len(near)} of right shape)")
    ax.set_xticks(np.arange(len(edges) - 1) + 0.5, ["1", "2-3", "4-10", "11-30", "31-100", ">100"])
    ax.set_xlabel("cells wrong in the nearest right-shaped candidate (missed test inputs)")
    ax.set_ylabel("test inputs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--tasks", default=None, help="the runs' tasks, where their config.json does not name them")
    ap.add_argument("--md", type=Path, default=None, help="append the tables here")
    ap.add_argument("--png", type=Path, default=None, help="the nearest candidates' distances, one line a run")
    args = ap.parse_args()
    try:
        named_rows = {run.name: profile_run(run, args.tasks) for run in args.runs}
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    lines = markdown({name: summary(rows) for name, rows in named_rows.items()})
    print("\n".join(lines))
    if args.md:
        with args.md.open("a") as f:
            f.write("\n".join(lines) + "\n")
    if args.png:
        print(f"wrote {plot(named_rows, args.png)}")


if __name__ == "__main__":
    main()
