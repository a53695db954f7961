"""A pretraining run's log: its records, and the picture of loss, throughput and MFU against step, and of the held-out
solve rate against tokens (`solve_every`); `plot_solved` puts several runs' solve rates in one picture."""

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
    solved = [r for r in recs if r.get("val_solved") is not None]
    fig, axes = plt.subplots(1, 3 if solved else 2, figsize=(16.5 if solved else 11, 4))
    ax, ax2 = axes[0], axes[1]
    if solved:
        _solved_axes(axes[2], {run_dir.name: recs})
    steps = [r["step"] for r in recs]
    ax.plot(steps, [r["loss"] for r in recs], lw=1, label="training")
    val = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", lw=1, ms=3, label="held-out tasks")
    probed = [r for r in recs if r.get("probe_loss")]
    for name in dict.fromkeys(k for r in probed for k in r["probe_loss"]):
        pts = [(r["step"], r["probe_loss"][name]) for r in probed if name in r["probe_loss"]]
        unseen = name.endswith("(not trained)")
        ax.plot(*zip(*pts, strict=True), ":" if unseen else "--", lw=1, label=name if unseen else f"{name} (trained on)")
    if val or probed:
        ax.legend(fontsize=8)
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


def _solved_axes(ax, logs: dict[str, list[dict[str, Any]]], ttt: dict[str, tuple[float, float]] | None = None) -> None:
    """Each run's held-out tasks solved without TTT against its tokens; `ttt[label]` = (tokens, solved with TTT)
    adds that run's final model with TTT as a marker of the same color."""
    for label, recs in logs.items():
        pts = [(r["tokens"] / 1e6, r["val_solved"]) for r in recs if r.get("val_solved") is not None]
        line = ax.plot(*zip(*pts, strict=True), "o-", lw=1, ms=3, label=f"{label}, no TTT")[0] if pts else None
        if ttt and label in ttt:
            color = line.get_color() if line is not None else None
            ax.plot([ttt[label][0] / 1e6], [ttt[label][1]], "*", ms=12, color=color, label=f"{label}, with TTT")
    tasks = next((r["val_tasks"] for recs in logs.values() for r in recs if r.get("val_tasks")), None)
    ax.set_xlabel("pretraining tokens (millions)")
    ax.set_ylabel(f"held-out tasks solved{f' (of {tasks})' if tasks else ''}")
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))  # counts of tasks: a scale of at least one task
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("held-out solve rate")


def plot_solved(logs: dict[str, list[dict[str, Any]]], out: str | Path,
                ttt: dict[str, tuple[float, float]] | None = None, x: str = "minutes") -> Path:
    """Several runs in one picture (an architecture comparison): their held-out loss against minutes of wall clock
    (the axis runs of equal minutes are compared on; `x="tokens"` for runs of equal steps that shared a machine
    unevenly), and, where any run counted them, their held-out solve rates against tokens, each final model's
    score with TTT beside its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    solved = any(r.get("val_solved") is not None for recs in logs.values() for r in recs) or bool(ttt)
    fig, axes = plt.subplots(1, 2 if solved else 1, figsize=(13 if solved else 6.5, 4.5), squeeze=False)
    ax_loss = axes[0][0]
    for label, recs in logs.items():
        pts = [(r["elapsed"] / 60 if x == "minutes" else r["tokens"] / 1e6, r["val_loss"])
               for r in recs if r.get("val_loss") is not None]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), "o-", lw=1, ms=3, label=label)
    ax_loss.set_xlabel("minutes (wall clock, start-up included)" if x == "minutes" else "pretraining tokens (millions)")
    ax_loss.set_ylabel("held-out loss (target tokens)")
    ax_loss.grid(alpha=0.3)
    if ax_loss.get_lines():
        ax_loss.legend(fontsize=8)
    ax_loss.set_title("held-out loss")
    if solved:
        _solved_axes(axes[0][1], logs, ttt)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
