"""The CPU time budget on the largest legal tasks: `testtime solve` end to end (model load included) on synthetic
tasks of 30x30 grids, each in a fresh process, with the README's main job beside them to show it is not cut.
Per case: wall seconds, the process's peak memory, the budget's estimate, and what it cut to fit.

    python benchmarks/bench_cpu_budget.py --out results/cpu-budget.md
    python benchmarks/bench_cpu_budget.py --cases 2x30 -- --max-seconds 120    # flags after -- go to solve
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from provenance import header, publish

from testtime.data.tasks import Example, Task, save_task

MAIN_JOB = "arc1/eval/00576224"


def synthetic(demos: int, tests: int = 1, side: int = 30, seed: int = 0) -> Task:
    """Random side x side grids, each output its input turned a quarter and recolored: every grid as large as a
    task may hold."""
    rng = np.random.default_rng(seed)
    colors = rng.permutation(10).astype(np.uint8)

    def ex() -> Example:
        g = rng.integers(0, 10, (side, side)).astype(np.uint8)
        return Example(g, np.ascontiguousarray(colors[np.rot90(g)]))

    return Task(f"synthetic-{demos}x{side}-{tests}test", tuple(ex() for _ in range(demos)),
                tuple(ex() for _ in range(tests)))


CASES = {  # name: (what it is, task factory or a task name)
    "main": (f"README main job ({MAIN_JOB})", MAIN_JOB),
    "2x30": ("2 demos 30x30 + a 30x30 test input", lambda: synthetic(2)),
    "10x30": ("10 demos 30x30 + a 30x30 test input", lambda: synthetic(10)),
    "3x30-3test": ("3 demos 30x30 + three 30x30 test inputs", lambda: synthetic(3, tests=3)),
}


def run_solve(task: str, extra: list[str]) -> dict:
    """One `testtime solve` in a fresh process: its wall seconds, peak RSS (of that child alone) and output."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "testtime", "solve", task, "--device", "cpu", *extra],
                                stdout=out_f, stderr=err_f, env={**os.environ, "TQDM_DISABLE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for the rusage of this child alone
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode:
        sys.exit(f"error: solve {task} exited {proc.returncode}: {err.strip().splitlines()[-1] if err else ''}")
    lines = out.splitlines()
    plan = next((ln for ln in lines if ln.startswith("estimated ")), "")
    end = lines[-1]
    m = re.search(r"\(estimated (\d+) s, budget", end)
    cut = plan.split(": ", 1)[1].removesuffix(" (still over: nothing left to cut)") if " cut to " in plan else "nothing"
    return {"wall": wall, "peak_gib": usage.ru_maxrss / 2**20, "estimate": int(m[1]) if m else None,
            "in_process": float(end.split(" s end to end")[0]), "cut": cut, "plan": plan,
            "solved": next((ln for ln in lines if ln.startswith("solved")), "no test outputs")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--out", type=Path)
    p.add_argument("solve_args", nargs="*", help="extra flags for testtime solve (after --)")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.cases:
            what, spec = CASES[name]
            if callable(spec):
                path = Path(tmp) / f"{name}.json"
                save_task(spec(), path)
                spec = str(path)
            r = run_solve(spec, a.solve_args)
            print(f"{name}: {r['wall']:.1f} s, {r['peak_gib']:.2f} GiB; {r['plan']}", file=sys.stderr, flush=True)
            rows.append((what, r))
    lines = header("CPU time budget: testtime solve on the largest legal tasks", "cpu") + [
        "", "| task | wall s (process) | in-process s | estimate s | peak RSS GiB | cut to fit | result |",
        "|---|---|---|---|---|---|---|"]
    for what, r in rows:
        lines.append(f"| {what} | {r['wall']:.1f} | {r['in_process']:.1f} | {r['estimate']} | {r['peak_gib']:.2f} | "
                     f"{r['cut']} | {r['solved']} |")
    lines += ["", "The budget's line, as `solve` printed it before the work:", ""]
    lines += [f"- {what}: `{r['plan']}`" for what, r in rows]
    publish(lines, a.out)


if __name__ == "__main__":
    main()
