"""Two base models on the 40 held-out ARC-AGI-1 training tasks, paired: each task's share of test inputs that
greedy decoding answers exactly with no TTT, under the identity view (pretraining's `val_solved`, task by task).
Cheap enough for the CPU (about 2 minutes a model on 2 cores), so a pretraining stretch that came back from the
GPU without its 400-task evaluation can be read against the shipped model at once.

    python benchmarks/heldout_compare.py models/testtime-grid-base models-local/campaign/X/model --names v4 X \
        --device cpu --out results/FILE.md --json per-task.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testtime.core.config import ConfigError
from testtime.data.tasks import HOLDOUT_DATASET, load_tasks
from testtime.model.loading import load_model
from testtime.model.model_folder import ModelError
from testtime.recipes.pretrain_step import held_out_shares
from testtime.report.compare import sign_test


def shares(path: str, device: str, tasks, max_len: int) -> dict[str, float]:
    loaded = load_model(path, device=device)
    out: dict[str, float] = {}
    start = time.perf_counter()
    for i, task in enumerate(tasks, 1):  # one task at a time: a batch of the 40 pads every prompt to the longest
        out[task.id] = held_out_shares(loaded.model, [task], loaded.codec, max_len)[0]
        print(f"\r{path}: {i}/{len(tasks)} tasks, {sum(out.values()):g} solved, "
              f"{time.perf_counter() - start:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def main() -> None:
    from provenance import header, publish

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs=2, help="model folders: the reference, then the one compared with it")
    ap.add_argument("--names", nargs=2, default=None, help="their names in the table (default: the folders)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--out", type=Path, help="append the table to this markdown file")
    ap.add_argument("--json", type=Path, help="each task's share under each model")
    a = ap.parse_args()
    names = a.names or a.models
    tasks = sorted(load_tasks(HOLDOUT_DATASET), key=lambda t: t.id)
    try:
        got = [shares(m, a.device, tasks, a.max_len) for m in a.models]
    except (ModelError, ConfigError) as e:
        sys.exit(f"error: {e}")
    ref, new = got
    won = sorted(t for t in ref if new[t] > ref[t])
    lost = sorted(t for t in ref if new[t] < ref[t])
    lines = header(f"{names[1]} against {names[0]} on the {len(tasks)} held-out ARC-AGI-1 training tasks, "
                   "no TTT, one greedy view", a.device) + [""]
    lines += ["| model | solved | won | lost | p (sign test) |", "|---|---|---|---|---|",
              f"| {names[0]} | {sum(ref.values()):g} / {len(tasks)} | | | |",
              f"| {names[1]} | {sum(new.values()):g} / {len(tasks)} | {len(won)} | {len(lost)} | "
              f"{sign_test(len(won), len(lost)):.3g} |", "",
              f"Won: {', '.join(won) or 'none'}. Lost: {', '.join(lost) or 'none'}."]
    publish(lines, a.out)
    if a.json:
        a.json.write_text(json.dumps({n: g for n, g in zip(names, got, strict=True)}, indent=1))


if __name__ == "__main__":
    main()
