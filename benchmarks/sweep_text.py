"""A short sweep of text TTT settings on a few tasks: learning rate, LoRA rank, steps (epochs), the loss on every
answer or on the last/held-out one only, and leave-one-out against shuffled demo sequences. Writes a markdown
table (one row per setting, best first, each paired by query with the in-context baseline) and keeps every
setting's run folder under --out, so a stopped sweep resumes where it stopped.

    # CPU, a tiny model (how the test runs it)
    python benchmarks/sweep_text.py --model TINY --tasks data/text/sample.jsonl --max-queries 4 --samples 4 --out runs/sweep
    # GPU, Gemma 3 270M, a few BBH tasks (scripts/gpu_bbh.sh runs this)
    python benchmarks/sweep_text.py --model models-local/gemma3-270m --tasks data/text/bbh27.jsonl \
        --ids dyck_languages ruin_names movie_recommendation snarks boolean_expressions navigate \
        --max-queries 40 --out runs/sweep --table results/bbh-sweep.md

`--grid axes` (the default) moves one setting at a time away from the paper's BBH recipe (lr 1e-4, rank 64,
1 epoch of 40 shuffled sequences, loss on every answer), then tries the best value of every axis together;
`--grid full` runs every combination.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from provenance import header, publish

from testtime.core.distributed import pick_device
from testtime.model.loading import load_model
from testtime.report.compare import compare_runs
from testtime.text.predict import TextPredictConfig
from testtime.text.run import TextEvalConfig, evaluate_text
from testtime.text.tables import run_row
from testtime.text.tasks import first_queries, load_text_tasks
from testtime.text.ttt import TTT_DATA, text_ttt_config

AXES = ("lr", "rank", "epochs", "loss", "data")


def setting_name(s: dict) -> str:
    return f"lr{s['lr']:g}-r{s['rank']}-e{s['epochs']}-{s['loss']}-{s['data']}"


def settings(args) -> list[dict]:
    """The settings to run, the paper's recipe first."""
    values = {"lr": args.lr, "rank": args.rank, "epochs": args.epochs, "loss": args.loss, "data": args.data}
    base = {k: v[0] for k, v in values.items()}
    if args.grid == "full":
        return [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*(values[k] for k in AXES))]
    out = [base]
    for axis in AXES:
        out += [{**base, axis: v} for v in values[axis][1:]]
    return out


def config(args, s: dict | None) -> TextEvalConfig:
    pcfg = TextPredictConfig(token_budget=args.token_budget) if args.token_budget else TextPredictConfig()
    if s is None:
        return TextEvalConfig(tasks=str(args.tasks), model=args.model, ttt=False, device=args.device,
                              max_queries=args.max_queries, predict_cfg=pcfg)
    ttt = text_ttt_config(samples=args.samples, lr=s["lr"], rank=s["rank"], alpha=float(s["rank"]), epochs=s["epochs"],
                          loss_on_demos=s["loss"] == "all")
    return TextEvalConfig(tasks=str(args.tasks), model=args.model, device=args.device, max_queries=args.max_queries,
                          ttt_cfg=ttt, ttt_data=s["data"], predict_cfg=pcfg, max_group=args.max_group)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a Hugging Face causal LM folder")
    ap.add_argument("--tasks", type=Path, required=True, help="a text tasks .jsonl")
    ap.add_argument("--ids", nargs="+", help="only these task ids (default: all in the file)")
    ap.add_argument("--max-queries", type=int, default=40, help="the first N queries of each task")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 3e-4, 3e-5])
    ap.add_argument("--rank", type=int, nargs="+", default=[64, 16])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--loss", nargs="+", choices=["all", "last"], default=["all", "last"],
                    help="loss on every answer, or on the last (shuffled) / held-out (loo) one")
    ap.add_argument("--data", nargs="+", choices=TTT_DATA, default=["shuffled", "loo"])
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--grid", choices=["axes", "full"], default="axes")
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-group", type=int, default=None)
    ap.add_argument("--token-budget", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--table", type=Path, help="append the table to this markdown file")
    ap.add_argument("--best-config", type=Path, help="write the best setting as a text run's config (for --config)")
    args = ap.parse_args()

    tasks = load_text_tasks(args.tasks)
    if args.ids:
        missing = set(args.ids) - {t.id for t in tasks}
        if missing:
            ap.error(f"not in {args.tasks}: {', '.join(sorted(missing))}")
        tasks = [t for t in tasks if t.id in set(args.ids)]
    tasks = [first_queries(t, args.max_queries) for t in tasks]
    device = pick_device(args.device)
    loaded = load_model(args.model, device)
    model, tok = loaded.model, loaded.tokenizer

    def run(name: str, cfg: TextEvalConfig) -> Path:
        t0 = time.perf_counter()
        evaluate_text(cfg, args.out / name, model=model, tokenizer=tok, tasks=tasks, show_progress=False)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
        return args.out / name

    base_dir = run("icl", config(args, None))
    todo = settings(args)
    rows = []

    def measure(s: dict) -> dict:
        d = run(setting_name(s), config(args, s))
        r = run_row(d)
        won, lost, _ = compare_runs(base_dir, d).items
        return {**s, **r, "won": won, "lost": lost, "p": compare_runs(base_dir, d).items_p_value}

    for s in todo:
        rows.append(measure(s))
    if args.grid == "axes":  # every axis at its best value, together
        base = todo[0]
        best = dict(base)
        for axis in AXES:
            on_axis = [r for r in rows if all(r[k] == base[k] for k in AXES if k != axis)]
            best[axis] = max(on_axis, key=lambda r: (r["task_accuracy"] or 0, r[axis] == base[axis]))[axis]
        if all(setting_name(best) != setting_name(r) for r in rows):
            rows.append(measure(best))

    icl = run_row(base_dir)
    lines = header(f"Text TTT sweep, {len(tasks)} tasks x <= {args.max_queries} queries", device) + [""]
    lines += [f"Tasks: {', '.join(t.id for t in tasks)}; {args.samples} sequences a task, batch 2. "
              f"In-context baseline (no TTT): {100 * (icl['task_accuracy'] or 0):.1f}% mean task accuracy, "
              f"{icl['right']}/{icl['scored']} queries.", "",
              "| lr | rank | epochs | loss | data | mean task acc. (%) | queries right | won/lost vs ICL (by query) | p "
              "| s/query |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -(r["task_accuracy"] or 0)):
        lines.append(f"| {r['lr']:g} | {r['rank']} | {r['epochs']} | {r['loss']} | {r['data']} | "
                     f"{100 * (r['task_accuracy'] or 0):.1f} | {r['right']}/{r['scored']} | {r['won']}/{r['lost']} | "
                     f"{r['p']:.3g} | {r['seconds_per_query']:.3f} |")
    publish(lines, args.table)
    if args.best_config:
        # The best mean task accuracy; a tie goes to the earlier setting (the paper's recipe comes first).
        best = max(rows, key=lambda r: (r["task_accuracy"] or 0, -rows.index(r)))
        ttt = config(args, best).ttt_cfg
        keep = ("samples", "epochs", "batch_size", "lr", "rank", "alpha", "loss_on_demos")
        args.best_config.parent.mkdir(parents=True, exist_ok=True)
        args.best_config.write_text(json.dumps({"ttt_data": best["data"],
                                                "ttt_cfg": {k: getattr(ttt, k) for k in keep}}, indent=1) + "\n")
        print(f"best: {setting_name(best)}; wrote {args.best_config}")


if __name__ == "__main__":
    main()
