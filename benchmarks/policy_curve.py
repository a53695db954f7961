"""Accuracy against compute for several evaluation runs of the same tasks (issue 8's curve, issue 25's frontier).

Each run becomes one point: pass@2 against the seconds a task its records charge (ICL, leave-one-out checks, TTT,
generation, selection; see `compute` in each record), plus a joint stage's process-seconds (its wall clock times its
processes, from `summary.json`). Runs are compared on the tasks they all finished, so a half-done run cannot look
cheap. A run is a folder, `NAME=FOLDER` (NAME labels it), or `NAME=A+B`: the records of several folders together,
the first folder's config naming the run (a fixed schedule's point on the mixed stream is its run on the familiar
tasks joined with its run on the evaluation tasks: `benchmarks/mixed_stream.py`).

- The fixed schedules (no TTT, and every task trained alike with LoRA) make the frontier, the dashed line; the
  runs of one allocating policy at several budgets make a curve of their own.
- `--stream LABELS.json` (`mixed_stream.py`'s task id -> familiar or novel) keeps each run to the stream's tasks and
  splits pass@2 and seconds by label (records also carry the label themselves: `testtime evaluate --labels`).
- `--reference RUN` (default: the run of the default's 96 steps, where there is one) is 100% of compute.
- The table at matched compute sets each run off the frontier against the frontier at its compute (interpolated
  between the fixed schedules around it), the best fixed schedule that costs no more, and, paired by task (exact
  sign test), the reference and the fixed schedule nearest in compute.
- The calibration table says, per run and decision, how many tasks took it and how often they were right: a policy
  that answers early is well calibrated when its early answers are at least as accurate as the rest.

    python benchmarks/policy_curve.py runs/icl runs/e3 runs/e6 runs/settle runs/b43 \\
        --png results/eval-frontier.png --md results/eval-frontier.md --title "arc1/eval, H200"
    python benchmarks/policy_curve.py icl=runs/fam-icl+runs/icl e6=runs/fam-e6+runs/e6 runs/mx-settle \\
        --stream runs/stream/stream-labels.json --png results/stream-frontier.png
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from testtime.core.store import RESULTS, read_config, read_joint_summary, read_records
from testtime.recipes.grid import config_from_dict, effective_policy, plan_of
from testtime.report.compare import pair
from testtime.report.report import by_decision, compute_by_stage

STAGES = ("icl", "loo", "ttt", "predict", "select")
FIXED = ("always", "extended")  # policies that train every task the same number of steps


def folders(run: str | Path) -> tuple[str | None, list[Path]]:
    """A run's name (None: from its config) and folders: `FOLDER`, `NAME=FOLDER` or `NAME=FOLDER+FOLDER...`."""
    text = str(run)
    name, _, spec = text.rpartition("=") if "=" in text else (None, "", text)
    return name or None, [Path(p) for p in spec.split("+")]


def label(run: str | Path, records: list[dict[str, Any]]) -> str:
    """Policy, TTT steps and adapter of a run, from its config.json (else the folder name), by the recipe's own rules
    (`grid.effective_policy`): a run with no policy named ran the default one. The steps of a fixed schedule
    are those its records took, not what today's defaults would make of its config (a default may have moved)."""
    name, dirs = folders(run)
    if name:
        return name
    raw = read_config(dirs[0])
    if raw is None:
        return dirs[0].name
    cfg = config_from_dict(raw, str(dirs[0] / "config.json"))
    policy = effective_policy(cfg)
    joint = f"joint {cfg.joint_cfg.samples}/task + " if cfg.joint_cfg.samples else ""
    full = f", full lr {cfg.ttt_cfg.lr:g}" if cfg.ttt_cfg.adapter == "full" else ""
    if policy not in FIXED:  # its steps vary per task: the table's TTT task-steps say what it spent
        budget = f", budget {cfg.budget:g} s" if cfg.budget is not None else ""
        return f"{joint}{policy}{budget}{full}"
    taken = Counter(int((r.get("policy") or {}).get("ttt_steps", 0)) for r in records)
    steps = taken.most_common(1)[0][0] if taken else plan_of(cfg).ttt.steps
    orders = cfg.predict_cfg.orders
    return f"{joint}{policy} ({steps} steps{f', {orders} orders' if orders > 1 else ''}{full})"


def on_frontier(run: str | Path) -> bool:
    """Whether a run is a point of the fixed-budget curve: no TTT, or every task trained alike with LoRA."""
    raw = read_config(folders(run)[1][0])
    if raw is None:
        return False
    cfg = config_from_dict(raw, "config.json")
    return effective_policy(cfg) in ("never", *FIXED) and cfg.ttt_cfg.adapter == "lora" and not cfg.joint_cfg.samples


def budget_of(run: str | Path) -> tuple[str, float] | None:
    """(policy, budget) of a run under a budget, else None."""
    raw = read_config(folders(run)[1][0])
    if raw is None:
        return None
    cfg = config_from_dict(raw, "config.json")
    return (effective_policy(cfg), cfg.budget) if cfg.budget is not None else None


