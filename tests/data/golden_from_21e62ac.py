"""Write tests/data/golden.json with the code of commit 21e62ac (before the run-layer redesign), not the code under
test (see tests/test_golden.py). Run it in an export of that commit, with today's model:

    git archive 21e62ac | tar -x -C /tmp/golden-src
    cd /tmp/golden-src && PYTHONPATH=src TESTTIME_MODEL=$REPO/models/testtime-grid-base \\
        python $REPO/tests/data/golden_from_21e62ac.py $REPO/tests/data/golden.json

It speaks that commit's API (testtime.tasks, testtime.cli) and flags: its `extended` policy trained 1.5x the
configured steps, so the default run names 4 epochs (24 steps, as today's 6 epochs of the same 8 samples).

Two deliberate changes since that commit are applied here, not left out, each by wrapping the old function:
- from 8831c63 (model v4's pretraining, packed rows) a `<bos>` token sits at grid position 0 itself, not only resets
  there (`_bos_at_origin`);
- from 2026-12-04 each task draws its demo orders from its own stream, seeded by the run's seed and its id
  (`testtime.stages.predict.task_seed`), not from one stream shared by the tasks of a call (`_orders_per_task`: the
  old function on each task alone, with that seed). Only runs with more than one demo order see it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import zlib
from pathlib import Path

from typer.testing import CliRunner

from testtime import encode as encode_mod  # 21e62ac's modules
from testtime import grid_model as grid_model_mod
from testtime import predict as predict_mod
from testtime import tasks as tasks_mod  # (today's testtime.data.tasks)
from testtime.cli import app


def _bos_at_origin(fn):
    def grid_positions(ids):
        import torch

        pos = fn(ids)
        return torch.where(ids == encode_mod.BOS, torch.zeros_like(pos), pos)

    return grid_positions


encode_mod.grid_positions = grid_model_mod.grid_positions = _bos_at_origin(encode_mod.grid_positions)


def _orders_per_task(fn):
    def make_queries(tasks, codec, cfg):
        queries, problems = [], []
        for ti, task in enumerate(tasks):
            seed = cfg.seed * (1 << 32) + zlib.crc32(task.id.encode())  # as today's task_seed
            got, bad = fn([task], codec, dataclasses.replace(cfg, seed=seed))
            queries += [dataclasses.replace(q, task=ti) for q in got]
            problems += bad
        return queries, problems

    return make_queries


predict_mod.make_queries = _orders_per_task(predict_mod.make_queries)

TASKS = ("66e6c45b", "00576224")
RUNS = {
    "icl": ["--no-ttt", "--views", "4"],
    "always": ["--policy", "always", "--samples", "4", "--epochs", "1", "--views", "2"],
    "default": ["--samples", "8", "--views", "2", "--epochs", "4"],
    "adaptive": ["--policy", "adaptive", "--samples", "4", "--epochs", "1", "--views", "2"],
}


def run(name: str, tmp: Path) -> dict[str, dict]:
    folder = tmp / "tasks"
    if not folder.exists():
        by_id = {t.id: t for t in tasks_mod.load_tasks("arc1/eval")}
        for tid in TASKS:
            tasks_mod.save_task(by_id[tid], folder / f"{tid}.json")
    out = tmp / name
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(folder), "--device", "cpu", "--out", str(out), *RUNS[name]])
    assert res.exit_code == 0, res.output
    got = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        pol = r.get("policy") or {}
        got[r["task_id"]] = {"attempts": r["attempts"], "decision": pol.get("decision"), "ttt_steps": pol.get("ttt_steps")}
    return got


if __name__ == "__main__":
    target = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as d:
        target.write_text(json.dumps({name: run(name, Path(d)) for name in RUNS}, indent=1) + "\n")
    print(f"wrote {target}", file=sys.stderr)
