"""benchmarks/gpu_clocks.py: the runner's GPU samples read against its runs' windows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_clocks  # noqa: E402

HEADER = ("timestamp, index, clocks.current.sm [MHz], clocks.max.sm [MHz], temperature.gpu, power.draw [W], "
          "utilization.gpu [%], clocks_event_reasons.active\n")


def sample(time: str, sm: int, reasons: str, power: str = "600.5", day: str = "2026/12/06") -> str:
    return f"{day} {time}.120, 0, {sm}, 1980, 61, {power}, 100, {reasons}\n"


def test_each_run_gets_the_samples_of_its_window_and_slowdowns_are_counted(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "gpu-eval.csv").write_text(
        HEADER
        + sample("23:59:50", 1980, "0x0000000000000001")  # idle before the first run: not slowed
        + sample("23:59:55", 1980, "0x0000000000000000")
        + sample("00:00:05", 1755, "0x0000000000000004", day="2026/12/07")  # a power cap: slowed
        + HEADER  # a resumed runner's nvidia-smi writes its header again
        + sample("00:00:15", 1600, "0x0000000000000040", power="[N/A]", day="2026/12/07")  # thermal slowdown
        + "2026/12/07 00:00:2"  # cut where the machine went back
    )
    (runs / "runner-eval.log").write_text(
        "=== pretrain-campaign: --config configs/data-gen75.json (23:59:52)\n"
        "pretrain:  50%|#####     | 10/20 [00:05<00:05, 2it/s]\n"
        "pretrain-campaign: 10 s wall\n"
        "=== campaign-eval: --tasks arc1/eval (00:00:03)\n"
        "campaign-eval: 15 s wall\n"
        "=== script-ship: scripts/campaign_ship_checks.sh (00:00:30)\n"  # still going: no window
    )
    out = tmp_path / "clocks.md"
    assert gpu_clocks.main([str(runs), "--md", str(out)]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.read_text().splitlines()[2:]}
    assert set(rows) == {"pretrain-campaign", "campaign-eval", "(all samples)"}
    # the stretch's window holds 23:59:55 only; the evaluation's, past midnight, the two slowed samples
    assert rows["pretrain-campaign"] == "| pretrain-campaign | 10 | 1 | 1980 (1980) | 1980 | 100 | 600 | 61 | 0% |  |"
    assert rows["campaign-eval"] == ("| campaign-eval | 15 | 2 | 1677.5 (1600) | 1980 | 100 | 600 | 61 | 100% "
                                     "| power cap 50%, thermal (hardware) 50% |")
    assert rows["(all samples)"].startswith("| (all samples) | 25 | 4 | 1867.5 (1600) |")
    assert rows["(all samples)"].endswith("| 50% | power cap 25%, thermal (hardware) 25% |")
    assert capsys.readouterr().out.strip() == out.read_text().strip()


def test_no_samples_is_one_clear_line(tmp_path, capsys):
    assert gpu_clocks.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpu_clocks: {tmp_path}/gpu-eval.csv: no such file") and "\n" not in err
    (tmp_path / "gpu-eval.csv").write_text(HEADER)
    assert gpu_clocks.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"gpu_clocks: {tmp_path}/gpu-eval.csv: no samples read"


def test_the_runner_samples_the_gpu_while_it_runs_and_stops_sampling_after(runner_checkout):
    """scripts/gpu_eval.sh's runner, on a machine with a GPU (a stand-in nvidia-smi on PATH), appends the samples to
    runs/gpu-RUNNER.csv, which its archive brings back, and stops the sampler when the runs end."""
    tmp_path = runner_checkout
    (tmp_path / "bin").mkdir()
    (tmp_path / "scripts/work.sh").write_text("sleep 1; echo worked\n")
    fake = tmp_path / "bin/nvidia-smi"
    fake.write_text(
        '#!/usr/bin/env bash\n'
        'case "$*" in\n'
        '  -L) echo "GPU 0: stand-in" ;;\n'
        f'  *"-l 10"*) echo "{HEADER.strip()}"; echo "{sample("10:00:00", 1980, "0x0000000000000000").strip()}"\n'
        f'     echo $$ > {tmp_path}/sampler.pid; exec sleep 60 ;;\n'
        '  *) echo "0 MiB, 0 %" ;;\n'
        'esac\n')
    fake.chmod(0o755)
    runner = f"clocks{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # site-packages stay untouched
    env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", RUNNER=runner, OUT=str(tmp_path / "out"),
               SNAP_ROOT=str(tmp_path / "snap"))
    got = subprocess.run(["bash", "scripts/gpu_eval.sh", "--runner", "script-work:scripts/work.sh"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
    Path(f"/tmp/testtime_{runner}.done").unlink(missing_ok=True)
    assert got.returncode == 0 and "worked" in got.stdout, got.stdout + got.stderr
    assert (tmp_path / f"runs/gpu-{runner}.csv").read_text() == HEADER + sample("10:00:00", 1980, "0x0000000000000000")
    sampler = Path(f"/proc/{int((tmp_path / 'sampler.pid').read_text())}")
    for _ in range(50):  # stopped with the runner (the signal lands a moment after the runner's exit)
        try:
            if "State:\tZ" in (sampler / "status").read_text(errors="replace"):
                break  # a zombie: ended, not yet reaped
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the sampler {sampler.name} still runs after the runner ended")
