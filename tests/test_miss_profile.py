"""benchmarks/miss_profile.py: how near a run's candidates came on the test inputs it missed (issue 24), on a run
folder written by hand whose answers are known cell by cell."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testtime.data.tasks import task_from_dict

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("miss_profile", ROOT / "benchmarks" / "miss_profile.py")
mp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mp)

TRUTH = [[1, 2, 3], [4, 5, 6]]


def off(cells: list[tuple[int, int]]) -> list[list[int]]:
    """TRUTH with these cells recoloured (to 0)."""
    g = np.array(TRUTH)
    for r, c in cells:
        g[r, c] = 0
    return g.tolist()


def write_run(folder: Path) -> Path:
    """Five tasks: a near miss whose views erred in different cells, one solved, one missed at the wrong shape, one
    whose right grid was kept but ranked below the attempts, and one of a run selecting by the vote (no ranked list)
    with two test inputs but candidates for the first only."""
    tasks = folder / "tasks"
    tasks.mkdir(parents=True)
    for tid in ("near", "solved", "shape", "kept", "voted"):
        tests = 2 if tid == "voted" else 1
        task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]], "output": TRUTH}] * tests}
        (tasks / f"{tid}.json").write_text(json.dumps(task))
        task_from_dict(task, tid)  # a valid task, as the loader will read it
    ranked = {
        "near": [{"grid": off([(0, 0)]), "votes": 2}, {"grid": off([(1, 1)]), "votes": 2},
                 {"grid": off([(0, 1), (1, 2)]), "votes": 1}],
        "solved": [{"grid": TRUTH, "votes": 4}],
        "shape": [{"grid": [[1, 2], [4, 5]], "votes": 3}, {"grid": [[1]], "votes": 1}],
        "kept": [{"grid": off([(0, 0)]), "votes": 3}, {"grid": off([(1, 1)]), "votes": 2}, {"grid": TRUTH, "votes": 1}],
    }
    run = folder / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"tasks": str(tasks)}))
    lines = [json.dumps({"task_id": tid, "correct": [tid == "solved"], "score": float(tid == "solved"),
                         "ranked": [r]}) for tid, r in ranked.items()]
    lines.append(json.dumps({"task_id": "voted", "correct": [False, False], "score": 0.0, "ranked": None,
                             "votes": [[{"grid": off([(0, 0), (0, 1)]), "votes": 2, "count": 2}]]}))
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_profile_of_each_kind_of_miss(tmp_path):
    near, solved, shape, kept, voted, no_candidates = rows = mp.profile_run(write_run(tmp_path))  # records' order
    assert near["shape_top"] and near["nearest"] == 1 and near["share"] == pytest.approx(0.4)
    assert near["vote_new"]  # each cell's majority is right, and no candidate was
    assert not shape["shape_top"] and not shape["shape_any"] and not shape["vote_new"]
    assert solved["share"] == 1.0 and solved["nearest"] == 0
    assert kept["nearest"] == 0 and kept["share"] == 0.5
    assert voted["nearest"] == 2 and voted["share"] == 1.0  # read from the votes
    assert no_candidates["n"] == 0 and no_candidates["share"] is None and not no_candidates["shape_any"]
    s = mp.summary(rows)
    assert (s["inputs"], s["solved"], s["missed"], s["ranked_not_picked"]) == (6, 1, 5, 1)
    assert (s["shape_top"], s["shape_any"], s["vote_new"]) == (3, 3, 1)
    assert s["bands"] == [1, 1, 0, 0, 0]  # the kept right grid is in no band: it is 0 cells off
    # shares: near 0.4; kept 0.5; shape 0.75; solved and voted 1.0; the input without candidates in none
    assert s["by_share"] == ["-", "0.00 (1)", "0.00 (1)", "0.33 (3)"]


def test_cell_vote_weighs_views_and_ignores_other_shapes():
    a, b = np.array([[1, 1]]), np.array([[2, 2]])
    assert mp.cell_vote([(a, 1), (b, 3), (np.array([[5]]), 9)]).tolist() == [[2, 2]]


def test_cli_tables_and_picture(tmp_path):
    run = write_run(tmp_path)
    md, png = tmp_path / "m.md", tmp_path / "m.png"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "miss_profile.py"), str(run), "--md", str(md),
                           "--png", str(png)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert "| run | 6 | 1 | 5 | 1 | 3 | 3 | 1 | 1 | 0 | 0 | 0 | 1 |" in md.read_text()
    assert png.stat().st_size > 0
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "miss_profile.py"), str(tmp_path / "absent")],
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
