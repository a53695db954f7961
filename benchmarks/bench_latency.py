"""One query at a time: where the seconds of a cold `solve` go, and the latency of a warm solver (issue 29).

    python benchmarks/bench_latency.py cold --task arc1/eval/00576224 --device cpu --out results/latency-cpu.md
    python benchmarks/bench_latency.py warm --tasks arc1/eval --limit 400 --device cuda --out results/latency.md

`cold` profiles one `solve` in a fresh interpreter, phase by phase: the interpreter's start, the imports (torch;
`import testtime`, which brings transformers and registers the grid model; the rest of the API), the task's
dataset, the device's start (CUDA's context; nothing on a CPU), the model load, the CPU time budget's timing of
the model (a CPU only), then each stage of the solve as its record counts it (icl, loo, ttt, predict, select; what
the record does not count, such as planning and the vote, is "other"), and the interpreter's exit (the way the
`testtime` command ends: core.process_exit). The same task solved a second time on the same solver gives the warm
column: what a phase costs again is work, what it does not is a one-time overhead (CUDA's lazy starts, first-call
warm-ups). On a GPU the decode is timed once more without CUDA graphs, to tell whether capturing them pays for one
task. Then `testtime solve` as a user types it, in its
own process, end to end (`--no-cli` skips it). The profiled processes run under `python -X importtime`, and the
imports' own seconds are summed by top-level package: which library's import a cut has to reach. The report also
counts the modules the first process compiled from source without keeping the bytecode (PYTHONDONTWRITEBYTECODE
over packages installed without it: every start pays for it; testtime.core.bytecode), so that a cold figure says
which case it measured.

`warm` loads one solver, solves the first task once to warm it up (reported apart), then the tasks one at a time
(`--limit` of them, `--max-seconds` in all), and reports the median and 90th percentile latency, each stage's
median, and pass@2. `--trace` measures what one TTT step of the first task costs, from two more solves that
differ only in their steps (one epoch of TTT and two), timed and then profiled under torch.profiler: the step's
wall (from the TTT stage's own seconds, so that the two solves' decoding, which differs with what the adapters
learned, does not enter it), the device's busy share of it, the aten calls on the host and the device's
operations, and the costliest operators (a step whose device is idle most of its wall is bound by the host, and
CUDA graphs or fewer, larger steps are the cut). A difference that is not positive is reported as unresolved
rather than as a negative cost: on 2026-12-06, with each step replayed as a CUDA graph, the two solves took 0.64
and 0.62 s.
"""

from __future__ import annotations

import time

T_START = time.time()  # before any import: the interpreter's start is measured against the parent's clock

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

STAGES = ("icl", "loo", "ttt", "predict", "select")


def child(a: argparse.Namespace) -> None:
    """The cold profile, inside the fresh interpreter: phases as (name, seconds), printed as one JSON line."""
    phases: list[tuple[str, float]] = [("interpreter start", T_START - a.parent_start)]
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases.append((name, now - clock))
        clock = now

    import torch

    lap("import torch")
    import testtime  # noqa: F401  (transformers, the grid model registered)

    lap("import testtime (transformers)")
    from testtime import api
    from testtime.data.tasks import resolve_task
    from testtime.stages import budget

    lap("import the API")
    task = resolve_task(a.task)
    lap("read the task")
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.cuda.init()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
    lap("device start")
    solver = api.load(a.model, device)
    lap("model load")
    limit = budget.default_max_seconds(device)
    if limit is not None:
        solver.speed = budget.measure_speed(solver.model)
        lap("time budget: timing the model")
    warm: dict[str, float] = {}
    settings = json.loads(a.settings) if a.settings else {}
    for run in ("cold", "warm"):
        start = time.perf_counter()
        res = solver.solve(task, max_seconds="auto", show_progress=False, **settings)
        wall = time.perf_counter() - start
        secs = res.seconds
        row = {s: secs.get(s, 0.0) for s in STAGES}
        row["other"] = wall - sum(row.values())
        if run == "cold":
            for s in (*STAGES, "other"):
                phases.append((f"solve: {s}", row[s]))
            score, cold_end = res.score, time.time()
            # by the end of the cold solve, which imports more (the task's renderer among them); no phase's time
            from testtime.core.bytecode import compiled_at_import

            bytecode = {"compiled": len(compiled_at_import()), "modules": len(sys.modules),
                        "kept": not sys.dont_write_bytecode}
            clock = time.perf_counter()
        else:
            warm = row
    graphs_off = None
    if device.startswith("cuda"):
        res = solver.solve(task, max_seconds="auto", show_progress=False, **{**settings, "cuda_graphs": False})
        graphs_off = res.seconds.get("predict", 0.0)
    print("PROFILE " + json.dumps({"phases": phases, "warm": warm, "graphs_off_predict": graphs_off, "score": score,
                                   "bytecode": bytecode, "device": device, "cold_end": cold_end,
                                   "end": time.time()}), flush=True)


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|\s*([\w.]+)\s*$", re.M)


