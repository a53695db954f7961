"""Whether a costlier setting pays where the default was unsure: escalation replayed over two measured runs (issue 25
asks for compute spent where it pays; issue 24's levers are what it would spend).

`--adapters 2` solved 10 tasks more than the default and lost none, at 1.79x its seconds
(results/h100-arch-adapters-2026-12-06.md). A policy could train the second adapter only where the first run's
answer looks unsure. This replays that from the two runs' records, before anything is built: the tasks are ordered
by a signal of the cheap run (least sure first), the first share of them get the costly run's record, the rest keep
the cheap run's, and each share's pass@2 and compute are scored, paired against both runs. A signal pays where its
curve lies above the straight line between the two runs (what escalating tasks at random gives, on average).

Signals, each read from the cheap run's own record (worst over the task's test inputs):
- **vote share**: the top candidate's share of the views' votes (low first);
- **PoE margin**: the product of experts' log-probability of its first choice over its second (low first);
- **TTT loss**: the mean of the last 8 TTT steps' training loss (high first).

Compute is each task's measured seconds: the cheap run's, plus the costly run's extra where escalated. It is an
estimate: an escalated task would reuse its first adapter, and its answer is taken from the costly run's record,
made in other batches. The order is read off the same tasks it is scored on, but no threshold is fitted: the
shares are fixed.

    python benchmarks/escalate_replay.py CHEAP COSTLY [--md OUT.md] [--png OUT.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policy_replay import save_compute_plot
from provenance import header, publish

from testtime.core.store import read_results
from testtime.report.compare import sign_test

SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def vote_share(record: dict[str, Any]) -> float:
    shares = []
    for ranked in record.get("ranked") or []:
        total = sum(c.get("count", 0) for c in ranked)
        shares.append(ranked[0].get("count", 0) / total if ranked and total else 0.0)
    return min(shares, default=0.0)


def poe_margin(record: dict[str, Any]) -> float:
    margins = []
    for ranked in record.get("ranked") or []:
        lp = [c["logprob"] for c in ranked if c.get("logprob") is not None]
        margins.append(lp[0] - lp[1] if len(lp) > 1 else (math.inf if lp else 0.0))
    return min(margins, default=0.0)


def ttt_loss(record: dict[str, Any]) -> float:
    losses = [x for x in (record.get("ttt_loss") or [])[-8:] if x is not None]
    return sum(losses) / len(losses) if losses else math.inf


# name -> (signal, whether a low value means unsure)
SIGNALS: dict[str, tuple[Callable[[dict[str, Any]], float], bool]] = {
    "vote share": (vote_share, True), "PoE margin": (poe_margin, True), "TTT loss": (ttt_loss, False)}


def records(run: Path) -> dict[str, dict[str, Any]]:
    got = {r["task_id"]: r for r in read_results(run) if not r.get("error")}
    if not got:
        raise ValueError(f"{run}: no records without errors")
    return got


def replay(cheap: dict, costly: dict) -> dict[str, Any]:
    """Every signal's curve over SHARES, with both runs' totals and where the costly run's wins lie."""
    ids = sorted(set(cheap) & set(costly))
    if not ids:
        raise ValueError("the two runs share no task")
    score = {name: {t: float(run[t]["score"]) for t in ids} for name, run in (("cheap", cheap), ("costly", costly))}
    secs = {name: {t: float(run[t]["seconds"]) for t in ids} for name, run in (("cheap", cheap), ("costly", costly))}
    base_s = sum(secs["cheap"].values())
    orders = {name: sorted(ids, key=lambda t, f=signal, low=low_unsure: f(cheap[t]) if low else -f(cheap[t]))
              for name, (signal, low_unsure) in SIGNALS.items()}  # least sure first
    curves: dict[str, list[dict[str, float]]] = {}
    for name, order in orders.items():
        rows = []
        for share in SHARES:
            up = set(order[:round(share * len(ids))])
            got = {t: score["costly" if t in up else "cheap"][t] for t in ids}
            won = sum(got[t] > score["cheap"][t] for t in ids)
            lost = sum(got[t] < score["cheap"][t] for t in ids)
            extra = sum(secs["costly"][t] - secs["cheap"][t] for t in up)
            rows.append({"share": share, "tasks": len(up), "score": sum(got.values()),
                         "compute": (base_s + extra) / base_s, "won": won, "lost": lost})
        curves[name] = rows
    wins = [t for t in ids if score["costly"][t] > score["cheap"][t]]
    rank_of_wins = {}
    for name, order in orders.items():
        pos = {t: i / len(ids) for i, t in enumerate(order)}
        rank_of_wins[name] = sorted(pos[t] for t in wins)
    return {"tasks": len(ids), "cheap": sum(score["cheap"].values()), "costly": sum(score["costly"].values()),
            "costly_compute": sum(secs["costly"].values()) / base_s, "curves": curves,
            "wins": len(wins), "losses": sum(score["costly"][t] < score["cheap"][t] for t in ids),
            "rank_of_wins": rank_of_wins}


