"""The held-out training tasks: how many greedy decoding solves without TTT, logged as pretraining goes
(`solve_every`, `val_solved`) and plotted against tokens, and the same 40 tasks by name for an evaluation with TTT
(`arc1/train-holdout`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import testtime.stages.predict as predict_mod
from testtime.core.config import ConfigError
from testtime.data.encode import GridCodec
from testtime.data.sources import TaskSource, load_sources, split_holdout
from testtime.data.tasks import HOLDOUT_DATASET, Example, Task, load_task_set, load_tasks
from testtime.model.loading import ModelConfig
from testtime.recipes.pretrain import PretrainConfig, pretrain, read_log
from testtime.recipes.pretrain_step import held_out_shares, held_out_solved
from testtime.report.pretrain_log import plot_solved
from testtime.stages.engine import Generated

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str):
    """benchmarks/NAME.py as a module (a script, not a package member)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mirror_oracle(model, prompts, max_new, codec, **kw):
    """A stand-in for greedy decoding that answers every query with its mirror image."""
    out = []
    for p in prompts:
        ids = list(p)
        start = len(ids) - 1 - ids[::-1].index(11)  # the last <input>
        grid = GridCodec().decode_grid(ids[start + 1: -1] + [13]).grid
        out.append(Generated(GridCodec().answer_piece(np.ascontiguousarray(grid[:, ::-1])).tolist(), 0.0))
    return out


def test_the_solve_count_takes_each_test_input_greedy_answer(monkeypatch, tiny_grid_model, flip_task):
    """Mirror tasks are solved, a transpose task is not, and a task with one of two test inputs right counts half."""
    rng = np.random.default_rng(0)
    g = rng.integers(0, 10, (3, 4)).astype(np.uint8)
    transpose = Task("tr", tuple(Example(x, np.ascontiguousarray(x.T)) for x in (g, g[::-1])),
                     (Example(g[:, 1:], np.ascontiguousarray(g[:, 1:].T)),))
    half = flip_task(5, "half", tests=2)
    half = Task("half", half.train, (half.test[0], Example(half.test[1].input, half.test[1].input)))
    monkeypatch.setattr(predict_mod, "greedy_generate", _mirror_oracle)
    model = tiny_grid_model().train()
    tasks = [flip_task(1, "a"), flip_task(2, "b", tests=2), transpose, half]
    assert held_out_shares(model, tasks, GridCodec(), 1024) == [1.0, 1.0, 0.0, 0.5]
    assert held_out_solved(model, tasks, GridCodec(), 1024) == 2.5
    assert model.training  # back to training mode


def test_pretraining_logs_the_held_out_solve_rate_and_the_comparison_reads_it(tmp_path, flip_task):
    tasks = [flip_task(i, f"t{i}", (2 + i % 3, 3)) for i in range(8)]
    cfg = PretrainConfig(model=ModelConfig.tiny(), max_len=512, token_budget=2048, pool_size=24, pad_multiple=64,
                         lr=3e-3, warmup_steps=1, total_steps=5, log_every=1, device="cpu", holdout=2, val_every=2,
                         solve_every=2, checkpoint_minutes=100)
    run = tmp_path / "runs" / "pretrain-arch-a"
    pretrain(cfg, run, progress=False, sources=[TaskSource(tasks)])
    log = read_log(run)
    solved = [r for r in log if "val_solved" in r]
    assert [r["step"] for r in solved] == [2, 4, 5]  # every solve_every steps, and the last
    assert all(0 <= r["val_solved"] <= 2 and r["val_tasks"] == 2 for r in solved)
    out = plot_solved({"a": log, "b": log}, tmp_path / "solved.png", ttt={"a": (log[-1]["tokens"], 1.0)})
    assert out.stat().st_size > 1000 and (run / "loss.png").exists()
    # Runs without solve counts (a CPU proxy of equal steps): one panel, the held-out loss against tokens.
    import matplotlib.image

    bare = [{k: v for k, v in r.items() if k not in ("val_solved", "val_tasks")} for r in log]
    one = plot_solved({"a": bare}, tmp_path / "loss-only.png", x="tokens")
    both = matplotlib.image.imread(out)
    assert matplotlib.image.imread(one).shape[1] < both.shape[1] * 0.6
    # benchmarks/arch_compare.py: a candidate's row from its pretraining run and its evaluation's summary.
    (tmp_path / "runs" / "holdout-a").mkdir()
    (tmp_path / "runs" / "holdout-a" / "summary.json").write_text('{"score": 7.5, "n_scored": 40, "mean_seconds": 1.5}')
    arch = _bench("arch_compare")
    row = arch.candidate(tmp_path / "runs", "a")
    assert (row["steps"], row["solved_no_ttt"], row["held"], row["ttt_score"]) == (5, solved[-1]["val_solved"], 2, 7.5)
    assert row["flop_params_m"] == row["params_m"] and "| a | " in arch.table([row]) and "7.5 / 40" in arch.table([row])
    first, last = row["probe_loss"]["arc1/train"]  # the source's answer loss at the first and last validation
    assert f"| a | {first:.4f} -> {last:.4f} |" in arch.probe_table([row]) and arch.probe_table([{"name": "b"}]) == ""
    with pytest.raises(ConfigError, match="solve_every"):
        PretrainConfig(model=ModelConfig.tiny(), max_len=512, token_budget=2048, log_every=4, solve_every=6)


