"""benchmarks/bench_latency.py's own arithmetic: the imports' seconds by package from `python -X importtime`, and
the profiled solve's report (on the CPU, with a stand-in solver whose work is known)."""

from __future__ import annotations

import subprocess
import sys
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
    """Solves by 3 'TTT steps' of matrix products, as a real solve records them."""

    device = "cpu"

    def __init__(self):
        self.settings = None

    def solve_many(self, tasks, show_progress, **settings):
        self.settings = settings
        x = torch.randn(64, 64)
        for _ in range(3):
            x = (x @ x).tanh()
        return [SimpleNamespace(ttt_loss=[0.3, 0.2, 0.1], seconds={"ttt": 0.01, "predict": 0.002})]


def test_trace_reports_the_steps_and_the_costliest_operators():
    solver = FakeSolver()
    lines = bl.trace_solve(solver, SimpleNamespace(id="t1"), {"policy": "always"})
    text = "\n".join(lines)
    assert solver.settings == {"policy": "always", "ttt_cfg.epochs": 1}  # one epoch: the tables stay quick to build
    assert "One more solve of t1" in lines[0] and "3 TTT steps" in lines[0] and "ttt 0.01" in lines[0]
    assert "aten::mm" in text and "self_cpu_time_total" in text
    assert "device was busy" not in text  # no CUDA: nothing to say of launches
