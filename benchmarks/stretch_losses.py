"""The model card's loss.png: the pretraining logs of a model's stretches one after the other, each stretch's steps
continuing the last one's (a warm restart) and so do its tokens, drawn as one run by testtime.report.pretrain_log.plot_loss.

    python benchmarks/stretch_losses.py --name "v5-v7: six stretches over v4" --out models/testtime-grid-base/loss.png \
        first/log.jsonl second/log.jsonl ...

The logs come out of the campaign's results archives (`tar -xJf results/h100-campaign-DATE/runs.tar.xz`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from testtime.report.pretrain_log import plot_loss, read_log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path, help="log.jsonl of each stretch, in training order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="stretches", help="the picture's run name (its titles say it)")
    args = ap.parse_args()
    chained, offset, tokens = [], 0, 0
    for log in args.logs:
        recs = read_log(log.parent) if log.name == "log.jsonl" else []
        if not recs:
            raise SystemExit(f"error: {log}: no pretraining records (a log.jsonl of a pretraining run)")
        chained += [{**r, "step": r["step"] + offset, "tokens": r.get("tokens", 0) + tokens} for r in recs]
        offset, tokens = chained[-1]["step"], chained[-1]["tokens"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / args.name.replace("/", "-")
        run.mkdir()
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chained))
        print(plot_loss(run, args.out))


if __name__ == "__main__":
    main()
