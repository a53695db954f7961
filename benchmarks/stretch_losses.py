"""The model card's loss.png: the pretraining logs of a model's stretches one after the other, each stretch's steps
and tokens continuing the last one's (a warm restart), drawn as one run by testtime.report.pretrain_log.plot_loss.
Steps and tokens count from the first stretch's start (`--start-tokens`: the model's tokens before it).

    # each archive into its own folder (two hold runs/pretrain-campaign); the first five and 07d from git history
    for a in 06 06b 06c 06d 06e 06g 06i 07 07b 07c 07d 07e; do
        bash scripts/results_archive.sh results/h100-campaign-2026-12-$a/runs.tar.xz /tmp/s/$a; done
    python benchmarks/stretch_losses.py --name "v11 = v4 + twelve stretches" --out models/testtime-grid-base/loss.png \
        $(for a in 06 06b 06c 06d 06e 06g 06i 07 07b 07c 07d 07e; do find /tmp/s/$a -name log.jsonl; done)

Each LOG is a run's log.jsonl or the run folder holding it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from testtime.core.config import ConfigError
from testtime.report.pretrain_log import plot_loss, read_log


def chain(logs: list[Path], start_tokens: float = 0) -> list[dict]:
    """The stretches' records one after the other; a log that is missing, empty or lacks a record's step or tokens
    is refused, naming it."""
    chained: list[dict] = []
    step, tokens = 0, start_tokens
    for log in logs:
        run = log if log.is_dir() else log.parent
        if not (run / "log.jsonl").is_file() or (not log.is_dir() and log.name != "log.jsonl"):
            raise SystemExit(f"error: {log}: no log.jsonl there (a pretraining run's log, or its folder)")
        try:
            recs = read_log(run)
        except ConfigError as e:
            raise SystemExit(f"error: {log}: {e}") from None
        if not recs:
            raise SystemExit(f"error: {log}: no records")
        for i, r in enumerate(recs, 1):
            if not isinstance(r.get("step"), int) or not isinstance(r.get("tokens"), (int, float)):
                raise SystemExit(f"error: {log}: record {i} has no step or tokens")
        chained += [{**r, "step": r["step"] + step, "tokens": r["tokens"] + tokens} for r in recs]
        step, tokens = chained[-1]["step"], chained[-1]["tokens"]
    return chained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path, help="log.jsonl of each stretch (or its run folder), in order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="stretches", help="the picture's run name (its titles say it)")
    ap.add_argument("--start-tokens", type=float, default=0.0, help="the model's tokens before the first stretch")
    args = ap.parse_args()
    name = args.name.replace("/", "-").strip()
    if name.strip(".") == "":
        raise SystemExit(f"error: --name {args.name!r}: a name with letters, to title the picture")
    if not args.out.parent.is_dir():
        raise SystemExit(f"error: --out {args.out}: no folder {args.out.parent}")
    recs = chain(args.logs, args.start_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / name
        run.mkdir()
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        print(plot_loss(run, args.out))


if __name__ == "__main__":
    main()
