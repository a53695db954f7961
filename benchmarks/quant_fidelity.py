"""Whether a checkpoint stored as 8-bit integers answers as the bf16 one does: the question behind shipping two
checkpoints in the room of one (the device carries the tree, 64 MiB, and the shipped model is 51 MB in bf16; two
campaign checkpoints combined solve 225 of the 400 against one's 210.5, results/h100-campaign-2026-12-07d.md).

Every 2-D weight (the linear layers, the embeddings) is rounded to int8 with one scale per output row (symmetric,
absmax) and read back; norms and biases stay as they are. Both models then score, under teacher forcing and without
TTT, the right answer of each test input of TASKS with the task's demonstrations in context (the identity view):
its log-probability per answer token, and whether greedy decoding would give it (`engine.sequence_scores`'
`exact`). Nothing is trained: the answers are read only to score them, as evaluation does.

    PYTHONPATH=src python benchmarks/quant_fidelity.py [--model DIR] [--tasks arc1/eval] [--limit 60] [--md OUT.md]
        [--save DIR] [--device cuda]

`--save DIR` also writes the model as an int8 folder (`testtime quantize`, `testtime.model.int8`), which every command
reads back to the same weights as the round trip scored here, for `testtime evaluate --model DIR`: what TTT makes of
the rounded weights (`bash scripts/gpu_levers.sh int8-model int8`).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from provenance import publish

from testtime.data.encode import TooLongError, encode_example
from testtime.data.tasks import load_tasks
from testtime.model.int8 import dequantize_tensor, is_int8, quantize_model, quantize_tensor
from testtime.model.loading import load_model
from testtime.stages.engine import sequence_scores


def int8_roundtrip(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of `model` whose 2-D weights went through int8 (a scale per row) and back, and their bytes so stored
    (int8 values plus a float32 scale a row, as `testtime quantize` writes them; the rest at 2 bytes)."""
    out = copy.deepcopy(model)
    stored = 0
    with torch.no_grad():
        for p in out.parameters():
            if p.ndim == 2:
                p.copy_(dequantize_tensor(*quantize_tensor(p), p.dtype))
                stored += p.numel() + 4 * p.shape[0]
            else:
                stored += 2 * p.numel()
    return out, stored


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a model folder; default: the shipped one")
    ap.add_argument("--tasks", default="arc1/eval")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="also write the read-back model here (a model folder)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        loaded = load_model(args.model, device=args.device)
        tasks = load_tasks(args.tasks)[: args.limit]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    codec = loaded.codec
    seqs = []
    for t in tasks:
        for ex in t.test:
            if ex.output is None:
                continue
            try:
                seqs.append(encode_example(codec, t.train, ex, loss_on_demos=False))
            except TooLongError:
                continue
    answer_tokens = np.array([int(np.asarray(s.loss_mask).sum()) for s in seqs])
    quant, stored = int8_roundtrip(loaded.model)
    if args.save:
        try:
            if (args.save / "config.json").is_file() and is_int8(args.save):
                shutil.rmtree(args.save)  # this benchmark's own earlier folder (a rerun of the runner's step)
            quantize_model(loaded.path, args.save)
        except ValueError as e:  # ModelError: one line naming the folder
            print(f"error: {e}", file=sys.stderr)
            return 1
    if not seqs:
        print(f"no test input with a known answer among the first {len(tasks)} tasks of {args.tasks}: nothing scored")
        return 0
    rows = {}
    for name, model in (("bf16 (as shipped)", loaded.model), ("int8 a row, read back", quant)):
        with torch.no_grad():
            got = sequence_scores(model, seqs, codec.pad_id)
        rows[name] = (np.array([s.logprob for s in got]), np.array([s.exact for s in got]))
    (lp_a, ex_a), (lp_b, ex_b) = rows.values()
    n_params = sum(p.numel() for p in loaded.model.parameters())
    lines = [f"{len(seqs)} test inputs of the first {len(tasks)} tasks of {args.tasks}, {int(answer_tokens.sum())} "
             f"answer tokens; {time.perf_counter() - t0:.0f} s on {args.device}"
             + (f" ({torch.get_num_threads()} threads)" if args.device == "cpu" else ""), "",
             "| weights | stored MB | log p a token (mean) | greedy would answer right |", "|---|---|---|---|"]
    for (name, (lp, ex)), mb in zip(rows.items(), (2 * n_params / 1e6, stored / 1e6), strict=True):
        lines.append(f"| {name} | {mb:.1f} | {lp.sum() / answer_tokens.sum():.5f} | {int(ex.sum())} |")
    lines += ["", f"greedy verdicts that differ: {int((ex_a != ex_b).sum())} of {len(seqs)}; largest change of an "
              f"answer's log p: {np.abs(lp_a - lp_b).max():.4f} nats"]
    publish(lines, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
