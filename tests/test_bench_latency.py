"""benchmarks/bench_latency.py's own arithmetic: the imports' seconds by package from `python -X importtime`, and
the profiled solve's report (on the CPU, with a stand-in solver whose work is known)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as a benchmark runs: beside its sibling provenance
import bench_latency as bl  # noqa: E402

# The format `python -X importtime` writes: self and cumulative microseconds, the name indented by its depth.
LOG = """import time: self [us] | cumulative | imported package
import time:       120 |        120 |       _io
import time:      2000 |       2000 |     torch._C
import time:    500000 |     502000 |   torch
import time:     30000 |      30000 |       transformers.utils
import time:    250000 |     782000 | transformers
some other line on stderr
import time:         7 |          7 | json.decoder
"""


def test_import_costs_sums_self_time_by_top_level_package_costliest_first():
    costs = bl.import_costs(LOG)
    assert list(costs) == ["torch", "transformers", "_io", "json"]
    assert costs["torch"] == pytest.approx(0.502)  # torch and torch._C: self times, not the cumulative 0.502 twice
    assert costs["transformers"] == pytest.approx(0.28)
    assert costs["json"] == pytest.approx(7e-6)


def test_import_costs_reads_what_this_python_writes():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json, email.mime.text"],
                          capture_output=True, text=True, check=True)
    costs = bl.import_costs(proc.stderr)
    assert {"json", "email"} <= set(costs)
    assert all(v >= 0 for v in costs.values())
    assert list(costs.values()) == sorted(costs.values(), reverse=True)


class FakeSolver:
    """Solves by 3 'TTT steps' of matrix products an epoch, as a real solve records its steps."""

    device = "cpu"

    def __init__(self, ttt_seconds=None):
        self.calls = []
        self.ttt_seconds = ttt_seconds  # the TTT stage's seconds by epochs, where a test fixes them

    def solve_many(self, tasks, show_progress, **settings):
        self.calls.append(settings)
        epochs = settings["ttt_cfg.epochs"]
        start = time.perf_counter()
        x = torch.randn(64, 64)
        for _ in range(3 * epochs):
            x = (x @ x).tanh()
        ttt = self.ttt_seconds(epochs) if self.ttt_seconds else time.perf_counter() - start
        return [SimpleNamespace(ttt_loss=[0.1] * (3 * epochs), seconds={"ttt": ttt})]


def test_trace_measures_a_step_by_the_difference_of_two_solves():
    solver = FakeSolver()
    lines = bl.trace_solve(solver, SimpleNamespace(id="t1"), {"policy": "always"})
    # each epoch count solved twice (timed, then profiled), the caller's settings kept
    assert solver.calls == [{"policy": "always", "ttt_cfg.epochs": e} for e in (1, 1, 2, 2)]
    assert lines[0].startswith("A TTT step of t1") and "(3 steps" in lines[0] and "(6 steps" in lines[0]
    calls = float(re.search(r"([\d.]+) aten calls", lines[0]).group(1))
    assert 2 <= calls <= 6  # a step here is a matmul (mm under it) and a tanh: the fixed calls cancel
    assert "device busy" not in lines[0]  # no CUDA: nothing to say of the device
    assert "aten::mm" in "\n".join(lines)


def test_trace_says_unresolved_where_the_longer_solve_was_not_slower():
    # replayed CUDA graphs on 2026-12-06: 16 steps' TTT took longer than 32 steps' by the noise of two solves
    lines = bl.trace_solve(FakeSolver(ttt_seconds=lambda epochs: 0.64 - 0.02 * epochs), SimpleNamespace(id="t1"), {})
    assert "unresolved ms of wall" in lines[0] and "differ by less than their noise" in lines[0]
    assert not re.search(r"-\d", lines[0])  # no negative cost


def event(key: str, count: int, device: bool = False, busy_us: float = 0.0, annotation: bool = False):
    from torch.autograd import DeviceType

    return SimpleNamespace(key=key, count=count, device_type=DeviceType.CUDA if device else DeviceType.CPU,
                           is_user_annotation=annotation, self_device_time_total=busy_us)


def test_a_steps_device_time_counts_the_device_rows_once():
    def solve(steps, n):  # n steps' worth of host calls and kernels, beside a fixed cost
        return bl.solve_cost(steps, 0.5 + 0.02 * steps, 0.1 + 0.01 * steps, [
            event("aten::mm", 10 * n + 7), event("cudaLaunchKernel", 10 * n + 7),
            event("ampere_gemm", 10 * n + 7, device=True, busy_us=1000.0 * n + 300),
            event("my-range", 1, device=True, busy_us=1e6, annotation=True)])  # a user's range, not device work

    one, two = solve(16, 16), solve(32, 32)
    assert (one.aten_calls, one.device_ops, one.busy) == (167, 167, pytest.approx(0.0163))
    step = bl.per_step(one, two)
    # the wall is the TTT stage's (10 ms a step), not the solve's (20 ms: its decoding differed too)
    assert step == pytest.approx({"wall_ms": 10.0, "busy_ms": 1.0, "aten_calls": 10.0, "device_ops": 10.0})
    with pytest.raises(ValueError, match="no step to measure"):
        bl.per_step(one, one)


def test_warm_reports_each_task_so_two_runs_can_be_paired(monkeypatch, tmp_path):
    import testtime
    import testtime.data.tasks as data_tasks

    tasks = [SimpleNamespace(id=f"task{i}") for i in range(3)]

    class WarmSolver:
        device = "cpu"

        def solve_many(self, batch, show_progress, **settings):
            t = batch[0]
            return [SimpleNamespace(score=1.0 if t.id == "task1" else 0.0, seconds={"ttt": 0.25, "predict": 0.5})]

    monkeypatch.setattr(data_tasks, "load_tasks", lambda spec: tasks)
    monkeypatch.setattr(testtime, "load", lambda model, device: WarmSolver())
    out = tmp_path / "warm.md"
    bl.warm(SimpleNamespace(tasks="arc1/eval", limit=None, model=None, device="cpu", settings=None, max_seconds=0,
                            note=None, trace=False, out=out))
    text = out.read_text()
    assert "| 3 |" in text and "| 1/3 |" in text  # three tasks, one solved
    rows = re.findall(r"^\| (task\d) \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert rows == [("task0", "0.25", "0.0"), ("task1", "0.25", "1.0"), ("task2", "0.25", "0.0")]


def test_cold_profiles_a_fresh_process_and_says_whether_its_imports_compiled(tmp_path):
    """`cold` end to end on the CPU with the shipped model and a cheap solve (no TTT, one view): every phase of the
    table, the process's wall, and the count of modules compiled from source (none kept under
    PYTHONDONTWRITEBYTECODE with an empty cache prefix: every module Python's loader imported)."""
    out = tmp_path / "cold.md"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_latency.py"), "cold", "--task",
                           "arc1/eval/66e6c45b", "--device", "cpu", "--no-cli", "--settings",
                           '{"ttt": false, "views": 1}', "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for phase in ("import torch", "model load", "solve: predict", "interpreter exit", "cold process, end to end"):
        assert f"| {phase}" in text or f"| **{phase}" in text, phase
    m = re.search(r"first process compiled (\d+) of its (\d+) modules from source, and will at every start", text)
    assert m and 100 < int(m.group(1)) <= int(m.group(2)), text
