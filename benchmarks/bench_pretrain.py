"""Pretraining throughput on one GPU: the recipe as it was beside the new ones, in one run, on the same data.

Variants, each the config's pretraining loop (compiled, bf16, fused AdamW) in a process of its own:

    mask    padded length buckets, transformers' causal mask built as before: under torch.compile a [B, 1, T, T]
            tensor, which sends every layer to an attention kernel that reads it
    padded  padded length buckets, no mask: SDPA's is_causal (the flash kernel)
    packed  rows of max_len tokens holding several sequences, a FlexAttention document mask; one static shape
    angles  packed, with the rotary angles computed from the positions in every call, as before 2026-12-07
            (Inductor folded that pow and cos into every layer's rotary kernel); packed indexes a table built once

The processes load data, compile and warm up at the same time (compilation is CPU work), wait for each other,
then time their steps one at a time, so no timed step shares the GPU. MFU counts 6 FLOPs per parameter and token
plus causal attention over each sequence's own tokens (`pretrain_step.flops_per_token`; the same count whether a
batch pads or packs), against the dense bf16 peak. Start-up seconds are with the other variants compiling beside.

`--profile N` then records N more steps under torch.profiler, still alone on the device, and says where a step's
time goes (`testtime.recipes.step_profile`: kernel time by kind, and how busy the device was).

    python benchmarks/bench_pretrain.py --config configs/pretrain-grid-continue.json --out results/x.md --profile 5
    python benchmarks/bench_pretrain.py --config configs/pretrain-tiny.json --device cpu --steps 3 --warmup 2  # a check
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

VARIANTS = ("mask", "padded", "packed", "angles")


def run_one(args) -> dict:
    """One variant, in this process: warm up, meet the others, time `steps` steps alone."""
    import torch

    from testtime.model.grid_model import GridLlamaModel, GridRotaryEmbedding, flop_params
    from testtime.recipes.pretrain import PretrainConfig, pretrain
    from testtime.recipes.pretrain_step import PEAK_BF16_FLOPS, flops_per_token
    from testtime.recipes.step_profile import StepProfile

    t_start = time.monotonic()
    sync_dir = Path(args.sync)
    cfg = PretrainConfig.from_json(args.config)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    end = args.warmup + args.steps
    last = end + args.profile
    # A log line syncs the host with the device, which training does once every 25 steps: so a line every
    # gcd(warmup, steps) steps, as near that as lines whose losses cover exactly the timed steps allow.
    every = math.gcd(args.warmup, args.steps)
    cfg = dataclasses.replace(cfg, packing=args.one in ("packed", "angles"), total_steps=last + 1, fit_minutes=None,
                              log_every=every, val_every=every * 10**6, solve_every=0, holdout=0,
                              checkpoint_minutes=43200, max_minutes=None, device=args.device)
    GridLlamaModel.always_build_mask = args.one == "mask"
    GridRotaryEmbedding.from_table = args.one != "angles"
    acc = {"real": 0, "padded": 0, "attended": 0}
    out: dict = {"variant": args.one}
    lock = open(sync_dir / "lock", "w")  # noqa: SIM115 (held across calls of the hook)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-pretrain-{args.one}-"))
    # the steps after the timed ones (`pretrain` numbers a fresh run's steps from 1)
    profiler = StepProfile(args.profile, run_dir / "profile.json", cuda=cuda, after=end, report=lambda _: None) \
        if args.profile else None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def hook(step: int, batch) -> None:
        if step == args.warmup:
            sync()
            out["startup_s"] = round(time.monotonic() - t_start, 1)
            (sync_dir / f"ready-{args.one}").touch()
            deadline = time.monotonic() + 1800
            while len(list(sync_dir.glob("ready-*"))) < args.n and time.monotonic() < deadline:
                time.sleep(0.5)
            fcntl.flock(lock, fcntl.LOCK_EX)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            out["t0"] = time.perf_counter()
        elif args.warmup < step <= end:
            acc["real"] += batch.n_real
            acc["padded"] += batch.n_padded
            acc["attended"] += batch.n_attended
            out.setdefault("shapes", set()).add(tuple(batch.input_ids.shape))
            if step == end:
                sync()
                out["seconds"] = time.perf_counter() - out.pop("t0")
                out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None
                if profiler is None:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        if profiler is not None:  # the profiled steps too run alone on the device: the lock is held to the last
            profiler(step, batch)
            if step == last:
                fcntl.flock(lock, fcntl.LOCK_UN)
                out["profile"] = profiler.result

    with profiler or nullcontext():
        result = pretrain(cfg, run_dir, progress=False, on_step=hook, stop_at=last, export=False)
    model = result.trained
    n = flop_params(model)  # looped layers once a pass (the parameter count for any other model)
    text = model.config.get_text_config()
    tps = acc["real"] / out["seconds"]
    losses = [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
              if args.warmup < r["step"] <= end]
    out.update({
        "tokens_per_s": round(tps),
        "padded_tokens_per_s": round(acc["padded"] / out["seconds"]),
        "step_s": round(out["seconds"] / args.steps, 4),
        "mfu": round(flops_per_token(text.num_hidden_layers, text.hidden_size, n, acc["attended"] / acc["real"])
                     * tps / PEAK_BF16_FLOPS, 4) if cuda else None,
        "loss": round(statistics.mean(losses), 5),
        "shapes": len(out.get("shapes", ())),
        "seconds": round(out["seconds"], 2),
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/pretrain-grid-continue.json")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--warmup", type=int, default=15, help="steps before timing (compilation, allocator)")
    ap.add_argument("--steps", type=int, default=30, help="steps timed")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--profile", type=int, default=0, help="then profile this many steps: where a step's time goes")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to append the table to")
    ap.add_argument("--json", type=Path, default=None, help="write every variant's figures here")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--sync", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return

    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS):
        sys.exit(f"error: --variants takes some of {','.join(VARIANTS)}, got {args.variants!r}")
    sync_dir = tempfile.mkdtemp(prefix="bench-pretrain-sync-")
    procs = {v: subprocess.Popen([sys.executable, __file__, "--one", v, "--sync", sync_dir, "--n", str(len(variants)),
                                  "--config", args.config, "--warmup", str(args.warmup), "--steps", str(args.steps),
                                  "--device", args.device, "--profile", str(args.profile)],
                                 stdout=subprocess.PIPE, text=True)
             for v in variants}
    rows = []
    for v, p in procs.items():
        stdout, _ = p.communicate()
        found = [line[7:] for line in stdout.splitlines() if line.startswith("RESULT ")]
        if p.returncode or not found:
            print(f"{v}: failed (exit {p.returncode})\n{stdout[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(found[-1]))

    import torch
    from provenance import header, publish

    from testtime.recipes import step_profile

    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    base = next((r for r in rows if r["variant"] in ("mask", "angles")), rows[0] if rows else None)
    lines = header("Pretraining throughput, one device", device) + [
        "", f"config `{args.config}`; {args.warmup} warm-up steps, then {args.steps} timed steps a variant, each alone "
            f"on the device, the host synced every {math.gcd(args.warmup, args.steps)} steps", "",
        "| variant | real tokens/s | padded tokens/s | s/step | MFU | peak GiB | speed-up | mean loss | shapes | "
        "start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"| {r['variant']} | {r['tokens_per_s']:,} | {r['padded_tokens_per_s']:,} | {r['step_s']} | {mfu} "
                     f"| {r['peak_gib'] if r['peak_gib'] is not None else '-'} | "
                     f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['loss']} | {r['shapes']} | "
                     f"{r['startup_s']} |")
    for r in rows:
        if r.get("profile"):
            lines += step_profile.lines(r["profile"], r["variant"], device == "cuda")
    publish(lines, args.out)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if len(rows) < len(variants):
        sys.exit(1)


if __name__ == "__main__":
    main()
