"""`testtime serve` under load: N concurrent clients on the loopback address submit tasks, one at a time each.

    python benchmarks/bench_serve.py --clients 32 --device cuda --compare-evaluate --out results/serve-h200.md
    python benchmarks/bench_serve.py --clients 4 --limit 4 --device cpu --settings '{"samples": 4, "views": 2}'
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --clients 8 --limit 40    # a service already up
    python benchmarks/bench_serve.py --model A --model B --clients 32 --device cuda --compare-evaluate   # two models

The service starts in its own process (`testtime serve --port 0`, warmed up; or `--url` names one already up). Each
client takes the next task of `--tasks` (the first `--limit`; no new task after `--max-seconds`), posts it without
its test outputs, and scores the attempts it gets back against them, as `evaluate` scores a record (pass@2: a test
input is solved when one of its two attempts equals the answer; a task scores the share of its test inputs solved).
Reported: latency percentiles (request to answer, as the client sees it), throughput (tasks answered over the span
from the first request to the last answer), pass@2, and the batches the service ran. Then the service is stopped
with SIGTERM (its exit code is reported). With `--compare-evaluate`, the same tasks are solved by
`Solver.evaluate` in a fresh process (the model loaded and warmed up first, as the service's was), for its
throughput and pass@2 on the same settings; with several models, `Checkpoints.evaluate` (a run a model, combined).
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from bench_latency import percentile
from provenance import header, publish

from testtime.data.tasks import Task, load_tasks, save_tasks, task_to_dict


def start_service(a: argparse.Namespace) -> tuple[subprocess.Popen, str, list[str]]:
    cmd = [sys.executable, "-m", "testtime", "serve", "--port", "0"]
    for flag, value in (("--device", a.device), ("--max-batch", a.max_batch), ("--window", a.window)):
        if value is not None:
            cmd += [flag, str(value)]
    for model in a.model or []:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    end = time.monotonic() + a.start_timeout
    while not (m := re.search(r"http://[0-9.]+:\d+", "".join(lines))):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            sys.exit("error: the service did not start:\n" + "".join(lines)[-3000:])
        time.sleep(0.2)
    return proc, m.group(0), lines


def wait_ready(url: str, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while True:
        try:
            got = httpx.get(f"{url}/health", timeout=10)
            if got.status_code == 200:
                return got.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            sys.exit(f"error: {url}/health not ready after {timeout:g} s")
        time.sleep(0.5)


def pass2(task: Task, attempts: list) -> float:
    """The record's score: the share of test inputs one of whose attempts equals the answer."""
    hits = [any(a is not None and np.array_equal(np.asarray(a), t.output) for a in att)
            for t, att in zip(task.test, attempts, strict=True)]
    return float(np.mean(hits))


def load(a: argparse.Namespace, url: str, tasks: list[Task]) -> tuple[list[dict], float]:
    """The clients' run: one result per task answered (or failed), and the span from first request to last answer."""
    todo: queue.Queue[Task] = queue.Queue()
    for t in tasks:
        todo.put(t)
    settings = json.loads(a.settings) if a.settings else {}
    results: list[dict] = []
    lock = threading.Lock()
    began = time.perf_counter()

    def client() -> None:
        with httpx.Client(timeout=a.request_timeout) as http:
            while time.perf_counter() - began < a.max_seconds:
                try:
                    t = todo.get_nowait()
                except queue.Empty:
                    return
                blind = task_to_dict(Task(t.id, t.train, tuple(type(e)(e.input) for e in t.test)))
                start = time.perf_counter()
                try:
                    got = http.post(f"{url}/solve", json={"task": blind, "id": t.id, "settings": settings})
                    body = got.json()
                except (httpx.HTTPError, ValueError) as e:
                    got, body = None, {"error": f"{type(e).__name__}: {e}"}
                row = {"id": t.id, "latency": time.perf_counter() - start, "end": time.perf_counter(),
                       "status": got.status_code if got is not None else None}
                if row["status"] == 200:
                    row.update(score=pass2(t, body["attempts"]), batch=body["batch"]["size"], queued=body["queued"],
                               seconds=body["seconds"])
                else:
                    row["error"] = body.get("error")
                with lock:
                    results.append(row)

    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    span = max((r["end"] for r in results), default=began) - began
    return results, span


