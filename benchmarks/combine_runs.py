"""Two runs' attempts combined: what running the default twice (two seeds of one model, or two checkpoints of the
campaign) and keeping each run's first attempt would score, read from the runs' records before any such ensemble is
built (issue 24: more right candidates; `testtime combine` builds it from runs made apart, the `--adapters 2`
lever inside one run). For a pair of runs of the same
tasks, from their records and the tasks' solutions:
- each run alone (pass@2, scored here from its attempts as the combination is);
- the combination: per test input, A's first attempt, then B's first where it differs (else A's second, then B's
  second);
- the four attempts together (pass@4) and the right grid among either run's kept candidates (union recall), each
  as tasks' worth of test inputs: what a selection over both runs' candidates could reach;
- the tasks the combination wins and loses against each run alone, with the sign test;
- a pooled rule beside it: the two grids of highest summed share over both runs' kept candidates, a run's shares
  the softmax of its product-of-experts scores at temperature `--temp` (its votes' shares where unscored). Runs of
  different settings score on different scales (two adapters sum twice the log-probabilities), which the rule
  ignores: a question for the records, not yet a lever.
A test input whose run erred or kept no attempts counts as unsolved by that run.

    python benchmarks/combine_runs.py RUN_A RUN_B [--tasks arc1/eval] [--md OUT.md] [--temp 1]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from miss_profile import kept_candidates, run_tasks
from provenance import publish

from testtime.core.store import read_results
from testtime.report.combine import combine_attempts
from testtime.report.compare import pair


def attempts_of(record: dict, qi: int) -> list:
    got = record.get("attempts") or []
    return [a for a in (got[qi] if qi < len(got) else []) if a is not None]


def shares(kept: list[dict], temp: float) -> dict[str, float]:
    """A run's kept candidates' shares (summing to 1), keyed by their grid as JSON: the softmax of their scores at
    `temp` where every one has a score, else their votes'."""
    if not kept:
        return {}
    scores = [c.get("logprob") for c in kept]
    if any(lp is None for lp in scores):
        weights = [float(c.get("votes", 1)) for c in kept]
    else:
        top = max(scores)
        weights = [math.exp((lp - top) / temp) for lp in scores]
    total = sum(weights)
    return {json.dumps(c["grid"]): w / total for c, w in zip(kept, weights, strict=True)}


def pooled_attempts(kept_lists: list[list[dict]], temp: float = 1.0, attempts: int = 2) -> list:
    """The grids of highest summed share over the runs' kept candidates (the first seen first among equals)."""
    pool: dict[str, float] = {}
    for kept in kept_lists:
        for grid, share in shares(kept, temp).items():
            pool[grid] = pool.get(grid, 0.0) + share
    return [json.loads(g) for g in sorted(pool, key=lambda g: -pool[g])[:attempts]]


def combined(run_a: Path, run_b: Path, tasks: str | None = None, temp: float = 1.0) -> dict:
    """The pair's figures (see the module's docstring) and the combination's own records, one a task both ran."""
    by_id = run_tasks(run_a, tasks)
    recs_a = {r["task_id"]: r for r in read_results(run_a)}
    recs_b = {r["task_id"]: r for r in read_results(run_b)}
    shared = [tid for tid in recs_a if tid in recs_b and tid in by_id
              and all(e.output is not None for e in by_id[tid].test)]
    if not shared:
        raise ValueError(f"{run_a} and {run_b} share no task with known answers")
    totals = dict.fromkeys(("pass4", "recall_a", "recall_b", "union"), 0.0)
    scored: dict[str, list[dict]] = {"a": [], "b": [], "combined": [], "pooled": []}  # each scored alike
    for tid in shared:
        ra, rb, truths = recs_a[tid], recs_b[tid], [e.output.tolist() for e in by_id[tid].test]
        correct: dict[str, list[bool]] = {name: [] for name in scored}
        for qi, truth in enumerate(truths):
            att_a, att_b = attempts_of(ra, qi), attempts_of(rb, qi)
            cands_a, cands_b = kept_candidates(ra, qi), kept_candidates(rb, qi)
            kept_a, kept_b = ([c["grid"] for c in cands] for cands in (cands_a, cands_b))
            both = combine_attempts([att_a, att_b])[0]  # as `testtime combine` makes it
            pooled = pooled_attempts([cands_a, cands_b], temp)
            for name, att in (("a", att_a), ("b", att_b), ("combined", both), ("pooled", pooled)):
                correct[name].append(truth in att)
            share = 1 / len(truths)
            totals["pass4"] += share * (truth in att_a + att_b)
            totals["recall_a"] += share * (truth in kept_a)
            totals["recall_b"] += share * (truth in kept_b)
            totals["union"] += share * (truth in kept_a + kept_b)
        for name, ok in correct.items():
            scored[name].append({"task_id": tid, "correct": ok, "score": sum(ok) / len(ok)})
    return {"tasks": len(shared), **{name: sum(r["score"] for r in recs) for name, recs in scored.items()},
            **totals, "records": scored["combined"], "against_a": pair(scored["a"], scored["combined"]),
            "against_b": pair(scored["b"], scored["combined"])}


def markdown(name_a: str, name_b: str, got: dict) -> list[str]:
    a, b = got["against_a"], got["against_b"]
    return ["| A | B | tasks | A | B | combined (A1, B1) | against A: won, lost, p | against B: won, lost, p | "
            "pass@4 | recall A | recall B | union recall | pooled |", "|---" * 13 + "|",
            f"| {name_a} | {name_b} | {got['tasks']} | {got['a']:g} | {got['b']:g} | **{got['combined']:g}** | "
            f"{a.b_won}, {a.b_lost}, {a.p_value:.2g} | {b.b_won}, {b.b_lost}, {b.p_value:.2g} | {got['pass4']:g} | "
            f"{got['recall_a']:g} | {got['recall_b']:g} | {got['union']:g} | {got['pooled']:g} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--tasks", default=None, help="the runs' tasks, where run A's config.json does not name them")
    ap.add_argument("--md", type=Path, default=None, help="append the table here")
    ap.add_argument("--temp", type=float, default=1.0, help="the pooled rule's softmax temperature (> 0)")
    args = ap.parse_args()
    if not (math.isfinite(args.temp) and args.temp > 0):
        sys.exit(f"error: --temp must be a positive number, got {args.temp}")
    try:
        got = combined(args.run_a, args.run_b, args.tasks, args.temp)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
    publish(markdown(args.run_a.name, args.run_b.name, got), args.md)


if __name__ == "__main__":
    main()
