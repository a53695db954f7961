"""Accuracy against compute for several evaluation runs of the same tasks (issue 8's curve), and calibration.

Each run folder (from `testtime evaluate --policy NAME --out DIR`) becomes one point: pass@2 against the
total seconds its records charge (ICL, leave-one-out checks, TTT, generation, selection; see `compute` in each
record), plus a joint stage's process-seconds (its wall clock times its processes, from `summary.json`).
Runs are compared on the tasks they all finished, so a half-done run cannot look cheap.
The calibration table says, per run and decision, how many tasks took it and how often they were right:
a policy that answers early is well calibrated when its early answers are at least as accurate as the rest.

    python benchmarks/policy_curve.py runs/never runs/always runs/adaptive \
        --png results/policy-curve.png --md results/policy-curve.md --title "arc1/eval, H100"
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from testtime.core.store import RESULTS, read_config, read_joint_summary, read_records
from testtime.recipes.grid import config_from_dict, effective_policy, plan_of
from testtime.report.report import by_decision, compute_by_stage

STAGES = ("icl", "loo", "ttt", "predict", "select")
FIXED = ("always", "extended")  # policies that train every task the same number of steps


def label(run: Path, records: list[dict[str, Any]]) -> str:
    """Policy, TTT steps and adapter of a run, from its config.json (else the folder name), by the recipe's own rules
    (`grid.effective_policy`): a run with no policy named ran the default one. The steps of a fixed schedule
    are those its records took, not what today's defaults would make of its config (a default may have moved)."""
    raw = read_config(run)
    if raw is None:
        return run.name
    cfg = config_from_dict(raw, str(run / "config.json"))
    policy = effective_policy(cfg)
    joint = f"joint {cfg.joint_cfg.samples}/task + " if cfg.joint_cfg.samples else ""
    full = f", full lr {cfg.ttt_cfg.lr:g}" if cfg.ttt_cfg.adapter == "full" else ""
    if policy not in FIXED:  # its steps vary per task: the table's TTT task-steps say what it spent
        return f"{joint}{policy}{full}"
    taken = Counter(int((r.get("policy") or {}).get("ttt_steps", 0)) for r in records)
    steps = taken.most_common(1)[0][0] if taken else plan_of(cfg).ttt.steps
    orders = cfg.predict_cfg.orders
    return f"{joint}{policy} ({steps} steps{f', {orders} orders' if orders > 1 else ''}{full})"


def on_frontier(run: Path) -> bool:
    """Whether a run is a point of the fixed-budget curve: no TTT, or every task trained alike with LoRA."""
    raw = read_config(run)
    if raw is None:
        return False
    cfg = config_from_dict(raw, str(run / "config.json"))
    return effective_policy(cfg) in ("never", *FIXED) and cfg.ttt_cfg.adapter == "lora" and not cfg.joint_cfg.samples


def load_runs(runs: list[Path]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Records of each run, cut to the task ids that every run finished (in the first run's order)."""
    recs = {str(r): read_records(r / RESULTS) for r in runs}
    common = set.intersection(*({x["task_id"] for x in v} for v in recs.values()))
    order = [x["task_id"] for x in next(iter(recs.values())) if x["task_id"] in common]
    return {k: [x for x in v if x["task_id"] in common] for k, v in recs.items()}, order


def rows(runs: list[Path]) -> tuple[list[dict[str, Any]], int]:
    recs, common = load_runs(runs)
    out = []
    for run in runs:
        rs = recs[str(run)]
        scored = [r for r in rs if r.get("correct") is not None]
        joint = read_joint_summary(run)
        joint_s = joint["seconds"] * joint["world"] if joint else 0.0
        out.append({
            "run": str(run),
            "label": label(run, rs),
            "frontier": on_frontier(run),
            "score": sum(float(r.get("score") or 0) for r in scored),
            "n": len(scored),
            "seconds": sum(float(r.get("seconds") or 0) for r in rs) + joint_s,
            "joint_seconds": joint_s,
            # Load-independent: TTT steps taken over all tasks (each step costs about the same per task).
            "ttt_steps": sum(int((r.get("policy") or {}).get("ttt_steps", 0)) for r in rs),
            "stages": compute_by_stage(rs),
            "decisions": by_decision(rs),
        })
    return out, len(common)


def markdown(table: list[dict[str, Any]], n_tasks: int, title: str) -> str:
    lines = [f"## {title} ({n_tasks} tasks every run finished)", "",
             "| run | policy | pass@2 | % | total s | s/task | joint / icl / loo / ttt / predict / select s "
             "| TTT task-steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        pct = 100 * r["score"] / r["n"] if r["n"] else float("nan")
        st = " / ".join(f"{v:.0f}" for v in [r["joint_seconds"], *(r["stages"].get(k, 0) for k in STAGES)])
        lines.append(f"| `{r['run']}` | {r['label']} | {r['score']:g}/{r['n']} | {pct:.1f} | {r['seconds']:.0f} "
                     f"| {r['seconds'] / max(1, n_tasks):.2f} | {st} | {r['ttt_steps']} |")
    lines += ["", "### Calibration: accuracy per decision", "",
              "| policy | decision | tasks | solved | accuracy | s/task |", "|---|---|---|---|---|---|"]
    for r in table:
        for d, row in r["decisions"].items():
            acc = f"{100 * row['score'] / row['n_scored']:.1f}%" if row["n_scored"] else "n/a"
            lines.append(f"| {r['label']} | {d} | {row['n']} | {row['score']:g} | {acc} | {row['seconds'] / row['n']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    # Labels alternate above and below in order of compute: runs of like cost and score sit close together.
    for k, r in enumerate(sorted(table, key=lambda r: r["seconds"])):
        pct = 100 * r["score"] / r["n"] if r["n"] else 0.0
        ax.scatter(r["seconds"], pct, s=40)
        dy = 5 + 11 * (k % 3) - 16 * (k % 2)
        ax.annotate(r["label"], (r["seconds"], pct), textcoords="offset points", xytext=(6, dy), fontsize=8)
    fixed = sorted((r for r in table if r["frontier"]),
                    key=lambda r: r["seconds"])
    if len(fixed) > 1:  # the fixed-budget frontier: never, then every task trained alike at growing step counts
        ax.plot([r["seconds"] for r in fixed], [100 * r["score"] / max(1, r["n"]) for r in fixed], "--", lw=1,
                color="grey")
    ax.margins(x=0.3, y=0.15)  # room for the labels of the costliest and the best runs
    ax.set_xlabel("total compute, seconds (sum over tasks)")
    ax.set_ylabel("pass@2 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="evaluation run folders (results.jsonl, config.json)")
    ap.add_argument("--png", type=Path, default=Path("policy-curve.png"))
    ap.add_argument("--md", type=Path, default=None, help="also write the tables as markdown here")
    ap.add_argument("--title", default="pass@2 against compute")
    args = ap.parse_args()
    missing = [str(r) for r in args.runs if not (r / RESULTS).exists()]
    if missing:
        raise SystemExit(f"error: no results.jsonl in {', '.join(missing)}")
    table, n = rows(args.runs)
    if n == 0:
        raise SystemExit("error: the runs share no finished task")
    text = markdown(table, n, args.title)
    print(text)
    plot(table, args.png, args.title)
    if args.md:
        args.md.write_text(text)
    print(f"wrote {args.png}" + (f" and {args.md}" if args.md else ""))


if __name__ == "__main__":
    main()
