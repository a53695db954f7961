"""What every benchmark table starts with (title, date, device, commit, the exact command) and where it goes."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def header(title: str, device: torch.device | str) -> list[str]:
    # The GPU machine gets a copy of the tree whose .git may lag behind it: the caller passes the commit it sent.
    commit = os.environ.get("TESTTIME_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return [f"### {title}, {datetime.date.today()}, {device_name(device)}, commit {commit}", "",
            f"`{' '.join(['python'] + sys.argv)}`  "]


def publish(lines: list[str], out: Path | None) -> None:
    """Print the table, and append it to `out` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(text + "\n")
