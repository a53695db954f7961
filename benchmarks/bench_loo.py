"""The leave-one-out self-check two ways: greedy decoding of each held-out demo, against one teacher-forced pass.

The adaptive policies (`testtime.stages.policy`) ask, per task, how many of its demonstrations the model solves from the
others. Decoding answers each held-out demo token by token; `engine.sequence_scores` scores each known answer
in one forward pass and calls it solved where every answer token is the argmax (what greedy decoding would pick).
This times both on the same held-out demos, through the base model, interleaved over rounds (medians), and
counts where they agree.

    python benchmarks/bench_loo.py --tasks arc1/eval --limit 8 [--device cpu] [--out results/FILE.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from provenance import header, publish

from testtime.data.tasks import grids_equal, load_tasks
from testtime.model.loading import load_model
from testtime.stages.engine import sequence_scores
from testtime.stages.policy import loo_tasks
from testtime.stages.predict import PredictConfig, answered, predict_tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="arc1/eval")
    ap.add_argument("--limit", type=int, default=8, help="the first N tasks")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped base model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.device)
    model, codec = loaded.model.eval(), loaded.codec
    held_out = [lt for t in load_tasks(args.tasks)[: args.limit] for lt in loo_tasks(t)]
    one_view = PredictConfig(views=1, orders=1)

    def decoded() -> list[bool]:
        preds, _ = predict_tasks(model, held_out, codec, one_view)
        return [bool(p.predictions[0]) and grids_equal(p.predictions[0][0].grid, lt.test[0].output)
                for lt, p in zip(held_out, preds, strict=True)]

    def teacher_forced() -> list[bool]:
        seqs = [answered(codec, lt.train, lt.test[0], one_view.max_len) for lt in held_out]
        kept = [s for s in seqs if s is not None]
        exact = iter(s.exact for s in sequence_scores(model, kept, codec.pad_id, stop_ids=codec.stop_ids))
        return [s is not None and next(exact) for s in seqs]

    def timed(check) -> tuple[float, list[bool]]:
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        solved = check()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, solved

    ways = {"greedy decoding": decoded, "teacher forcing": teacher_forced}
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    solved: dict[str, list[bool]] = {}
    for _ in range(args.rounds):
        for w, check in ways.items():
            dt, solved[w] = timed(check)
            seconds[w].append(dt)
    a, b = solved.values()
    lines = header("Leave-one-out check: decoding against teacher forcing", model.device)
    lines += ["", f"{len(held_out)} held-out demos of the first {args.limit} tasks of {args.tasks}, base model, "
              f"median of {args.rounds} rounds.", "",
              "| check | seconds | solved |", "|---|---|---|"]
    lines += [f"| {w} | {statistics.median(seconds[w]):.2f} | {sum(solved[w])} |" for w in ways]
    lines += ["", f"Same verdict on {sum(x == y for x, y in zip(a, b, strict=True))} of {len(a)} held-out demos."]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