EVALUATE = """
import json, sys, time
from testtime.checkpoints import load_solver
from testtime.serve import warm_up
from testtime.core.store import read_results
a = json.loads(sys.argv[1])
solver = load_solver(a["models"], a["device"])
warm_up(solver)
start = time.perf_counter()
solver.evaluate(a["tasks"], a["out"], show_progress=False, **a["settings"])  # several models: their runs combined
wall = time.perf_counter() - start
scores = [r["score"] for r in read_results(a["out"])]
print("EVALUATE " + json.dumps({"wall": wall, "scores": scores, "device": solver.device}))
"""


def evaluate(a: argparse.Namespace, tasks: list[Task]) -> dict:
    """The same tasks through `Solver.evaluate` in a fresh process: its wall seconds (model loaded and warmed up
    first) and pass@2."""
    with tempfile.TemporaryDirectory() as tmp:
        save_tasks(tasks, Path(tmp) / "tasks")
        spec = {"models": a.model, "device": a.device, "tasks": str(Path(tmp) / "tasks"), "out": str(Path(tmp) / "run"),
                "settings": json.loads(a.settings) if a.settings else {}}
        proc = subprocess.run([sys.executable, "-c", EVALUATE, json.dumps(spec)], capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EVALUATE ")), None)
    if proc.returncode or line is None:
        sys.exit(f"error: evaluate exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(line[len("EVALUATE "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="arc1/eval")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=3600.0, help="no new request after this many seconds")
    p.add_argument("--request-timeout", type=float, default=3600.0)
    p.add_argument("--settings", help='settings of every request as JSON, e.g. \'{"policy": "always"}\'')
    p.add_argument("--url", help="a service already up (else one is started, and stopped at the end)")
    p.add_argument("--device")
    p.add_argument("--model", action="append", help="a model folder (default: the shipped one); named twice or "
                                                    "more, the models answer as one (testtime serve --model A --model B)")
    p.add_argument("--max-batch", type=int)
    p.add_argument("--window", type=float)
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--compare-evaluate", action="store_true", help="also solve the tasks with Solver.evaluate")
    p.add_argument("--note", help="a line written under the table's title (say, how busy the machine was)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    tasks = load_tasks(a.tasks)[: a.limit]
    proc, lines = None, []
    if a.url:
        url = a.url
    else:
        proc, url, lines = start_service(a)
    info = wait_ready(url, a.start_timeout)
    results, span = load(a, url, tasks)
    batches = httpx.get(f"{url}/health", timeout=60).json()["batches"]
    code = None
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(a.start_timeout)
    ok = [r for r in results if r["status"] == 200]
    lat = [r["latency"] for r in ok] or [float("nan")]
    score = sum(r["score"] for r in ok)
    lines_out = header(f"testtime serve under {a.clients} concurrent clients: {len(results)} tasks of {a.tasks}",
                       info["device"]) + [""]
    if a.note:
        lines_out += [a.note, ""]
    lines_out += [
        "| clients | tasks answered | errors | median s | p90 s | p99 s | max s | tasks/s | pass@2 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {a.clients} | {len(ok)} | {len(results) - len(ok)} | {statistics.median(lat):.2f} | "
        f"{percentile(lat, 90):.2f} | {percentile(lat, 99):.2f} | {max(lat):.2f} | {len(ok) / span:.3f} | "
        f"{score:g}/{len(ok)} |", "",
        f"Batches the service ran (size: count): {batches}; median wait for a batch "
        f"{statistics.median([r['queued'] for r in ok] or [0]):.2f} s; the service "
        + (f"exited {code} on SIGTERM." if proc is not None else "was left running.")]
    errors = sorted({r.get("error") or str(r["status"]) for r in results if r["status"] != 200})
    if errors:
        lines_out += [f"Errors: {'; '.join(errors[:5])}"]
    if a.compare_evaluate:
        done = {r["id"] for r in ok}
        ev = evaluate(a, [t for t in tasks if t.id in done])
        rate = len(done) / ev["wall"]
        lines_out += ["", f"`Solver.evaluate` on the same {len(done)} tasks: {ev['wall']:.1f} s, {rate:.3f} tasks/s, "
                          f"pass@2 {sum(s for s in ev['scores'] if s is not None):g}/{len(done)}; the service's "
                          f"throughput is {100 * len(ok) / span / rate:.0f}% of it."]
    publish(lines_out, a.out)


if __name__ == "__main__":
    main()