def import_costs(importtime_log: str) -> dict[str, float]:
    """Seconds of `python -X importtime`'s self time, summed by top-level package (costliest first): a package's
    cumulative time would count the imports it triggers in other packages twice over."""
    per: dict[str, float] = {}
    for m in IMPORT_LINE.finditer(importtime_log):
        pkg = m.group(2).split(".")[0]
        per[pkg] = per.get(pkg, 0.0) + int(m.group(1)) / 1e6
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def run_child(a: argparse.Namespace) -> tuple[dict, float]:
    start = time.time()
    cmd = [sys.executable, "-X", "importtime", __file__, "_child", "--task", a.task, "--parent-start", repr(start)]
    cmd += ["--device", a.device] if a.device else []
    cmd += ["--model", a.model] if a.model else []
    cmd += ["--settings", a.settings] if a.settings else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE ")), None)
    if proc.returncode or line is None:
        stderr = re.sub(r"^import time:.*\n?", "", proc.stderr, flags=re.M)
        sys.exit(f"error: the profiled process exited {proc.returncode}: {stderr.strip()[-2000:]}")
    got = json.loads(line[len("PROFILE "):])
    got["imports"] = import_costs(proc.stderr)
    got["phases"].append(("interpreter exit", start + wall - got["end"]))
    # The cold process: up to the end of its first solve, then its exit (the warm runs after it are not counted).
    return got, got["cold_end"] - start + got["phases"][-1][1]


def run_cli(a: argparse.Namespace) -> tuple[float, float | None]:
    """`testtime solve TASK` as typed: the process's wall seconds, and the end-to-end seconds it prints."""
    cmd = [sys.executable, "-m", "testtime", "solve", a.task] + (["--device", a.device] if a.device else [])
    cmd += ["--model", a.model] if a.model else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"error: testtime solve exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    m = re.search(r"([0-9.]+) s end to end", proc.stdout)
    return wall, float(m.group(1)) if m else None