def table(res: dict[str, Any], names: tuple[str, str]) -> list[str]:
    gain, cost = res["costly"] - res["cheap"], res["costly_compute"] - 1
    out = [f"{res['tasks']} tasks: {names[0]} {res['cheap']:g} at 1.00x, {names[1]} {res['costly']:g} at "
           f"{res['costly_compute']:.2f}x ({res['wins']} won, {res['losses']} lost); at random, escalating a share s "
           f"scores {res['cheap']:g} + s x {gain:g} at 1 + s x {cost:.2f}.", "",
           "| signal | escalated | pass@2 | at random | compute | won | lost | sign test p |",
           "|---|---|---|---|---|---|---|---|"]
    for name, rows in res["curves"].items():
        for r in rows:
            at_random = res["cheap"] + (r["compute"] - 1) / cost * gain if cost > 0 else res["cheap"]
            out.append(f"| {name} | {r['share']:.0%} ({r['tasks']}) | {r['score']:g} | {at_random:.1f} | "
                       f"{r['compute']:.2f}x | {r['won']} | {r['lost']} | {sign_test(r['won'], r['lost']):.2f} |")
    out += ["", "Where the costly run's wins lie in each signal's order (0: least sure first, 1: surest):", ""]
    out += [f"- {name}: {', '.join(f'{x:.2f}' for x in pos)}" for name, pos in res["rank_of_wins"].items()]
    return out


def plot(res: dict[str, Any], names: tuple[str, str], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ends = ([1.0, res["costly_compute"]], [res["cheap"], res["costly"]])
    ax.plot(*ends, "k--", label="at random (expected)")
    ax.plot(*ends, "ks")
    for x, y, name in zip(*ends, names, strict=True):
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
    for name, rows in res["curves"].items():
        ax.plot([1.0] + [r["compute"] for r in rows], [res["cheap"]] + [r["score"] for r in rows], "o-", ms=3,
                label=f"escalate by {name}")
    return save_compute_plot(fig, ax, png, f"compute, share of {names[0]}'s", legend_size=7)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cheap", type=Path, help="the cheaper run (the default)")
    ap.add_argument("costly", type=Path, help="the costlier run of the same tasks (say --adapters 2)")
    ap.add_argument("--md", type=Path, default=None, help="append the table here")
    ap.add_argument("--png", type=Path, default=None, help="the curves, compute against pass@2")
    args = ap.parse_args(argv)
    names = (args.cheap.name, args.costly.name)
    try:
        res = replay(records(args.cheap), records(args.costly))
    except (OSError, ValueError) as e:
        sys.exit(f"escalate_replay: {e}")
    publish(header(f"Escalation replayed: {names[0]}, then {names[1]} where unsure", "cpu") + [""]
            + table(res, names), args.md)
    if args.png:
        print(f"wrote {plot(res, names, args.png)}")
    return res


if __name__ == "__main__":
    main()
