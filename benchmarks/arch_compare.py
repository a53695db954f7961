"""The architecture comparison at equal minutes (issue 30): a table and a picture of base-model candidates, each
pretrained from scratch for the same minutes and then evaluated with the default TTT on the 40 held-out training
tasks (`arc1/train-holdout`), read from their run folders.

    python benchmarks/arch_compare.py --runs runs --out runs/bench-arch.md --json runs/bench-arch.json \
        --png arch.png base wide looped taskemb

Candidate NAME reads RUNS/pretrain-arch-NAME (log.jsonl, config.json, model/) and RUNS/holdout-NAME (summary.json of
`testtime evaluate --tasks arc1/train-holdout`); what is missing is left blank. The picture: each candidate's held-out
tasks solved without TTT (greedy, identity view) against its pretraining tokens, and its final model with TTT.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from testtime.core import jsonio
from testtime.recipes.pretrain_step import PEAK_BF16_FLOPS

ATTENDED = 2800  # tokens a token attends to in this data, packed (from the 2026-12-04 benchmark's MFU)


def shape(run: Path) -> dict:
    """Parameters and FLOPs per token of the run's model, from its config (weights on the meta device)."""
    import torch

    from testtime.model.grid_model import flop_params
    from testtime.model.loading import build_model, n_params
    from testtime.recipes.pretrain import PretrainConfig

    cfg = PretrainConfig.from_dict(jsonio.read_json(run / "config.json"))
    exported = run / "model" / "config.json"
    names = (jsonio.read_json(exported).get("task_names") or []) if exported.exists() else []
    with torch.device("meta"):
        model = build_model(cfg.model, names or (["?"] if cfg.model.task_embedding else ()))
    layers = cfg.model.num_layers * cfg.model.loops
    return {"params_m": n_params(model) / 1e6, "flop_params_m": flop_params(model) / 1e6,
            "gflop_token": (6 * flop_params(model) + 6 * layers * cfg.model.hidden_size * ATTENDED) / 1e9,
            "task_rows": len(names), "fit_minutes": cfg.fit_minutes}


def candidate(runs: Path, name: str) -> dict:
    run = runs / f"pretrain-arch-{name}"
    row: dict = {"name": name}
    if (run / "config.json").exists():
        row.update(shape(run))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").exists() else []
    row["log"] = log
    if log:
        steady = [r for r in log[len(log) // 4:] if r.get("tokens_per_s")] or log
        vals = [r for r in log if r.get("val_loss") is not None]
        solved = [r for r in log if r.get("val_solved") is not None]
        row.update(steps=log[-1]["step"], tokens_m=log[-1]["tokens"] / 1e6, minutes=log[-1]["elapsed"] / 60,
                   tokens_per_s=statistics.median(r["tokens_per_s"] for r in steady), loss=log[-1]["loss"],
                   val_loss=vals[-1]["val_loss"] if vals else None,
                   best_val=min(r["val_loss"] for r in vals) if vals else None,
                   solved_no_ttt=solved[-1]["val_solved"] if solved else None,
                   held=solved[-1]["val_tasks"] if solved else None)
        mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
        row["mfu"] = statistics.median(mfus) if mfus else None
        probed = [r["probe_loss"] for r in log if r.get("probe_loss")]
        names = dict.fromkeys(k for p in probed for k in p)  # a source's first and last validation that probed it
        row["probe_loss"] = ({k: (next(p[k] for p in probed if k in p), next(p[k] for p in reversed(probed) if k in p))
                              for k in names} if probed else None)
        peaks = [r["peak_gib"] for r in log if r.get("peak_gib") is not None]
        row["peak_gib"] = max(peaks) if peaks else None
        if row["mfu"] is not None:  # what the run's own count says a token cost
            row["gflop_token"] = row["mfu"] * PEAK_BF16_FLOPS / row["tokens_per_s"] / 1e9
    summary = runs / f"holdout-{name}" / "summary.json"
    if summary.exists():
        s = jsonio.read_json(summary)
        row.update(ttt_score=s["score"], ttt_tasks=s["n_scored"], s_task=s["mean_seconds"])
    return row


def fmt(v, spec: str = "") -> str:
    return "" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = ("| candidate | params (M) | FLOPs/token (G) | tokens (M) | train min | tokens/s | MFU | peak GiB | loss "
            "| held-out loss (last / best) | held-out solved, no TTT | held-out solved, TTT (pass@2) | s/task |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        held = f" / {r['held']}" if r.get("held") else ""
        ttt = f"{fmt(r.get('ttt_score'), 'g')} / {r['ttt_tasks']}" if r.get("ttt_tasks") else ""
        lines.append(
            f"| {r['name']} | {fmt(r.get('params_m'), '.2f')} | {fmt(r.get('gflop_token'), '.2f')} "
            f"| {fmt(r.get('tokens_m'), ',.1f')} | {fmt(r.get('minutes'), '.1f')} | {fmt(r.get('tokens_per_s'), ',.0f')} "
            f"| {fmt(r.get('mfu'), '.1%')} | {fmt(r.get('peak_gib'), '.1f')} | {fmt(r.get('loss'), '.4f')} "
            f"| {fmt(r.get('val_loss'), '.4f')} / {fmt(r.get('best_val'), '.4f')} "
            f"| {fmt(r.get('solved_no_ttt'), 'g')}{held} | {ttt} | {fmt(r.get('s_task'), '.2f')} |")
    return "\n".join(lines) + "\n"


def probe_table(rows: list[dict]) -> str:
    """The answer loss on draws of each training source, at the run's first and last validation: a source whose
    loss no longer falls is memorized, one whose loss falls is still taught."""
    names = list(dict.fromkeys(k for r in rows if r.get("probe_loss") for k in r["probe_loss"]))
    if not names:
        return ""
    lines = ["| candidate | " + " | ".join(f"{n} (first -> last)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for r in rows:
        probe = r.get("probe_loss") or {}
        cells = [f"{probe[n][0]:.4f} -> {probe[n][1]:.4f}" if n in probe else "" for n in names]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\nAnswer loss on draws of each training source (`probe_loss`):\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="candidates: base wide looped taskemb")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, help="the table (markdown)")
    ap.add_argument("--json", type=Path, help="the table's rows (JSON)")
    ap.add_argument("--png", type=Path, help="held-out loss and solve rate, per candidate")
    ap.add_argument("--loss-x", choices=("minutes", "tokens"), default="minutes",
                    help="the held-out loss's axis: tokens for runs of equal steps on a shared machine")
    args = ap.parse_args()
    rows = [candidate(args.runs, n) for n in args.names]
    text = (f"### Architectures at equal minutes: {', '.join(args.names)}\n\nFLOPs per token: the run's own count "
            f"where it logged MFU, else 6 x (parameters, looped layers once a pass) + attention over {ATTENDED} "
            "tokens.\n\n" + table(rows) + probe_table(rows))
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "log"} for r in rows], indent=1) + "\n")
    if args.png:
        from testtime.report.pretrain_log import plot_solved

        logs = {r["name"]: r["log"] for r in rows if r["log"]}
        ttt = {r["name"]: (r["log"][-1]["tokens"], r["ttt_score"]) for r in rows if r["log"] and "ttt_score" in r}
        print(f"wrote {plot_solved(logs, args.png, ttt, x=args.loss_x)}")


if __name__ == "__main__":
    main()
