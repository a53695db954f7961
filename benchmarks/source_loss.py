"""What a base model already knows of each pretraining source: its loss on a source's answers and how many it
solves without TTT, on samples drawn as pretraining draws them (issue 30: is a new source new to the model?).

    PYTHONPATH=src python benchmarks/source_loss.py --per-source 150 --gen runs/gen/gen.npz \
        --out results/X.md --json results/X.json

Each sample is what pretraining would feed the model (the source's `sample`: 2-5 demos and a query, under a random
rotation/flip and color permutation), posed as evaluation poses it: the demos in context, the query's output the
only target. Per source: the mean loss per answer token, and the share of samples whose every answer token is the
model's argmax (`engine.sequence_scores`' `exact`: greedy decoding would give that answer), the no-TTT solve rate of
a single view at the cost of one forward pass.

The sources: the ARC-AGI-1 training tasks pretraining held out (unseen: what evaluation is like) and those it trained
on, RE-ARC, the clean ARC-AGI-2 training tasks, and a generated corpus (broken down by its programs' first step).
A source the model has learned reads low loss and high solve rate; one it has never seen, high and low. For a
source to help, its samples should be new to the model yet learnable: the held-out row says how far the model
generalizes today.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

from testtime.data.gen_corpus import program_names
from testtime.data.pretrain_data import answer_draws
from testtime.data.sources import GEN_PREFIX, REARC_PREFIX, TaskSource, load_sources, split_holdout

BATCH_TOKENS = 16384  # tokens per forward pass on the CPU (padded)
MIN_STEP_SAMPLES = 8  # a first step's row in the table needs this many samples


def interval(k: int, n: int) -> tuple[float, float]:
    """95% interval of a rate k/n (Wilson's: exact-match shares near 0 are the common case here)."""
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 0.0
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def score(model, seqs: list, codec) -> list[tuple[float, int, bool]]:
    """(summed answer loss, answer tokens, greedy decoding would give the answer) for each sequence, in order."""
    from testtime.stages.engine import sequence_scores

    scores = sequence_scores(model, seqs, codec.pad_id, token_budget=BATCH_TOKENS, stop_ids=codec.stop_ids)
    return [(-s.logprob, int(q.loss_mask.sum()), s.exact) for s, q in zip(scores, seqs, strict=True)]


def summarize(rows: list[tuple[float, int, bool]]) -> dict:
    loss, tokens = sum(r[0] for r in rows), sum(r[1] for r in rows)
    solved = sum(r[2] for r in rows)
    lo, hi = interval(solved, len(rows))
    return {"samples": len(rows), "loss": loss / max(1, tokens), "solved": solved,
            "solved_rate": solved / max(1, len(rows)), "solved_ci": [lo, hi],
            "answer_tokens": tokens / max(1, len(rows))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped base model)")
    ap.add_argument("--per-source", type=int, default=150)
    ap.add_argument("--rearc", default="../shared/data/re-arc/re_arc.npz.xz")
    ap.add_argument("--gen", default=None, help="a generated corpus (testtime generate) to measure too")
    ap.add_argument("--gen-samples", type=int, default=600, help="samples of the generated corpus (its rows by step)")
    ap.add_argument("--holdout", type=int, default=40, help="as the model was pretrained (v4: 40)")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="a markdown table")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from testtime.model.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    model, codec = loaded.model, loaded.codec
    names = ["arc1/train", REARC_PREFIX + args.rearc, "arc2/train-clean"]
    if args.gen:
        names.append(GEN_PREFIX + args.gen)
    train, held = split_holdout(load_sources(names), args.holdout)
    labels = ["arc1/train, held out", "arc1/train, trained on", "RE-ARC", "ARC-AGI-2 train (clean)", "generated"]
    if not held:  # a model pretrained with no hold-out has no unseen row
        labels = labels[1:]
    sources = [TaskSource(held), *train] if held else train

    report: dict[str, dict] = {}
    by_program: dict[str, list] = defaultdict(list)
    programs = program_names(args.gen) if args.gen else {}
    for label, src in zip(labels, sources, strict=False):
        t0 = time.perf_counter()
        n = args.gen_samples if label == "generated" else args.per_source
        if n == 0:
            continue
        drawn = answer_draws(src, n, args.max_len, codec, args.seed)
        rows = score(model, [s for s, _ in drawn], codec)
        report[label] = {**summarize(rows), "seconds": round(time.perf_counter() - t0, 1)}
        if label == "generated":
            for (_, task_id), row in zip(drawn, rows, strict=True):
                first = programs[task_id].split("|")[1].split(">")[0]
                by_program[re.sub(r"[0-9x]*$", "", first)].append(row)
        r = report[label]
        print(f"{label:28s} n={r['samples']:4d} loss {r['loss']:.3f}  solved {r['solved']:3d} "
              f"({100 * r['solved_rate']:.1f}%)  {r['seconds']:.0f} s", flush=True)
    per_program = {k: summarize(v) for k, v in sorted(by_program.items())}

    lines = [f"model: {loaded.path}; {args.per_source} samples a source (seed {args.seed}), answers only, "
             "one forward pass each (argmax everywhere = greedy decoding solves it).", "",
             "| source | samples | loss / answer token | solved without TTT | 95% interval | answer tokens |",
             "|---|---|---|---|---|---|"]
    for label, r in report.items():
        lo, hi = r["solved_ci"]
        lines.append(f"| {label} | {r['samples']} | {r['loss']:.3f} | {r['solved']} ({100 * r['solved_rate']:.1f}%) "
                     f"| {100 * lo:.1f}-{100 * hi:.1f}% | {r['answer_tokens']:.0f} |")
    if per_program:
        lines += ["", "Generated samples by their program's first step:", "",
                  "| first step | samples | loss / answer token | solved without TTT |", "|---|---|---|---|"]
        for k, r in sorted(per_program.items(), key=lambda kv: -kv[1]["loss"]):
            if r["samples"] < MIN_STEP_SAMPLES:
                continue
            lines.append(f"| {k} | {r['samples']} | {r['loss']:.3f} | {r['solved']} ({100 * r['solved_rate']:.0f}%) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"sources": report, "generated_by_first_step": per_program}, indent=1))


if __name__ == "__main__":
    main()
