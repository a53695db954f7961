"""A pretraining run's log: its records, and the picture of loss, throughput and MFU against step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testtime.core import jsonio
from testtime.core.config import ConfigError


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    return [rec for _, rec in jsonio.read_json_lines(path, "log", ConfigError)] if path.exists() else []


def plot_loss(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss (and throughput) against step, from run_dir/log.jsonl, to run_dir/loss.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_log(run_dir)
    out = Path(out) if out is not None else run_dir / "loss.png"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in recs]
    ax.plot(steps, [r["loss"] for r in recs], lw=1, label="training")
    val = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", lw=1, ms=3, label="held-out tasks")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(f"pretraining loss ({run_dir.name})")
    ax2.plot(steps, [r["tokens_per_s"] / 1e6 for r in recs], lw=1, label="real tokens/s (M)")
    ax2.set_ylabel("real tokens/s (millions)")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    if any(r.get("mfu") is not None for r in recs):  # on its own scale: a percentage beside millions flattens both
        ax3 = ax2.twinx()
        ax3.plot(steps, [100 * (r.get("mfu") or 0) for r in recs], lw=1, color="tab:orange", label="MFU %")
        ax3.set_ylabel("MFU %")
        ax3.set_ylim(bottom=0)
        lines = ax2.get_lines() + ax3.get_lines()
        ax2.legend(lines, [line.get_label() for line in lines], loc="lower right")
    else:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