def test_the_held_out_dataset_is_what_pretraining_holds_out():
    kept, held = split_holdout(load_sources(["arc1/train"]), 40)
    named = load_tasks(HOLDOUT_DATASET)
    assert [t.id for t in named] == [t.id for t in held] and len(named) == 40
    assert not {t.id for t in named} & set(kept[0].task_ids())
    assert [t.id for t in load_task_set(HOLDOUT_DATASET)[0]] == [t.id for t in named]


def test_the_probe_table_reads_a_source_missing_from_some_validations(tmp_path):
    """A source's first and last probe are its own first and last (a run resumed with a source more or less logs
    it at some validations only): the table neither breaks on a source the last validation lacks nor drops one the
    first lacks."""
    import json

    arch = _bench("arch_compare")
    run = tmp_path / "pretrain-arch-a"
    run.mkdir()
    base = {"loss": 1.0, "tokens": 100, "tokens_per_s": 10, "elapsed": 60}
    probes = [{"arc1/train": 0.5, "re-arc": 0.4}, {"arc1/train": 0.3, "re-arc": 0.2, "gen": 0.9}, {"arc1/train": 0.1}]
    run.joinpath("log.jsonl").write_text("".join(json.dumps({**base, "step": 10 * i, "probe_loss": p}) + "\n"
                                                 for i, p in enumerate(probes, 1)))
    row = arch.candidate(tmp_path, "a")
    assert row["probe_loss"] == {"arc1/train": (0.5, 0.1), "re-arc": (0.4, 0.2), "gen": (0.9, 0.9)}
    assert "| a | 0.5000 -> 0.1000 | 0.4000 -> 0.2000 | 0.9000 -> 0.9000 |" in arch.probe_table([row])


def test_the_held_out_comparison_pairs_the_two_models_task_by_task(tmp_path, monkeypatch, capsys):
    """benchmarks/heldout_compare.py: the table counts the tasks each model does better on, by task id."""
    import sys

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    bench = _bench("heldout_compare")
    per = {"ref": {"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.0}, "new": {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}}
    monkeypatch.setattr(bench, "load_tasks", lambda spec: [Task(t, (), ()) for t in "dcba"])
    monkeypatch.setattr(bench, "shares", lambda path, device, tasks, max_len, work=None: per[path])
    out = tmp_path / "t.md"
    monkeypatch.setattr(sys, "argv", ["heldout_compare.py", "ref", "new", "--out", str(out), "--json",
                                      str(tmp_path / "t.json")])
    bench.main()
    table = out.read_text()
    assert "| ref | 1.5 / 4 |" in table and "| new | 3 / 4 | 2 | 0 | 0.5 |" in table
    assert "Won: b, c. Lost: none." in table


def test_the_comparison_keeps_each_task_as_it_finishes_and_resumes(tmp_path, monkeypatch):
    """A cut run of heldout_compare.py: the tasks already in the work file are not decoded again."""
    bench = _bench("heldout_compare")
    decoded = []

    def fake_shares(model, tasks, codec, max_len):
        decoded.append(tasks[0].id)
        if tasks[0].id == "c" and decoded.count("c") == 1:
            raise KeyboardInterrupt  # the run is cut at its third task
        return [{"a": 1.0, "b": 0.5, "c": 0.0, "d": 1.0, "e": 1.0}[tasks[0].id]]

    loads = []
    monkeypatch.setattr(bench, "load_model",
                        lambda path, device: loads.append(path) or type("L", (), {"model": None, "codec": None}))
    monkeypatch.setattr(bench, "held_out_shares", fake_shares)
    tasks = [Task(t, (), ()) for t in "abcd"]
    work = tmp_path / "m.jsonl"
    with pytest.raises(KeyboardInterrupt):
        bench.shares("m", "cpu", tasks, 64, work)
    assert len(work.read_text().splitlines()) == 2
    assert bench.shares("m", "cpu", tasks, 64, work) == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 1.0}
    assert decoded == ["a", "b", "c", "c", "d"]
    assert bench.shares("m", "cpu", tasks, 64, work) == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 1.0}
    assert len(decoded) == 5 and len(loads) == 2  # all kept: nothing decoded, no model loaded
    with work.open("a") as f:
        f.write('{"model": "m", "task": "e", "sh')  # a last line cut off mid-write is decoded again
    assert bench.shares("m", "cpu", [*tasks, Task("e", (), ())], 64, work)["e"] == 1.0
    assert decoded[-1] == "e" and len(decoded) == 6
    with pytest.raises(SystemExit, match="holds results of m, not other"):
        bench.shares("other", "cpu", tasks, 64, work)  # another model's file under the same name