def cold(a: argparse.Namespace) -> None:
    from provenance import header, publish

    profiles = [run_child(a) for _ in range(a.repeats)]
    names = [n for n, _ in profiles[0][0]["phases"]]
    med = {n: statistics.median(dict(p["phases"])[n] for p, _ in profiles) for n in names}
    wall = statistics.median(w for _, w in profiles)
    got = profiles[0][0]
    lines = header(f"A cold solve of {a.task}, phase by phase ({a.repeats} fresh process(es), median)",
                   got["device"]) + [""]
    if a.note:
        lines += [a.note, ""]
    lines += ["| phase | cold s | share | again on the warm solver, s |", "|---|---|---|---|"]
    for n in names:
        stage = n.removeprefix("solve: ")
        again = f"{got['warm'][stage]:.2f}" if n.startswith("solve: ") else "-"
        lines.append(f"| {n} | {med[n]:.2f} | {100 * med[n] / wall:.0f}% | {again} |")
    solve_cold = sum(v for n, v in med.items() if n.startswith("solve: "))
    lines.append(f"| **cold process, end to end** | **{wall:.2f}** | 100% | the solve: "
                 f"{sum(got['warm'].values()):.2f} warm, {solve_cold:.2f} cold |")
    if got["graphs_off_predict"] is not None:
        lines += ["", f"Decoding (predict) on the warm solver: {got['warm']['predict']:.2f} s with CUDA graphs, "
                      f"{got['graphs_off_predict']:.2f} s without."]
    code = got["bytecode"]
    n = code["compiled"]
    if code["kept"]:
        said = "Python may write bytecode here, so a start after the first reads it" + (
            f" (yet {n} modules' bytecode was missing after the first process: a folder it may not write?)." if n
            else ".")
    elif n:
        said = (f"By the end of its cold solve the first process compiled {n} of its {code['modules']} modules from "
                "source, and will at every start: Python may not write bytecode here (PYTHONDONTWRITEBYTECODE) and "
                "found none cached for them.")
    else:
        said = "Python may not write bytecode here, and found it all cached."
    lines += ["", said]
    lines += ["", f"pass@2 of the task: {got['score']}.", "",
              "Each process, end to end: " + ", ".join(f"{w:.2f} s" for _, w in profiles) + "."]
    lines += ["", "The imports' own seconds by top-level package (`python -X importtime`, each process; the "
              "costliest 10 of the first):", "",
              "| package | " + " | ".join(f"process {i + 1} s" for i in range(len(profiles))) + " |",
              "|---|" + "---|" * len(profiles)]
    for pkg in list(got["imports"])[:10]:
        lines.append(f"| {pkg} | " + " | ".join(f"{p['imports'].get(pkg, 0.0):.2f}" for p, _ in profiles) + " |")
    lines.append("| **all imports** | " + " | ".join(f"**{sum(p['imports'].values()):.2f}**" for p, _ in profiles)
                 + " |")
    if a.cli:
        walls = [run_cli(a) for _ in range(a.repeats)]
        printed = [p for _, p in walls if p is not None]
        lines += ["", f"`testtime solve {a.task}` as typed: {statistics.median(w for w, _ in walls):.1f} s process wall"
                  + (f", {statistics.median(printed):.1f} s end to end as printed" if printed else "")
                  + f" (median of {len(walls)})."]
    publish(lines, a.out)


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation between order statistics (numpy's default)."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


def warm(a: argparse.Namespace) -> None:
    from provenance import header, publish

    import testtime
    from testtime.data.tasks import load_tasks

    tasks = load_tasks(a.tasks)[: a.limit]
    solver = testtime.load(a.model, a.device)
    settings = json.loads(a.settings) if a.settings else {}
    start = time.perf_counter()
    solver.solve_many([tasks[0]], show_progress=False, **settings)
    first = time.perf_counter() - start
    lat, stages, scores, rows = [], {s: [] for s in STAGES}, [], []
    began = time.perf_counter()
    for t in tasks:
        if a.max_seconds and time.perf_counter() - began > a.max_seconds:
            break
        start = time.perf_counter()
        res = solver.solve_many([t], show_progress=False, **settings)[0]
        lat.append(time.perf_counter() - start)
        for s in STAGES:
            stages[s].append(res.seconds.get(s, 0.0))
        if res.score is not None:
            scores.append(res.score)
        rows.append(f"| {t.id} | {lat[-1]:.2f} | {res.seconds.get('ttt', 0.0):.2f} | {res.score} |")
        print(f"{t.id}: {lat[-1]:.2f} s, score {res.score}", flush=True)
    span = time.perf_counter() - began
    lines = header(f"A warm solver, one task at a time: {len(lat)} tasks of {a.tasks}", solver.device) + [""]
    if a.note:
        lines += [a.note, ""]
    lines += ["| tasks | median s | p90 s | mean s | max s | tasks/s | pass@2 | first call s |",
              "|---|---|---|---|---|---|---|---|",
              f"| {len(lat)} | {statistics.median(lat):.2f} | {percentile(lat, 90):.2f} | {statistics.mean(lat):.2f} "
              f"| {max(lat):.2f} | {len(lat) / span:.3f} | {sum(scores):g}/{len(scores)} | {first:.2f} |", "",
              "Median seconds per stage: " + ", ".join(f"{s} {statistics.median(v):.2f}" for s, v in stages.items())
              + f"; the rest (planning, vote, records) {statistics.median(lat) - sum(map(statistics.median, stages.values())):.2f}."]
    # each task's row, so that two runs (two settings, two devices) can be paired task by task
    lines += ["", "<details><summary>Each task</summary>", "", "| task | s | TTT s | pass@2 |", "|---|---|---|---|",
              *rows, "", "</details>"]
    if a.trace:
        lines += ["", *trace_solve(solver, tasks[0], settings)]
    publish(lines, a.out)


@dataclass
class SolveCost:
    """One solve's TTT steps, its wall and its TTT stage's seconds unprofiled, and what the profiler saw of it: the
    aten calls on the host, the device's operations (kernels, copies, fills) and the seconds the device was busy
    with them."""

    steps: int
    wall: float
    ttt: float
    aten_calls: int
    device_ops: int
    busy: float


def solve_cost(steps: int, wall: float, ttt: float, events) -> SolveCost:
    """A solve's cost from torch.profiler's `key_averages()`: the device's own rows summed as the profiler's table
    totals them (an operator's row repeats the time of the kernels it launched)."""
    from torch.autograd import DeviceType

    device = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]
    return SolveCost(steps, wall, ttt, sum(e.count for e in events if e.key.startswith("aten::")),
                     sum(e.count for e in device), sum(e.self_device_time_total for e in device) / 1e6)


