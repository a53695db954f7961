"""Where selection loses the right grids a run found (issue 24), read from its records alone.

For each run: the test inputs whose right grid was among the candidates (recall's `found`) but not among the two
attempts, by the right grid's place in the selection's ranking (recall's `rank`, from 0): third to the last
candidate scored (outranked by the product of experts), beyond the scored ones (the config's `select_cfg.candidates`,
else `--scored`: reached only by scoring more), or in no ranked list (no view group kept it among its top ones). Then a vote prior on the product of experts: the five
recorded candidates of each test input re-ranked by summed log-probability + BETA x log(votes), the pass@2 this
gives for each BETA (BETA = 0 reproduces the run's own score where every recorded candidate was scored). Where the
records keep each ensemble member's scores (`members`, since 45fc3cb): `members first`, the pass@2 of each
member's own best candidate as the two attempts (member 0's, then the best other member's that differs; the joint
ranking fills in), against the joint product of experts that the run used.

    python benchmarks/rank_profile.py RUN [RUN...] [--betas 0 1 3] [--md OUT.md]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from provenance import publish

from testtime.core.store import read_config, read_results


def kept_not_picked(records: Sequence[dict], scored: int) -> tuple[int, int, int]:
    """(outranked, beyond, unranked): right grids found but not attempted, ranked within the `scored` candidates,
    ranked past them, or in no ranked list at all (no group kept them among its top ones)."""
    outranked = beyond = unranked = 0
    for r in records:
        recall, correct = r.get("recall") or {}, r.get("correct") or []
        for found, rank, ok in zip(recall.get("found") or [], recall.get("rank") or [], correct, strict=False):
            if found and not ok:
                if rank is None:
                    unranked += 1
                elif rank < scored:
                    outranked += 1
                else:
                    beyond += 1
    return outranked, beyond, unranked


def pass_with(records: Sequence[dict], order, attempts: int = 2) -> tuple[float, bool]:
    """Pass@`attempts` with each test input's recorded candidates in the order `order(cands)` gives (their indices,
    best first), and whether it gave one anywhere; a test input it returns None for keeps its own verdict."""
    total, seen = 0.0, False
    for r in records:
        correct = r.get("correct") or []
        if not correct:
            continue
        ranks = (r.get("recall") or {}).get("rank")
        per = []
        for qi, ok in enumerate(correct):  # without the right grid's rank, a test input keeps its own verdict
            cands = (r.get("ranked") or [[]] * len(correct))[qi] if ranks else None
            picks = order(cands) if cands else None
            seen |= picks is not None
            per.append(bool(ok) if picks is None else ranks[qi] is not None and int(ranks[qi]) in picks[:attempts])
        total += float(np.mean(per))
    return total, seen


def reranked_score(records: Sequence[dict], beta: float, attempts: int = 2) -> float:
    """Pass@`attempts` with each test input's recorded candidates re-ranked by logprob + beta x log(votes); a test
    input whose candidates were not all scored keeps its own verdict."""

    def order(cands: list[dict]) -> list[int] | None:
        if any(c.get("logprob") is None for c in cands):
            return None
        keys = np.array([c["logprob"] + beta * math.log(max(c["votes"], 1)) for c in cands])
        return np.argsort(-keys, kind="stable").tolist()

    return pass_with(records, order, attempts)[0]


def members_first(records: Sequence[dict], attempts: int = 2) -> float | None:
    """Pass@`attempts` with each member's own best recorded candidate first, in member order, then the joint ranking;
    None where no record keeps members' scores."""

    def order(cands: list[dict]) -> list[int] | None:
        if any(c.get("members") is None for c in cands):
            return None
        picks: list[int] = []
        for m in range(len(cands[0]["members"])):
            own = max(range(len(cands)), key=lambda k: _finite(cands[k]["members"][m]))
            if own not in picks:
                picks.append(own)
        return picks + [k for k in range(len(cands)) if k not in picks]

    total, seen = pass_with(records, order, attempts)
    return total if seen else None


def _finite(x: float | None) -> float:
    return -math.inf if x is None else x


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0])
    ap.add_argument("--scored", type=int, default=8, help="candidates scored where a run's config does not say")
    ap.add_argument("--md", type=Path)
    args = ap.parse_args(argv)
    lines = ["| run | score | found, not picked: outranked | beyond the scored | in no ranked list | "
             + " | ".join(f"beta {b:g}" for b in args.betas) + " | members first |",
             "|---|---|---|---|---|" + "---|" * (len(args.betas) + 1)]
    for run in args.runs:
        try:
            records = read_results(run)
            scored = int(((read_config(run) or {}).get("select_cfg") or {}).get("candidates") or args.scored)
        except (OSError, ValueError) as e:  # the message names the file
            print(f"error: {e}", file=sys.stderr)
            return 1
        score = sum(r.get("score") or 0 for r in records)
        outranked, beyond, unranked = kept_not_picked(records, scored)
        cells = " | ".join(f"{reranked_score(records, b):g}" for b in args.betas)
        first = members_first(records)
        lines.append(f"| {run.name} | {score:g} | {outranked} | {beyond} | {unranked} | {cells} | "
                     f"{'-' if first is None else f'{first:g}'} |")
    publish(lines, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
