"""The README's main job on the CPU: `testtime solve TASK` end to end (model load included), wall seconds and
peak memory, a few repeats in fresh processes. The issue's bar: under 60 s on a 2-core CPU.

    python benchmarks/bench_cpu_solve.py --task arc1/eval/00576224 --repeats 2 --out results/cpu-solve.md
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from provenance import header, publish


def run_once(args: list[str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "testtime", "solve", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"error: solve exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux; the largest child so far
    solved = next((ln for ln in proc.stdout.splitlines() if ln.startswith("solved")), "no test outputs")
    return wall, peak_gib, solved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="arc1/eval/00576224")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    p.add_argument("solve_args", nargs="*", help="extra flags for testtime solve (after --)")
    a = p.parse_args()
    runs = [run_once([a.task, "--device", "cpu", *a.solve_args]) for _ in range(a.repeats)]
    walls = [w for w, _, _ in runs]
    lines = header(f"README main job on the CPU: testtime solve {a.task}", "cpu") + [
        "", "| runs | median wall s | min | max | peak RSS GiB | result |", "|---|---|---|---|---|---|",
        f"| {len(runs)} | {statistics.median(walls):.1f} | {min(walls):.1f} | {max(walls):.1f} | {runs[-1][1]:.2f} | {runs[-1][2]} |"]
    publish(lines, a.out)


if __name__ == "__main__":
    main()
