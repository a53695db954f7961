"""The pretraining campaign's curve: pass@2 on a task set against the base model's pretraining tokens, one line
per setting (say, with and without TTT), read from the runs' own summaries.

    python benchmarks/campaign_curve.py --out curve.png \
        --run "TTT 96 steps:v3:1.30e9:runs/v3e6" --run "no TTT:v3:1.30e9:runs/v3icl" ...

Each --run is SERIES:MODEL:TOKENS:RUN_DIR (RUN_DIR holds summary.json); the points of a series are joined in
order of tokens and labelled with their model and score.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from testtime.core import jsonio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="SERIES:MODEL:TOKENS:RUN_DIR")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="ARC-AGI-1 evaluation (400 tasks), pass@2 against pretraining tokens")
    args = ap.parse_args()
    series: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
    for spec in args.run:
        try:
            name, model, tokens, run_dir = spec.split(":", 3)
            summary = jsonio.read_json(Path(run_dir) / "summary.json")
            series[name].append((float(tokens), model, float(summary["score"])))
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: --run {spec!r}: {e}") from None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in series.items():
        points.sort()
        xs, labels, ys = zip(*points, strict=True)
        ax.plot([x / 1e9 for x in xs], ys, "o-", label=name)
        for x, label, y in points:
            ax.annotate(f"{label} {y:g}", (x / 1e9, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
    ax.margins(x=0.1, y=0.1)  # room for the last point's label inside the frame
    ax.set_xlabel("pretraining tokens (billions, cumulative)")
    ax.set_ylabel("pass@2 (tasks of 400)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