def per_step(one: SolveCost, two: SolveCost) -> dict[str, float]:
    """What one more TTT step costs: the difference of two solves that differ only in their steps, so the
    solve's fixed costs cancel. The wall is the TTT stage's; the profiler's counts are the whole solve's, so a
    decoding that differs between the two (it follows what the adapters learned) can outweigh cheap steps."""
    extra = two.steps - one.steps
    if extra <= 0:
        raise ValueError(f"the two solves trained {one.steps} and {two.steps} steps: no step to measure")
    return {"wall_ms": 1e3 * (two.ttt - one.ttt) / extra, "busy_ms": 1e3 * (two.busy - one.busy) / extra,
            "aten_calls": (two.aten_calls - one.aten_calls) / extra,
            "device_ops": (two.device_ops - one.device_ops) / extra}


def trace_solve(solver, task, settings: dict) -> list[str]:
    """What a TTT step of `task` costs, as report lines: the same task solved with one epoch of TTT and with two
    (a sixth and a third of the default's steps; the profiler's tables over a whole solve take minutes to build),
    each timed without the profiler and then profiled. Per step: the wall, the device's busy time, the aten calls
    on the host and the device's operations. Then the costliest operators of the longer solve."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = solver.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def solve(epochs: int):
        res = solver.solve_many([task], show_progress=False, **{**settings, "ttt_cfg.epochs": epochs})[0]
        if cuda:
            torch.cuda.synchronize()
        return res

    costs, events = [], None
    for epochs in (1, 2):
        start = time.perf_counter()
        res = solve(epochs)
        wall = time.perf_counter() - start
        with profile(activities=activities) as prof:
            solve(epochs)
        events = prof.key_averages()  # built once: over a solve's events it takes tens of seconds
        costs.append(solve_cost(len(res.ttt_loss or []), wall, res.seconds.get("ttt", 0.0), events))
    step = per_step(*costs)

    def said(key: str, fmt: str) -> str:
        return format(step[key], fmt) if step[key] > 0 else "unresolved"

    busy = (f"{100 * step['busy_ms'] / step['wall_ms']:.0f}% of the step's wall"
            if step["busy_ms"] > 0 and step["wall_ms"] > 0 else "its share unresolved")
    lines = [f"A TTT step of {task.id}, from its solves with one epoch of TTT ({costs[0].steps} steps, TTT "
             f"{costs[0].ttt:.2f} s of {costs[0].wall:.2f} s) and two ({costs[1].steps} steps, TTT {costs[1].ttt:.2f}"
             f" s of {costs[1].wall:.2f} s), each timed without the profiler, then profiled: "
             f"{said('wall_ms', '.1f')} ms of wall, {said('aten_calls', '.0f')} aten calls on the host (views and "
             "casts included)" + (f", {said('device_ops', '.0f')} device operations, the device busy "
                                  f"{said('busy_ms', '.1f')} ms ({busy})." if cuda else ".")
             + (" (unresolved: the two solves differ by less than their noise, or their decoding differed more "
                "than the steps cost)" if min(step.values()) <= 0 else "")]
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    lines += ["", f"The costliest operators of the solve with two epochs (by {sort}):", "", "```",
              events.table(sort_by=sort, row_limit=15, max_name_column_width=48), "```"]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cold", help="profile one cold solve, phase by phase")
    c.add_argument("--task", default="arc1/eval/00576224")
    c.add_argument("--repeats", type=int, default=1)
    c.add_argument("--no-cli", dest="cli", action="store_false", help="skip timing `testtime solve` as typed")
    w = sub.add_parser("warm", help="solve tasks one at a time on one warm solver")
    w.add_argument("--tasks", default="arc1/eval")
    w.add_argument("--limit", type=int, default=400)
    w.add_argument("--max-seconds", type=float, help="start no task after this many seconds")
    w.add_argument("--trace", action="store_true", help="profile one more solve of the first task (torch.profiler)")
    ch = sub.add_parser("_child")
    ch.add_argument("--task", required=True)
    ch.add_argument("--parent-start", type=float, required=True)
    for q in (c, w, ch):
        q.add_argument("--device")
        q.add_argument("--model")
        q.add_argument("--settings", help='settings of each solve as JSON, e.g. \'{"policy": "always"}\'')
    for q in (c, w):
        q.add_argument("--note", help="a line written under the table's title (say, how busy the machine was)")
        q.add_argument("--out", type=Path)
    a = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.mode == "_child":
        child(a)
        # The profiled process ends as the `testtime` command does; imported only now, since `testtime` brings torch
        # and transformers, whose imports the child times.
        from testtime.core.process_exit import run_and_exit

        run_and_exit(lambda: None)
    {"cold": cold, "warm": warm}[a.mode](a)


if __name__ == "__main__":
    main()
