"""What per-task adapters add to one decoding step, by path: none, one shared adapter, per-adapter loop, per-row gather.

A decoding step pushes one token per row through every layer; with TTT each row also goes through its task's
LoRA factors. `MultiLoRALinear` has three ways to do that (see lora.py), chosen by `MultiLoRA.use`; this
times each on the same rows, interleaved over several rounds (medians), so a busy machine biases none.

    python benchmarks/bench_lora.py --rows 64 --adapters 8 --threads 1 [--model PATH] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from testtime.model.loading import load_model
from testtime.model.lora import attach_multi_lora


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped base model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--adapters", type=int, default=8, help="distinct adapters among the rows")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="forward passes per timing")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.device).model.eval()
    lora = attach_multi_lora(model, args.adapters, rank=args.rank, alpha=args.rank)
    dev = next(model.parameters()).device
    x = torch.randint(0, 10, (args.rows, 1), device=dev)
    mixed = (torch.arange(args.rows) % args.adapters).to(dev)

    def setup(path: str) -> None:
        if path == "base model":
            lora.use(None)
        elif path == "one adapter":
            lora.use(torch.zeros(args.rows, dtype=torch.long, device=dev))
        else:
            lora.use(mixed)
            if path == "per-row gather":
                lora.ctx.segments = lora.ctx.order = lora.ctx.inverse = None

    def timed(path: str) -> float:
        setup(path)
        with torch.no_grad():
            model(input_ids=x)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                model(input_ids=x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return (time.perf_counter() - t) / args.steps * 1e3

    paths = ["base model", "one adapter", "per-adapter loop", "per-row gather"]
    if dev.type != "cpu":  # the per-adapter loop is the CPU's path only
        paths.remove("per-adapter loop")
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(args.rounds):
        for p in paths:
            times[p].append(timed(p))
    base = statistics.median(times["base model"])
    print(f"| path | ms per step (median of {args.rounds}) | LoRA cost, ms |")
    print("|---|---|---|")
    for p in paths:
        med = statistics.median(times[p])
        print(f"| {p} | {med:.1f} | {med - base:+.1f} |")
    print(f"\n{args.rows} rows x 1 token, {args.adapters} adapters of rank {args.rank}, {args.threads} thread(s), "
          f"device {args.device}")


if __name__ == "__main__":
    main()
