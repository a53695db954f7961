"""How often `generate_task` gives a task and how fast, and what the kept tasks are made of: the share of tasks per
input family and the share that use each maker (a task counts once per maker it uses).

    PYTHONPATH=src taskset -c 0 python benchmarks/gen_rate.py --draws 500 --pairs 24

Run on one core (taskset) so the rate compares across machines with a load beside it.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from testtime.data.gen_programs import MAKERS, generate_task


def maker_of(step: str, makers: list[str]) -> str:
    """The maker a step's name came from: the longest maker name it starts with (a d8 step has its own names)."""
    return max((m for m in makers if step.startswith(m)), key=len, default="d8/other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--makers", nargs="*", default=None, help="makers whose share to print (default: all)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    tasks = [t for t in (generate_task(rng, args.pairs) for _ in range(args.draws)) if t is not None]
    elapsed = time.perf_counter() - start
    print(
        f"{args.draws} draws at {args.pairs} pairs: {len(tasks)} kept (acceptance {len(tasks) / args.draws:.3f}), "
        f"{len(tasks) / elapsed:.1f} tasks/s, {args.draws / elapsed:.1f} draws/s"
    )
    families = Counter(t.name.split("|")[0] for t in tasks)
    print("families: " + ", ".join(f"{f} {n / len(tasks):.1%}" for f, n in families.most_common()))
    names = sorted(MAKERS)
    used = Counter(m for t in tasks for m in {maker_of(s, names) for s in t.name.split("|")[1].split(">")})
    for m in args.makers if args.makers is not None else sorted(used, key=lambda m: -used[m]):
        print(f"  {m:20s} {used[m] / len(tasks):6.1%}")
    if args.makers:
        listed = sum(any(s.startswith(tuple(args.makers)) for s in t.name.split("|")[1].split(">")) for t in tasks)
        print(f"  {'any of these':20s} {listed / len(tasks):6.1%}")


if __name__ == "__main__":
    main()
