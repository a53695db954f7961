"""How often a generated task's query relies on what its demonstrations do not show, before and after the pairs
are chosen for it (`gen_programs.choose_pairs`).

    PYTHONPATH=src python benchmarks/gen_well_posed.py --tasks 500 --pairs 24

Each draw's program (`draw_program`) is measured twice on the same candidates: "before" keeps the first n pairs
every step changes (the old rule), "after" the pairs `choose_pairs` picks. Every task then gives pretraining-like
samples (2-5 demos and a query, as the RE-ARC-format source draws them), and a sample is ill-posed when its query
- shows a witness item of a step (a mapped color, a deleted color, a size of a size -> color table) or a new output
  color that no other pair of the *task* shows ("unique in task": what the 2-pair guarantee removes), or
- shows one that none of the sample's *demos* show ("unseen in demos": what a learner with 2-5 demos meets), or
- has an object whose size lies strictly between the demos' closest sizes either side of a recolor_big threshold
  (the threshold could lie either side of it), or an output color no other grid of the sample holds.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from testtime.data.gen_objects import objects
from testtime.data.gen_programs import Path, Program, acceptable, choose_pairs, draw_program, evidence

SAMPLES = 40  # pretraining samples drawn from each task
DEMOS = (2, 5)


def category(program: Program, item: tuple) -> str:
    if item[0] == "new":
        return "new output colour"
    name = program.steps[item[0]].name
    if name.startswith(("colormap", "swap_colors")):
        return "colour-map entry"
    return {"delete_color": "deleted colour", "recolor_by_size": "size-table entry",
            "recolor_big": "threshold side"}.get(name, name)


def _colors(grids: list[np.ndarray]) -> set[int]:
    return {c for g in grids for c in np.unique(g).tolist()}


def threshold_ambiguous(program: Program, demos: list[Path], query: Path) -> bool:
    for i, step in enumerate(program.steps):
        if step.name != "recolor_big":
            continue
        bg, least = step.fn.keywords["bg"], step.fn.keywords["least"]
        sizes = [o.size for p in demos for o in objects(p[i], bg)]
        below = max((s for s in sizes if s < least), default=0)
        above = min((s for s in sizes if s >= least), default=10**9)
        if any(below < o.size < above for o in objects(query[i], bg)):
            return True
    return False


def sample_flags(program: Program, paths: list[Path], items: list[frozenset], rng: np.random.Generator) -> Counter:
    """Counts of ill-posed samples by reason, over SAMPLES samples of one task (a reason counted once a sample)."""
    flags: Counter = Counter()
    in_task = Counter(x for it in items for x in it)
    for _ in range(SAMPLES):
        k = int(rng.integers(DEMOS[0], DEMOS[1] + 1))
        q, *d = rng.choice(len(paths), size=k + 1, replace=False).tolist()
        shown = set().union(*(items[i] for i in d))
        reasons = {f"unique in task: {category(program, x)}" for x in items[q] if in_task[x] < 2}
        # (a threshold side unseen in the demos is not itself ambiguous: the exact check below is)
        unseen = {category(program, x) for x in items[q] if x not in shown} - {"threshold side"}
        reasons |= {f"unseen in demos: {c}" for c in unseen}
        if threshold_ambiguous(program, [paths[i] for i in d], paths[q]):
            reasons.add("threshold ambiguous")
        others = _colors([paths[q][0]] + [g for i in d for g in (paths[i][0], paths[i][-1])])
        if set(np.unique(paths[q][-1]).tolist()) - others:
            reasons.add("query output colour seen nowhere else")
        flags.update(reasons)
        flags["any"] += bool(reasons)
        flags["any (task-level reasons)"] += any(r.startswith("unique") for r in reasons)
    return flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=500, help="programs drawn")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng, sample_rng = np.random.default_rng(args.seed), np.random.default_rng(args.seed + 1)
    kept = Counter()
    flags = {"before": Counter(), "after": Counter()}
    start = time.perf_counter()
    for _ in range(args.tasks):
        program = draw_program(rng, args.pairs)
        if program is None or len(program.paths) < args.pairs:
            continue
        items = [evidence(program.steps, p) for p in program.paths]
        after = choose_pairs(items, args.pairs)
        for label, idx in (("before", list(range(args.pairs))), ("after", after)):
            if idx is None or not acceptable([program.paths[i] for i in idx]):
                continue
            kept[label] += 1
            paths = [program.paths[i] for i in idx]
            flags[label] += sample_flags(program, paths, [items[i] for i in idx], sample_rng)
    print(f"{args.tasks} programs drawn at {args.pairs} pairs in {time.perf_counter() - start:.0f} s; "
          f"{SAMPLES} samples of {DEMOS[0]}-{DEMOS[1]} demos + 1 query per kept task")
    print(f"{'reason':50s} {'before':>8s} {'after':>8s}")
    print(f"{'tasks kept':50s} {kept['before']:8d} {kept['after']:8d}")
    reasons = sorted(set(flags["before"]) | set(flags["after"]))
    for r in sorted(reasons, key=lambda r: (not r.startswith("any"), r)):
        shares = [flags[k][r] / max(SAMPLES * kept[k], 1) for k in ("before", "after")]
        print(f"{r:50s} {shares[0]:8.2%} {shares[1]:8.2%}")


if __name__ == "__main__":
    main()
