"""Two base models on the 40 held-out ARC-AGI-1 training tasks, paired: each task's share of test inputs that
greedy decoding answers exactly with no TTT, under the identity view (pretraining's `val_solved`, task by task).
Cheap enough for the CPU (about 2 minutes a model on 2 cores), so a pretraining stretch that came back from the
GPU without its 400-task evaluation can be read against the shipped model at once. `--tasks arc1/eval` does the
same on the evaluation tasks (their test outputs only score; about 25 minutes a model on 2 cores), with `--work
DIR` keeping each task's result as it finishes (DIR/NAME.jsonl), so a cut run resumes where it stopped.

    python benchmarks/heldout_compare.py models/testtime-grid-base models-local/campaign/X/model --names v10 X \
        --device cpu --out results/FILE.md --json per-task.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testtime.core import jsonio
from testtime.core.config import ConfigError
from testtime.core.store import append_records
from testtime.data.tasks import HOLDOUT_DATASET, load_tasks
from testtime.model.loading import load_model
from testtime.model.model_folder import ModelError
from testtime.recipes.pretrain_step import held_out_shares
from testtime.report.compare import sign_test


def shares(path: str, device: str, tasks, max_len: int, work: Path | None = None) -> dict[str, float]:
    """Each task's share under the model at `path`; with `work`, read from and appended to that JSONL file."""
    out: dict[str, float] = {}
    if work is not None and work.exists():
        # a last line cut off mid-write is dropped (that task is decoded again), as for evaluate's results
        for _, r in jsonio.read_json_lines(work, "held-out results", ConfigError, complete_only=True):
            if r.get("model") != path:
                sys.exit(f"error: {work}: holds results of {r.get('model')}, not {path} (another --names or --work)")
            out[r["task"]] = r["share"]
    todo = [t for t in tasks if t.id not in out]
    if (Path(path) / "STAND_IN").exists():  # scripts/campaign_from.sh put a stretch where the shipped model lives
        print(f"warning: {path} holds a stand-in: {(Path(path) / 'STAND_IN').read_text().strip()}", file=sys.stderr)
    if todo:
        loaded = load_model(path, device=device)
    start = time.perf_counter()
    for i, task in enumerate(todo, 1):  # one task at a time: a batch of the 40 pads every prompt to the longest
        out[task.id] = held_out_shares(loaded.model, [task], loaded.codec, max_len)[0]
        if work is not None:
            append_records(work, [{"model": path, "task": task.id, "share": out[task.id]}])
        left = (time.perf_counter() - start) / i * (len(todo) - i)
        print(f"\r{path}: {len(tasks) - len(todo) + i}/{len(tasks)} tasks, {sum(out.values()):g} solved, "
              f"about {left / 60:.0f} min left  ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {t.id: out[t.id] for t in tasks}


def main() -> None:
    from provenance import header, publish

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs=2, help="model folders: the reference, then the one compared with it")
    ap.add_argument("--names", nargs=2, default=None, help="their names in the table (default: the folders)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", default=HOLDOUT_DATASET, help="a task set (default: the held-out training tasks)")
    ap.add_argument("--work", type=Path, help="keep each task's result here as it finishes, and resume from it")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--out", type=Path, help="append the table to this markdown file")
    ap.add_argument("--json", type=Path, help="each task's share under each model")
    a = ap.parse_args()
    names = a.names or a.models
    files = [n.replace("/", "_") + ".jsonl" for n in names]  # each model's work file under --work
    if len(set(files)) < 2:
        sys.exit(f"error: --names {' '.join(names)}: the two models need different names")
    tasks = sorted(load_tasks(a.tasks), key=lambda t: t.id)
    if a.work:
        a.work.mkdir(parents=True, exist_ok=True)
    try:
        got = [shares(m, a.device, tasks, a.max_len, a.work / f if a.work else None)
               for m, f in zip(a.models, files, strict=True)]
    except (ModelError, ConfigError) as e:
        sys.exit(f"error: {e}")
    ref, new = got
    won = sorted(t for t in ref if new[t] > ref[t])
    lost = sorted(t for t in ref if new[t] < ref[t])
    what = "held-out ARC-AGI-1 training tasks" if a.tasks == HOLDOUT_DATASET else f"tasks of {a.tasks}"
    lines = header(f"{names[1]} against {names[0]} on the {len(tasks)} {what}, no TTT, one greedy view",
                   a.device) + [""]
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
