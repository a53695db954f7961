"""What the GPU did during each run of a job: its SM clock, utilization, power, temperature and slowdown reasons,
sampled every 10 s by scripts/gpu_eval.sh's runner (runs/gpu-RUNNER.csv), read against the runner log's runs.

    python benchmarks/gpu_clocks.py OUT/runs [--runner eval] [--md OUT.md]

A pretraining stretch whose steps ran 8% slower than its schedule's first ones (h100-campaign-2026-12-06i.md) could
not be told apart from a machine that throttled: this table does. A run's window is its `=== NAME: ... (HH:MM:SS)`
line to its `NAME: N s wall` line; both clocks are the machine's (UTC on the device), and the runner log carries no
date, so the samples' first date is taken, a day added where the log's times wrap past midnight. "slowed" counts
the samples whose active clock-event reasons include one beyond idling and the applications' clock setting
(power or thermal caps, hardware slowdowns): nvidia-smi's bitmask, where this nvidia-smi reports it. "slowed by"
gives each reason's share of the samples; a hardware slowdown comes with a thermal or power-brake reason, so the
shares may add up to more than "slowed".
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

QUIET_REASONS = 0x1 | 0x2  # GPU idle; the applications' clocks setting: neither slows a busy GPU below its setting
# the clocks_event_reasons bits that slow a busy GPU (NVML's nvmlClocksEventReason*, nvml.h)
SLOWDOWNS = {0x4: "power cap", 0x8: "hardware slowdown", 0x10: "sync boost", 0x20: "thermal (software)",
             0x40: "thermal (hardware)", 0x80: "power brake", 0x100: "display clocks"}
START = re.compile(r"^=== (\S+?): .*\((\d\d:\d\d:\d\d)\)$")
END = re.compile(r"^(\S+?): (\d+) s wall$")


@dataclass(frozen=True)
class Sample:
    at: datetime
    gpu: int
    sm_mhz: float
    max_mhz: float
    temp_c: float
    power_w: float | None
    util: float
    reasons: int | None


def number(text: str) -> float | None:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError):
        return None  # "[N/A]", "[Not Supported]"


def read_samples(path: Path) -> list[Sample]:
    """The runner's CSV: a header line at each start of nvidia-smi (a resumed runner appends), then one row a GPU."""
    samples = []
    with path.open(newline="") as f:
        for row in csv.reader(f, skipinitialspace=True):
            if not row or row[0].startswith("timestamp") or len(row) < 7:
                continue
            try:
                at = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
            except ValueError:
                continue  # a line cut where the machine went back
            values = [number(v) for v in row[1:7]]
            if any(v is None for i, v in enumerate(values) if i != 4):
                continue
            reasons = int(row[7], 16) if len(row) > 7 and row[7].strip().startswith("0x") else None
            gpu, sm, top, temp, power, util = values
            samples.append(Sample(at, int(gpu), sm, top, temp, power, util, reasons))
    return samples


def read_windows(logs: list[Path], day: datetime) -> list[tuple[str, datetime, datetime]]:
    """(run, start, end) of every run the logs name from start to end; background runs have logs of their own."""
    windows = []
    for log in logs:
        starts: dict[str, datetime] = {}
        last = None
        for line in log.read_text(errors="replace").splitlines():
            if m := START.match(line):
                at = datetime.combine(day.date(), datetime.strptime(m[2], "%H:%M:%S").time())
                while last is not None and at < last - timedelta(hours=12):
                    at += timedelta(days=1)
                starts[m[1]] = last = at
            elif (m := END.match(line)) and m[1] in starts:
                begun = starts.pop(m[1])
                windows.append((m[1], begun, begun + timedelta(seconds=int(m[2]))))
    return sorted(windows, key=lambda w: w[1])


def summarize(name: str, seconds: float, got: list[Sample]) -> dict:
    sm = [s.sm_mhz for s in got]
    power = [s.power_w for s in got if s.power_w is not None]
    known = [s.reasons for s in got if s.reasons is not None]
    return {
        "run": name, "seconds": round(seconds), "samples": len(got),
        "sm_mhz_median": statistics.median(sm) if sm else None, "sm_mhz_min": min(sm) if sm else None,
        "max_mhz": max(s.max_mhz for s in got) if got else None,
        "util_median": statistics.median(s.util for s in got) if got else None,
        "power_w_median": statistics.median(power) if power else None,
        "temp_c_max": max(s.temp_c for s in got) if got else None,
        "slowed": sum(1 for r in known if r & ~QUIET_REASONS) / len(known) if known else None,
        "slowed_by": {why: sum(1 for r in known if r & bit) / len(known)
                      for bit, why in SLOWDOWNS.items() if any(r & bit for r in known)},
    }


def table(rows: list[dict]) -> str:
    def cell(v, fmt="{:g}"):
        return "" if v is None else fmt.format(v)

    out = ["| run | s | samples | SM MHz median (min) | max MHz | util % median | power W median | temp C max | "
           "samples slowed | slowed by |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        why = ", ".join(f"{name} {share:.0%}" for name, share in r["slowed_by"].items())
        out.append(f"| {r['run']} | {r['seconds']} | {r['samples']} | {cell(r['sm_mhz_median'])} "
                   f"({cell(r['sm_mhz_min'])}) | {cell(r['max_mhz'])} | {cell(r['util_median'])} | "
                   f"{cell(r['power_w_median'], '{:.0f}')} | {cell(r['temp_c_max'])} | {cell(r['slowed'], '{:.0%}')} "
                   f"| {why} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, help="the runs folder runs.tar.gz unpacked to (runner logs and gpu-*.csv)")
    ap.add_argument("--runner", default="eval", help="the runner's name (RUNNER in gpu_eval.sh)")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    csv_path = args.runs / f"gpu-{args.runner}.csv"
    if not csv_path.is_file():
        print(f"gpu_clocks: {csv_path}: no such file (the runner samples the GPU since gpu_eval.sh of 2026-12-06)",
              file=sys.stderr)
        return 1
    samples = read_samples(csv_path)
    if not samples:
        print(f"gpu_clocks: {csv_path}: no samples read", file=sys.stderr)
        return 1
    logs = sorted(args.runs.glob(f"runner-{args.runner}*.log"))
    windows = read_windows(logs, samples[0].at)
    rows = [summarize(name, (end - begun).total_seconds(), [s for s in samples if begun <= s.at <= end])
            for name, begun, end in windows]
    span = (samples[-1].at - samples[0].at).total_seconds()
    rows.append(summarize("(all samples)", span, samples))
    text = table(rows)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
