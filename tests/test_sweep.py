"""The TTT sweep (`benchmarks/sweep_ttt.py`) and issue 24's table (`benchmarks/levers_table.py`) on a tiny model and
two tasks: every setting a run folder, each paired with the default's, resumed when run again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from testtime.data.tasks import save_task
from testtime.model.loading import ModelConfig, build_model, save_model

BENCH = Path(__file__).parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_run(tmp_path, synthetic_tasks, flip_task):
    save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    for t in [flip_task(0, "a2", tests=2), *synthetic_tasks(3)]:  # --limit 2: "a2" (two test inputs) and "t0"
        save_task(t, tmp_path / "tasks" / f"{t.id}.json")
    return tmp_path, ["--tasks", str(tmp_path / "tasks"), "--model", str(tmp_path / "model"), "--device", "cpu",
                      "--limit", "2", "--base", "samples=2", "--base", "epochs=1", "--base", "views=1"]


def test_the_sweep_runs_each_setting_against_the_default(tiny_run, capsys):
    tmp, args = tiny_run
    sweep = _script("sweep_ttt")
    out = tmp / "sweep"
    rows = sweep.main([*args, "--out", str(out), "--axes", "lr,rank,targets"])
    names = ["default", "lr-0.00025", "lr-0.001", "lr-0.002", "rank-8", "rank-16", "rank-64", "rank-128",
             "targets-attention", "targets-mlp", "targets-qv-mlp"]
    assert [r["run"] for r in rows] == names
    assert all(r["tasks"] == 2 and r["paired"] == 2 and r["won"] + r["lost"] <= 2 for r in rows[1:])
    assert "won" not in rows[0] and rows[0]["recall"] is not None
    cfg = json.loads((out / "rank-8" / "config.json").read_text())["ttt_cfg"]
    assert (cfg["rank"], cfg["alpha"], cfg["samples"], cfg["epochs"]) == (8, 8.0, 2, 1)
    targets = json.loads((out / "targets-mlp" / "config.json").read_text())["ttt_cfg"]["targets"]
    assert targets == ["gate_proj", "up_proj", "down_proj"]
    table = (out / "sweep.md").read_text()
    assert table.count("\n| ") == len(names) + 1 and '"samples": 2' in table
    # Run again: every setting resumes its finished folder, nothing is trained anew.
    before = {n: (out / n / "results.jsonl").read_text() for n in names}
    sweep.main([*args, "--out", str(out), "--axes", "lr,rank,targets"])
    assert {n: (out / n / "results.jsonl").read_text() for n in names} == before
    with pytest.raises(SystemExit, match="unknown axis 'steps'"):
        sweep.main([*args, "--out", str(out), "--axes", "steps"])
    # Another sweep on a default run that exists: it is resumed (nothing runs), and its rows pair with it.
    again = sweep.main([*args, "--out", str(tmp), "--prefix", "b-", "--axes", "lr", "--default-run", str(out / "default")])
    assert not (tmp / "b-default").exists() and again[0]["run"] == "default" and again[1]["paired"] == 2


def test_the_levers_table_pairs_runs_and_notes_the_missing(tiny_run, capsys):
    tmp, args = tiny_run
    sweep = _script("sweep_ttt")
    sweep.main([*args, "--out", str(tmp), "--prefix", "sw-", "--axes", "full", "--base", "adapters=2"])
    assert (tmp / "sw-sweep.md").exists() and (tmp / "sw-full-lr-3e-05" / "results.jsonl").exists()
    levers = _script("levers_table")
    rows = levers.main([str(tmp / "sw-default"), str(tmp / "sw-full-lr-0.0001"), str(tmp / "nowhere"),
                        "--reference", str(tmp / "sw-default"), "--md", str(tmp / "t.md"), "--json", str(tmp / "t.json")])
    assert [r["run"] for r in rows] == ["sw-default", "sw-full-lr-0.0001"] and rows[0]["adapters"] == 2
    assert rows[1]["paired"] == 2 and rows[1]["reference_pass2"] == rows[0]["pass2"] and rows[1]["n_multi"] == 1
    assert all(isinstance(r["near"], int) for r in rows)  # the tiny tasks have solutions: near misses are counted
    printed = capsys.readouterr().out
    assert "nowhere: no results yet" in printed and "| sw-full-lr-0.0001 | 2 |" in printed
    assert json.loads((tmp / "t.json").read_text()) == rows


def test_a_full_weight_setting_trains_the_default_runs_adapters():
    """Full weights default to one adapter a task and LoRA to two; a sweep's full-weight runs take the default run's
    count (two, or what --base says), since each is paired with it."""
    same = _script("sweep_ttt").same_adapters
    assert same({}, {"adapter": "full", "lr": 1e-4}) == {"adapters": 2, "adapter": "full", "lr": 1e-4}
    assert same({"adapters": 1}, {"adapter": "full"}) == {"adapters": 1, "adapter": "full"}
    assert same({"epochs": 3}, {"lr": 1e-3}) == {"epochs": 3, "lr": 1e-3}  # LoRA: the plan's default
