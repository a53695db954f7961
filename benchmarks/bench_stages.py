"""Time each stage of the TTT pipeline (dataset build, adapter training, generation, voting), batched
across tasks and one task at a time, and write a markdown table with the command, device, date and commit.

    python benchmarks/bench_stages.py --tasks arc1/eval --limit 16 --out results/bench-stages-cpu.md
    python benchmarks/bench_stages.py --model models/testtime-grid-base --limit 400 --profile trace.json
    python benchmarks/bench_stages.py --limit 64 --skip-single --graphs-ab   # decode with and without CUDA graphs

Throughput is reported as real (unpadded) tokens per second; MFU counts 4N FLOPs per trained token for
LoRA (forward plus activation gradients, no weight gradients) plus causal attention, and 2N per generated
token, against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from provenance import header, publish

from testtime.core.distributed import pick_device
from testtime.data.encode import Codec
from testtime.data.tasks import Task, load_tasks
from testtime.model.loading import load_model
from testtime.model.lora import Adapters, attach_multi_lora
from testtime.recipes.grid import plan_groups
from testtime.stages.predict import PredictConfig, predict_tasks
from testtime.stages.ttt import TTTConfig, build_dataset, train_adapters
from testtime.stages.vote import attempts, hierarchical_vote, is_solved

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def run(model, codec: Codec, tasks: list[Task], ttt: TTTConfig, pred: PredictConfig, max_group: int, device):
    """The evaluation recipe with a clock around each stage; returns timings, token counts, the score and
    every task's attempts (to check that two paths answer alike)."""
    t = {"build": 0.0, "ttt": 0.0, "generate": 0.0, "vote": 0.0}
    tokens = {"ttt": 0, "generated": 0}
    solved = 0.0
    answers: dict[str, list] = {}
    start = time.perf_counter()
    data = {task.id: build_dataset(task, codec, ttt) for task in tasks}
    t["build"] = time.perf_counter() - start
    lengths = {k: max(len(s) for s in v) for k, v in data.items()}
    groups = plan_groups(tasks, lengths, ttt, max_group or 64)
    lora = attach_multi_lora(model, max(len(g) for g in groups), rank=ttt.rank, alpha=ttt.alpha, seed=ttt.seed)
    try:
        for group in groups:
            lora.reset(ttt.seed, [x.id for x in group])
            sync(device)
            t0 = time.perf_counter()
            res = train_adapters(model, lora.parameters(), [data[x.id] for x in group], ttt, pad_id=codec.pad_id,
                                 select=lora.use, task_ids=[x.id for x in group])
            sync(device)
            t1 = time.perf_counter()
            preds, _ = predict_tasks(model, group, codec, pred, adapters=Adapters.per_item(lora, len(group)))
            sync(device)
            t2 = time.perf_counter()
            for task, p in zip(group, preds, strict=True):
                for qi, plist in enumerate(p.predictions):
                    att = attempts(hierarchical_vote(plist, per_group=pred.per_group))
                    answers.setdefault(task.id, []).append([None if a is None else a.tolist() for a in att])
                    truth = task.test[qi].output
                    solved += is_solved(att, truth) / len(task.test) if truth is not None else 0
                tokens["generated"] += p.generated_tokens
            t3 = time.perf_counter()
            tokens["ttt"] += res.tokens
            t["ttt"] += t1 - t0
            t["generate"] += t2 - t1
            t["vote"] += t3 - t2
    finally:
        lora.detach()
    t["total"] = time.perf_counter() - start
    return t, tokens, solved, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped base model)")
    ap.add_argument("--tasks", default="arc1/eval")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--device", default=None)
    ap.add_argument("--samples", type=int, default=TTTConfig.samples)
    ap.add_argument("--epochs", type=int, default=TTTConfig.epochs)
    ap.add_argument("--views", type=int, default=PredictConfig.views)
    ap.add_argument("--max-group", type=int, default=64, help="tasks per batch on the batched path")
    ap.add_argument("--skip-single", action="store_true", help="skip the one-task-at-a-time path")
    ap.add_argument("--graphs-ab", action="store_true", help="also run the batched path decoding without CUDA graphs")
    ap.add_argument("--profile", type=Path, default=None, help="write a torch profiler trace of the batched path")
    ap.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    args = ap.parse_args()

    device = torch.device(pick_device(args.device))
    loaded = load_model(args.model, device=str(device))
    model, codec = loaded.model.eval(), loaded.codec
    tasks = load_tasks(args.tasks)[: args.limit]
    ttt = TTTConfig(samples=args.samples, epochs=args.epochs)
    pred = PredictConfig(views=args.views)
    plain = PredictConfig(views=args.views, cuda_graphs=False)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    peak = peak_flops(device)

    paths = [("batched", args.max_group, pred)]
    paths += [("batched, no CUDA graphs", args.max_group, plain)] if args.graphs_ab else []
    paths += [] if args.skip_single else [("one task at a time", 1, pred)]
    rows = []
    first_answers = None
    for name, group, pcfg in paths:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        prof = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                       + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []))
                if args.profile and group > 1 else nullcontext())
        with prof:
            t, tok, solved, answers = run(model, codec, tasks, ttt, pcfg, group, device)
        first_answers = first_answers or answers
        same = sum(answers.get(k) == v for k, v in first_answers.items())
        if args.profile and group > 1:
            prof.export_chrome_trace(str(args.profile))
        mean_len = tok["ttt"] / max(1, len(tasks) * ttt.steps * ttt.batch_size)
        train_flops = (4 * n_params + 6 * cfg.num_hidden_layers * cfg.hidden_size * mean_len) * tok["ttt"]
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows.append({
            "path": name, "tasks": len(tasks), "solved": solved, "same": same, **t,
            "ttt_tok_s": tok["ttt"] / max(t["ttt"], 1e-9),
            "gen_tok_s": tok["generated"] / max(t["generate"], 1e-9),
            "tasks_per_hour": 3600 * len(tasks) / t["total"],
            "ttt_mfu": train_flops / t["ttt"] / peak if peak else None,
            "mem_gib": mem,
        })

    lines = header("Stage timings", device) + [
        f"model {loaded.path} ({n_params / 1e6:.2f}M params), {len(tasks)} tasks of {args.tasks}, "
        f"TTT {ttt.samples} samples x {ttt.epochs} epochs, {pred.views} views",
        "",
        "| path | pass@2 (tasks) | same attempts as row 1 | build s | TTT s | generate s | vote s | total s | s/task | TTT tok/s | gen tok/s | TTT MFU | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = f"{100 * r['ttt_mfu']:.1f}%" if r["ttt_mfu"] is not None else "n/a"
        mem = f"{r['mem_gib']:.1f}" if r["mem_gib"] is not None else "n/a"
        lines.append(
            f"| {r['path']} | {r['solved']:.1f}/{r['tasks']} | {r['same']}/{r['tasks']} | {r['build']:.1f} | {r['ttt']:.1f} | {r['generate']:.1f} | "
            f"{r['vote']:.2f} | {r['total']:.1f} | {r['total'] / r['tasks']:.2f} | {r['ttt_tok_s']:.0f} | "
            f"{r['gen_tok_s']:.0f} | {mfu} | {mem} |"
        )
    for r in rows[1:]:
        lines += ["", f"Row 1 is {r['total'] / rows[0]['total']:.2f}x faster end to end than '{r['path']}' "
                      f"({r['generate'] / max(rows[0]['generate'], 1e-9):.2f}x in generation)."]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