def test_the_comparison_names_its_work_files_by_model(tmp_path, monkeypatch):
    """Through main: names with a slash make files of their own, two equal names are refused."""
    import sys

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    bench = _bench("heldout_compare")
    monkeypatch.setattr(bench, "load_tasks", lambda spec: [Task("a", (), ())])
    monkeypatch.setattr(bench, "load_model", lambda path, device: type("L", (), {"model": None, "codec": None}))
    monkeypatch.setattr(bench, "held_out_shares", lambda model, tasks, codec, max_len: [1.0])
    work = tmp_path / "work"
    monkeypatch.setattr(sys, "argv", ["heldout_compare.py", "x/m1", "y/m2", "--work", str(work), "--json",
                                      str(tmp_path / "t.json")])
    bench.main()
    assert sorted(p.name for p in work.iterdir()) == ["x_m1.jsonl", "y_m2.jsonl"]
    import json

    assert json.loads((tmp_path / "t.json").read_text()) == {"x/m1": {"a": 1.0}, "y/m2": {"a": 1.0}}
    monkeypatch.setattr(sys, "argv", ["heldout_compare.py", "p", "q", "--names", "v4", "v4"])
    with pytest.raises(SystemExit, match="different names"):
        bench.main()


def test_stretch_losses_chain_the_stretches_logs_and_name_a_bad_one(tmp_path, monkeypatch):
    """benchmarks/stretch_losses.py (the model card's loss.png): each stretch's steps and tokens continue the last
    one's (from --start-tokens), other fields pass through, a run folder stands for its log; a missing or empty log,
    or a record without tokens, is refused naming the path."""
    bench = _bench("stretch_losses")
    logs = []
    for i, n in enumerate((3, 2)):
        (tmp_path / f"s{i}").mkdir()
        recs = [{"step": 10 * (k + 1), "loss": 0.1, "tokens": 1000 * (k + 1), "tokens_per_s": 5.0,
                 "val_solved": i + k, "val_tasks": 40} for k in range(n)]
        (tmp_path / f"s{i}" / "log.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in recs))
        logs.append(tmp_path / f"s{i}" / "log.jsonl")
    monkeypatch.setattr(sys, "argv", ["stretch_losses.py", *map(str, logs), "--out", str(tmp_path / "loss.png")])
    bench.main()
    assert (tmp_path / "loss.png").stat().st_size > 0
    recs = bench.chain([logs[0], logs[1].parent], start_tokens=500)
    assert [(r["step"], r["tokens"]) for r in recs] == [(10, 1500), (20, 2500), (30, 3500), (40, 4500), (50, 5500)]
    assert [r["val_solved"] for r in recs] == [0, 1, 2, 1, 2]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "log.jsonl").write_text("")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.1}) + "\n")
    for bad, says in [(tmp_path / "none" / "log.jsonl", "no log.jsonl there"), (tmp_path / "empty", "no records"),
                      (tmp_path / "bare" / "log.jsonl", "record 1 has no step or tokens")]:
        with pytest.raises(SystemExit, match=f"{bad}: {says}"):
            bench.chain([logs[0], bad])
