"""Option ranking for text tasks: the prompt read once per query (shared KV cache) against one full
pass per option (how ranking worked before), on real tasks; writes a markdown table.

    python benchmarks/bench_text_rank.py --model models-local/gemma3-270m --tasks data/text/bigbench-bbh.jsonl \
        --ids bigbench_movie_recommendation bigbench_snarks --queries 4 --out results/bench-text-rank.md

Both paths score the same sequences; the table says whether every query picks the same option.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from provenance import header, publish

from testtime.model.loading import load_model
from testtime.model.training import pad_right, target_loss
from testtime.stages.engine import sequence_logprobs
from testtime.text.encode import TextFormat
from testtime.text.tasks import load_text_tasks


@torch.no_grad()
def full_pass_logprobs(model, seqs, pad_id: int, token_budget: int) -> list[float]:
    """The earlier way: every sequence (prompt + option) through the model on its own row."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(seqs[order[end]]) <= token_budget:
            end += 1
        batch = order[start:end]
        ids, mask = pad_right([seqs[i] for i in batch], pad_id, next(model.parameters()).device)
        mean = target_loss(model, ids, mask, [slice(r, r + 1) for r in range(len(batch))])
        counts = mask[:, 1:].sum(1)
        for r, i in enumerate(batch):
            out[i] = -float(mean[r] * counts[r])
        start = end
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", default="data/text/bigbench-bbh.jsonl")
    ap.add_argument("--ids", nargs="*", default=None, help="task ids (default: every task with options)")
    ap.add_argument("--queries", type=int, default=4, help="queries per task")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the table shows the fastest")
    ap.add_argument("--token-budget", type=int, default=1 << 17)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    loaded = load_model(args.model, device=args.device)
    model = loaded.model.eval()
    fmt = TextFormat(loaded.tokenizer)
    tasks = [t for t in load_text_tasks(args.tasks) if t.options and (not args.ids or t.id in args.ids)]
    rows = []
    for task in tasks:
        seqs, keys = [], []
        for qi, (x, _) in enumerate(task.queries[: args.queries]):
            for opt in task.options:
                seqs.append(fmt.encode(task.instruction, task.demos, x, opt, loss_on_demos=False))
                keys.append(qi)
        best = {"shared": float("inf"), "full": float("inf")}
        scores = {}
        for _ in range(args.repeats):
            for name, fn in (("shared", sequence_logprobs), ("full", full_pass_logprobs)):
                t0 = time.perf_counter()
                scores[name] = fn(model, seqs, fmt.pad_id, token_budget=args.token_budget)
                best[name] = min(best[name], time.perf_counter() - t0)
        k = len(task.options)
        picks = {n: [max(range(k), key=lambda j, q=q: s[q * k + j]) for q in range(len(seqs) // k)] for n, s in scores.items()}
        rows.append((task.id, len(seqs) // k, k, len(seqs[0].input_ids), best["full"], best["shared"],
                     picks["shared"] == picks["full"],
                     max(abs(a - b) for a, b in zip(scores["shared"], scores["full"], strict=True))))
        print(rows[-1])

    lines = header("Option ranking", args.device) + [
        f"model {args.model}", "",
        "| task | queries | options | prompt tokens | one pass per option s | prompt read once s | speedup | same picks | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tid, q, k, n, full, shared, same, diff in rows:
        lines.append(f"| {tid} | {q} | {k} | {n} | {full:.2f} | {shared:.2f} | {full / shared:.2f}x | {same} | {diff:.1e} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