def run_records(run: str | Path) -> list[dict[str, Any]]:
    """A run's records: of its folders in turn, a task's first record only."""
    seen, out = set(), []
    for d in folders(run)[1]:
        for r in read_records(d / RESULTS):
            if r["task_id"] not in seen:
                seen.add(r["task_id"])
                out.append(r)
    return out


def load_runs(runs: list, only: set[str] | None = None) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Records of each run, cut to the task ids that every run finished (and `only`), in the first run's order."""
    recs = {str(r): run_records(r) for r in runs}
    common = set.intersection(*({x["task_id"] for x in v} for v in recs.values()))
    if only is not None:
        common &= only
    order = [x["task_id"] for x in next(iter(recs.values())) if x["task_id"] in common]
    return {k: [x for x in v if x["task_id"] in common] for k, v in recs.items()}, order


def score(records: list[dict[str, Any]]) -> float:
    return sum(float(r.get("score") or 0) for r in records if r.get("correct") is not None)


def seconds(records: list[dict[str, Any]]) -> float:
    return sum(float(r.get("seconds") or 0) for r in records)


def rows(runs: list, stream: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """One row a run, on the tasks every run finished (of the stream, with `stream`)."""
    recs, common = load_runs(runs, set(stream) if stream is not None else None)
    out = []
    for run in runs:
        rs = recs[str(run)]
        scored = [r for r in rs if r.get("correct") is not None]
        joint = read_joint_summary(folders(run)[1][0])
        joint_s = joint["seconds"] * joint["world"] if joint else 0.0
        parts = {}
        for tag in sorted({(stream or {}).get(r["task_id"]) or r.get("label") for r in rs} - {None}):
            mine = [r for r in rs if ((stream or {}).get(r["task_id"]) or r.get("label")) == tag]
            parts[tag] = {"score": score(mine), "n": len(mine), "seconds": seconds(mine)}
        out.append({
            "run": str(run),
            "label": label(run, rs),
            "frontier": on_frontier(run),
            "budget": budget_of(run),
            "score": score(scored),
            "n": len(scored),
            "seconds": seconds(rs) + joint_s,
            "joint_seconds": joint_s,
            # Load-independent: TTT steps taken over all tasks (each step costs about the same per task).
            "ttt_steps": sum(int((r.get("policy") or {}).get("ttt_steps", 0)) for r in rs),
            "stages": compute_by_stage(rs),
            "decisions": by_decision(rs),
            "parts": parts,
            "records": rs,
        })
    return out, len(common)


def pick_reference(table: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The row named (by run or label), else the default's fixed schedule of 96 steps, if any."""
    for r in table:
        if name is not None and name in (r["run"], r["label"]):
            return r
    if name is not None:
        raise SystemExit(f"error: no run {name!r} to take as the reference")
    return next((r for r in table if r["label"] == "extended (96 steps)"), None)


def frontier_at(fixed: list[dict[str, Any]], per_task: float) -> float | None:
    """pass@2 of the fixed schedules' frontier at this compute: linear between the two around it (None outside)."""
    pts = sorted((r["seconds"] / max(1, r["n"]), r["score"]) for r in fixed)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= per_task <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (per_task - x0) / (x1 - x0)
    return pts[0][1] if len(pts) == 1 and abs(pts[0][0] - per_task) < 1e-9 else None


def matched(table: list[dict[str, Any]], ref: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each run off the frontier against the fixed schedules at its compute (see the module's docstring)."""
    fixed = [r for r in table if r["frontier"]]
    out = []
    for r in table:
        if r["frontier"]:
            continue
        per_task = r["seconds"] / max(1, r["n"])
        cheaper = [f for f in fixed if f["seconds"] / max(1, f["n"]) <= per_task * (1 + 1e-9)]
        best = max(cheaper, key=lambda f: f["score"], default=None)
        near = min(fixed, key=lambda f: abs(f["seconds"] / max(1, f["n"]) - per_task), default=None)
        row = {"label": r["label"], "score": r["score"], "per_task": per_task,
               "share": r["seconds"] / ref["seconds"] if ref and ref["seconds"] else None,
               "frontier": frontier_at(fixed, per_task), "best": best}
        for key, other in (("vs_ref", ref), ("vs_near", near)):
            if other is not None and other is not r:
                cmp = pair(other["records"], r["records"])
                row[key] = (other["label"], cmp.b_won, cmp.b_lost, cmp.p_value)
        out.append(row)
    return out


def markdown(table: list[dict[str, Any]], n_tasks: int, title: str, ref: dict[str, Any] | None = None) -> str:
    tags = sorted({t for r in table for t in r["parts"]})
    head = "".join(f" {t}: pass@2, s/task |" for t in tags)
    lines = [f"## {title} ({n_tasks} tasks every run finished)", "",
             "| run | policy | pass@2 | % | total s | s/task | % of reference | joint / icl / loo / ttt / predict / "
             f"select s | TTT task-steps |{head}",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(tags)]
    for r in table:
        pct = 100 * r["score"] / r["n"] if r["n"] else float("nan")
        st = " / ".join(f"{v:.0f}" for v in [r["joint_seconds"], *(r["stages"].get(k, 0) for k in STAGES)])
        share = f"{100 * r['seconds'] / ref['seconds']:.0f}%" if ref and ref["seconds"] else "n/a"
        parts = "".join(f" {p['score']:g}/{p['n']}, {p['seconds'] / max(1, p['n']):.2f} |"
                        for p in (r["parts"].get(t, {"score": 0, "n": 0, "seconds": 0}) for t in tags))
        lines.append(f"| `{r['run']}` | {r['label']} | {r['score']:g}/{r['n']} | {pct:.1f} | {r['seconds']:.0f} "
                     f"| {r['seconds'] / max(1, n_tasks):.2f} | {share} | {st} | {r['ttt_steps']} |{parts}")
    rows_m = matched(table, ref)
    if rows_m:
        lines += ["", "### At matched compute", "",
                  f"Reference (100%): {ref['label'] if ref else 'none'}. Frontier: the fixed schedules, linear between "
                  "the two around a run's compute. Paired: tasks won and lost against the run named, exact sign test.",
                  "", "| run | pass@2 | s/task | % of reference | frontier there | best fixed at no more compute "
                  "| against the reference | against the nearest fixed |", "|---|---|---|---|---|---|---|---|"]
        for m in rows_m:
            share = f"{100 * m['share']:.0f}%" if m["share"] is not None else "n/a"
            front = f"{m['frontier']:.1f}" if m["frontier"] is not None else "outside"
            best = f"{m['best']['label']}: {m['best']['score']:g}" if m["best"] else "none"
            vs = [f"{m[k][1]} won, {m[k][2]} lost, p = {m[k][3]:.2g} ({m[k][0]})" if k in m else "n/a"
                  for k in ("vs_ref", "vs_near")]
            lines.append(f"| {m['label']} | {m['score']:g} | {m['per_task']:.2f} | {share} | {front} | {best} "
                         f"| {vs[0]} | {vs[1]} |")
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

    def xy(r: dict[str, Any]) -> tuple[float, float]:
        return r["seconds"] / max(1, r["n"]), 100 * r["score"] / r["n"] if r["n"] else 0.0

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    # Labels alternate above and below in order of compute: runs of like cost and score sit close together.
    for k, r in enumerate(sorted(table, key=lambda r: r["seconds"])):
        x, y = xy(r)
        ax.scatter(x, y, s=40, marker="o" if r["frontier"] else "s" if r["budget"] else "^")
        dy = 5 + 11 * (k % 3) - 16 * (k % 2)
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(6, dy), fontsize=8)
    fixed = sorted((r for r in table if r["frontier"]), key=lambda r: r["seconds"])
    if len(fixed) > 1:  # the fixed-budget frontier: never, then every task trained alike at growing step counts
        ax.plot(*zip(*(xy(r) for r in fixed), strict=True), "--", lw=1, color="grey", label="fixed schedules")
    for policy in sorted({r["budget"][0] for r in table if r["budget"]}):  # one policy's budgets: its own curve
        pts = sorted(xy(r) for r in table if r["budget"] and r["budget"][0] == policy)
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), "-", lw=1, label=f"{policy} at several budgets")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    ax.margins(x=0.3, y=0.15)  # room for the labels of the costliest and the best runs
    ax.set_xlabel("compute, seconds a task (the records' stage seconds)")
    ax.set_ylabel("pass@2 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders (results.jsonl, config.json): FOLDER, NAME=FOLDER[+FOLDER]")
    ap.add_argument("--png", type=Path, default=Path("policy-curve.png"))
    ap.add_argument("--md", type=Path, default=None, help="also write the tables as markdown here")
    ap.add_argument("--title", default="pass@2 against compute")
    ap.add_argument("--stream", type=Path, default=None, help="a stream's labels (mixed_stream.py): its tasks only")
    ap.add_argument("--reference", default=None, help="the run that is 100%% of compute (a folder or its label)")
    args = ap.parse_args()
    missing = [str(d) for r in args.runs for d in folders(r)[1] if not (d / RESULTS).exists()]
    if missing:
        raise SystemExit(f"error: no results.jsonl in {', '.join(missing)}")
    stream = json.loads(args.stream.read_text()) if args.stream else None
    table, n = rows(args.runs, stream)
    if n == 0:
        raise SystemExit("error: the runs share no finished task")
    text = markdown(table, n, args.title, pick_reference(table, args.reference))
    print(text)
    plot(table, args.png, args.title)
    if args.md:
        args.md.write_text(text)
    print(f"wrote {args.png}" + (f" and {args.md}" if args.md else ""))


if __name__ == "__main__":
    main()
