"""A stream of queries that looks like use: tasks the model knows and tasks it has never seen, mixed in a fixed order.

Familiar: ARC-AGI-1 *training* tasks the shipped model was pretrained on. Pretraining (configs/pretrain-grid*.json,
`holdout: 40`) keeps 40 of them out, the first 40 by a hash of their id (`sources.split_holdout`, the same for every
seed and every model v1-v4); those are not familiar and never enter the stream, the other 360 are its pool. Novel:
the 400 ARC-AGI-1 evaluation tasks. A seeded draw takes `--familiar` and `--novel` of them (1:1 by default) and a
seeded permutation orders them.

    python benchmarks/mixed_stream.py --out runs/stream [--familiar 200] [--novel 200] [--seed 0]

writes into OUT:

- `stream-challenges.json` and `stream-solutions.json`: the stream, in its order (a challenges file keeps its order;
  the solutions file beside it gives the test outputs that score it);
- `stream-labels.json`: task id -> "familiar" or "novel", for `testtime evaluate --labels`: every record keeps its
  task's label, for analysis, and the run never hands it to the policy;
- `familiar-challenges.json` and `familiar-solutions.json`: the familiar tasks alone. A fixed schedule treats every
  task alike, so its point on the stream's frontier is its run on these joined with its run on the evaluation tasks
  (`policy_curve.py NAME=RUN_A+RUN_B --stream stream-labels.json`): the novel half costs no second run;
- `stream.json`: the manifest (seed, counts, the order, the held-out training tasks left out).

    testtime evaluate --tasks runs/stream/stream-challenges.json --labels runs/stream/stream-labels.json --policy settle
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from testtime.core.config import read_json
from testtime.data.sources import TaskSource, split_holdout
from testtime.data.tasks import Task, load_tasks, task_to_dict

FAMILIAR, NOVEL = "familiar", "novel"
PRETRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain-grid-v4.json"


def familiar_pool(train: Sequence[Task], holdout: int) -> tuple[list[Task], list[str]]:
    """The training tasks pretraining trained on (those `split_holdout` keeps in), and the ids of those it held out."""
    _, held = split_holdout([TaskSource(train)], holdout)
    out = {t.id for t in held}
    return [t for t in train if t.id not in out], sorted(out)


def build_stream(familiar: Sequence[Task], novel: Sequence[Task], n_familiar: int, n_novel: int,
                 seed: int) -> list[tuple[Task, str]]:
    """`n_familiar` and `n_novel` tasks drawn from the pools, in a seeded order, each with its label."""
    if n_familiar > len(familiar) or n_novel > len(novel):
        raise SystemExit(f"error: the pools hold {len(familiar)} familiar and {len(novel)} novel tasks")
    rng = np.random.default_rng(seed)
    picked = [(familiar[i], FAMILIAR) for i in sorted(rng.choice(len(familiar), n_familiar, replace=False))]
    picked += [(novel[i], NOVEL) for i in sorted(rng.choice(len(novel), n_novel, replace=False))]
    return [picked[i] for i in rng.permutation(len(picked))]


def write_challenges(tasks: Sequence[Task], out: Path, name: str) -> None:
    """`NAME-challenges.json` (test inputs only) and `NAME-solutions.json` beside it, in the order given."""
    challenges, solutions = {}, {}
    for t in tasks:
        d = task_to_dict(t)
        solutions[t.id] = [e.pop("output") for e in d["test"]]
        challenges[t.id] = d
    (out / f"{name}-challenges.json").write_text(json.dumps(challenges))
    (out / f"{name}-solutions.json").write_text(json.dumps(solutions))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--familiar", type=int, default=200, help="familiar tasks (of 360)")
    ap.add_argument("--novel", type=int, default=200, help="novel tasks (of 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-config", type=Path, default=PRETRAIN_CONFIG,
                    help="the pretraining config whose `holdout` the shipped model was trained with")
    args = ap.parse_args()
    holdout = int(read_json(args.pretrain_config).get("holdout", 0))
    pool, held = familiar_pool(load_tasks("arc1/train"), holdout)
    stream = build_stream(pool, load_tasks("arc1/eval"), args.familiar, args.novel, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_challenges([t for t, _ in stream], args.out, "stream")
    write_challenges([t for t, label in stream if label == FAMILIAR], args.out, "familiar")
    (args.out / "stream-labels.json").write_text(json.dumps({t.id: label for t, label in stream}, indent=0))
    manifest = {"seed": args.seed, "familiar": args.familiar, "novel": args.novel, "holdout": holdout,
                "held_out": held, "order": [t.id for t, _ in stream]}
    (args.out / "stream.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {args.out}: {args.familiar} familiar (of {len(pool)}, {holdout} held out in pretraining) and "
          f"{args.novel} novel tasks, seed {args.seed}")


if __name__ == "__main__":
    main()
