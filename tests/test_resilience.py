"""A run goes on through GPU out-of-memory errors and bad task files; bad configs and checkpoints are one-line errors."""

import json

import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.store import read_records
from testtime.data.tasks import TaskError, load_task_set, save_tasks
from testtime.model.loading import ModelConfig, build_model, save_model
from testtime.recipes.grid import GridKind, config_from_dict, evaluate
from testtime.recipes.pretrain import ConfigError


def test_oom_splits_groups_then_shrinks_then_fails_one_task(tmp_path, tiny, monkeypatch, small_cfg, synthetic_tasks):
    tasks = synthetic_tasks(6)
    calls = []
    real = GridKind.run_group

    def fake(self, group, token_budget=None):
        calls.append(([t.id for t in group], token_budget))
        if len(group) > 1 or group[0].id == "t3":
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real(self, group, token_budget)

    monkeypatch.setattr(GridKind, "run_group", fake)
    model, codec = tiny
    recs = evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=tasks, show_progress=False)
    assert [r["task_id"] for r in recs] == [t.id for t in tasks]  # all recorded once, in task order
    failed = {r["task_id"]: r["error"] for r in recs if r["error"]}
    assert list(failed) == ["t3"] and "out of GPU memory" in failed["t3"]
    budgets = [b for ids, b in calls if ids == ["t3"]]
    assert budgets == [None, (1 << 20) // 4, (1 << 20) // 16]  # retried alone with smaller generation batches
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == failed and summary["complete"]


def test_bad_task_files_are_skipped_and_reported(tmp_path, synthetic_tasks):
    folder = tmp_path / "tasks"
    save_tasks(synthetic_tasks(3), folder)
    (folder / "broken.json").write_text('{"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []}')
    (folder / "notjson.json").write_text("{oops")
    tasks, problems = load_task_set(folder)
    assert [t.id for t in tasks] == ["t0", "t1", "t2"]
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any("broken.json" in p for p in problems) and any("notjson.json" in p for p in problems)
    with pytest.raises(TaskError, match="broken.json"):
        load_task_set(folder, strict=True)
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(folder), "--strict", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "broken.json" in res.stderr


def test_skipped_files_go_into_the_summary(tmp_path, tiny, small_cfg, synthetic_tasks):
    model, codec = tiny
    evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=synthetic_tasks(2), show_progress=False,
             skipped=["x.json: bad JSON"])
    assert json.loads((tmp_path / "summary.json").read_text())["skipped_files"] == ["x.json: bad JSON"]


@pytest.mark.parametrize("obj, message", [
    ({"max_grop": 3}, "config: unknown key 'max_grop'"),
    ({"limit": "10"}, 'config: limit must be an integer or null, got "10"'),
    ({"ttt": 1}, "config: ttt must be true/false, got 1"),
    ({"ttt_cfg": {"lr": "fast"}}, 'config: ttt_cfg: lr must be a number, got "fast"'),
    ({"ttt_cfg": {"targets": ["q_proj", 3]}}, "ttt_cfg: targets must be a list of a string or null"),
    ({"predict_cfg": {"viewz": 2}}, "config: predict_cfg: unknown key 'viewz'"),
    ({"predict_cfg": 3}, "config: predict_cfg: expected an object, got 3"),
])
def test_config_errors_name_the_key(obj, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(obj)
    assert message in str(e.value)


def test_config_types_are_kept():
    cfg = config_from_dict({"ttt_cfg": {"lr": 1, "targets": ["q_proj"]}, "limit": None})
    assert cfg.ttt_cfg.lr == 1.0 and isinstance(cfg.ttt_cfg.lr, float) and cfg.ttt_cfg.targets == ["q_proj"]


def test_cli_config_and_checkpoint_errors_are_one_line(tmp_path, synthetic_tasks):
    folder = tmp_path / "tasks"
    save_tasks(synthetic_tasks(1), folder)
    bad_cfg = tmp_path / "c.json"
    bad_cfg.write_text('{"ttt_cfg": {"epochs": 1.5}}')
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--tasks", str(folder), "--config", str(bad_cfg), "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and res.stderr == f"error: {bad_cfg}: ttt_cfg: epochs must be an integer or null, got 1.5\n"
    torch.manual_seed(0)
    model_dir = save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    res = runner.invoke(app, ["evaluate", "--tasks", str(folder), "--model", str(model_dir), "--device", "cpu",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "corrupt checkpoint" in res.stderr
    res = runner.invoke(app, ["evaluate", "--tasks", str(folder), "--model", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "no such model folder" in res.stderr


def test_pretrain_corrupt_checkpoint_is_one_line(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer.pt").write_bytes(b"not a checkpoint")
    (ckpt / "state.json").write_text('{"step": 3')
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                                         "max_position_embeddings": 2048}, "max_len": 2048, "token_budget": 16384,
                               "device": "cpu", "compile": False}))
    res = CliRunner().invoke(app, ["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "state.json: corrupt checkpoint" in res.stderr


def test_single_process_writes_merged_results(tmp_path, tiny, small_cfg, synthetic_tasks):
    model, codec = tiny
    tasks = synthetic_tasks(3)
    evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=tasks, show_progress=False)
    assert [r["task_id"] for r in read_records(tmp_path / "results.jsonl")] == ["t0", "t1", "t2"]
    assert not list(tmp_path.glob("results.rank*"))  # no torchrun: one file, as before


def test_cli_flags_reach_the_run_config(tmp_path, synthetic_tasks):
    folder = tmp_path / "tasks"
    save_tasks(synthetic_tasks(2), folder)
    torch.manual_seed(0)
    model_dir = save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(folder), "--model", str(model_dir), "--device", "cpu",
                                   "--no-ttt", "--views", "1", "--max-group", "1", "--no-cuda-graphs",
                                   "--token-budget", "4096", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["max_group"] == 1 and cfg["predict_cfg"]["cuda_graphs"] is False
    assert cfg["predict_cfg"]["views"] == 1 and cfg["predict_cfg"]["token_budget"] == 4096
    assert len(read_records(tmp_path / "r" / "results.jsonl")) == 2


def test_groups_are_small_on_a_cpu_so_results_land_often(synthetic_tasks):
    """A group's records are written when it ends: on a CPU, where batching buys little, groups stay small."""
    from testtime.recipes.grid import EvalConfig, plan_groups
    from testtime.recipes.runs import GROUP_SIZES, group_size

    assert (group_size(None, "cpu", "grid"), group_size(None, "cuda:0", "grid")) == GROUP_SIZES["grid"][::-1] == (8, 64)
    assert group_size(3, "cuda", "grid") == 3
    tasks = synthetic_tasks(20)
    groups = plan_groups(tasks, {t.id: 10 for t in tasks}, EvalConfig().ttt_cfg, group_size(None, "cpu", "grid"))
    assert [len(g) for g in groups] == [8, 8, 4]


def test_config_file_values_are_not_overwritten_by_flag_defaults(tmp_path, synthetic_tasks):
    """`--config` first, then only the flags given (issue 14: flag defaults used to overwrite the file)."""
    folder = tmp_path / "tasks"
    save_tasks(synthetic_tasks(1), folder)
    torch.manual_seed(0)
    model_dir = save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"ttt": False, "predict_cfg": {"views": 1, "orders": 2, "max_len": 320}}))
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(folder), "--model", str(model_dir), "--device", "cpu",
                                   "--config", str(cfg_file), "--orders", "1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["ttt"] is False and cfg["predict_cfg"]["views"] == 1  # from the file
    assert cfg["predict_cfg"]["orders"] == 1  # the flag given wins


def test_no_flag_default_overwrites_any_config_key(tmp_path, synthetic_tasks, monkeypatch):
    """Issue 17: every key a flag can set, set in --config and no flag given, reaches the run as the file says
    (grid and text evaluate, pretrain)."""
    import testtime.recipes.grid
    import testtime.recipes.pretrain
    import testtime.text.run
    from testtime.recipes.pretrain import PretrainConfig
    from testtime.text.run import text_config_from_dict

    seen = {}
    monkeypatch.setattr(testtime.recipes.grid, "evaluate", lambda cfg, out, **kw: seen.setdefault("grid", cfg) and [])
    monkeypatch.setattr(testtime.text.run, "evaluate_text", lambda cfg, out, **kw: seen.setdefault("text", cfg) and [])
    monkeypatch.setattr(testtime.recipes.pretrain, "pretrain", lambda cfg, run_dir, **kw: seen.setdefault("pretrain", cfg)
                        and testtime.recipes.pretrain.PretrainResult(run_dir, 0, False, None, None))
    save_tasks(synthetic_tasks(1), tmp_path / "tasks")
    grid = {"tasks": str(tmp_path / "tasks"), "model": "some/model", "ttt": True, "limit": 3, "device": "cpu",
            "policy": "always", "max_group": 5,
            "predict_cfg": {"views": 2, "orders": 3, "token_budget": 4096, "cuda_graphs": False},
            "ttt_cfg": {"samples": 7, "epochs": 4, "lr": 0.01, "rank": 3, "augment": False, "leave_one_out": False,
                        "loss_on_demos": False, "shared": True}}
    text_file = tmp_path / "t.jsonl"
    text_file.write_text('{"id": "a", "demos": [["1", "2"]], "queries": [["3", "4"]]}\n')
    text = {"tasks": str(text_file), "model": "some/model", "ttt": False, "limit": 2, "device": "cpu", "max_group": 3,
            "predict_cfg": {"token_budget": 5000, "cuda_graphs": False},
            "ttt_cfg": {"samples": 5, "epochs": 2, "lr": 0.02, "rank": 6, "shared": True}}
    pre = {"max_minutes": 7.0, "total_steps": 123, "device": "cpu"}
    runner = CliRunner()
    for name, obj, args in (("grid", grid, ["evaluate"]), ("text", text, ["evaluate"]),
                            ("pretrain", pre, ["pretrain", "--run-dir", str(tmp_path / "p")])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(obj))
        res = runner.invoke(app, [*args, "--config", str(path)])
        assert res.exit_code == 0, res.output
    assert seen["grid"] == config_from_dict(grid)
    assert seen["text"] == text_config_from_dict(text)
    assert seen["pretrain"] == PretrainConfig.from_dict(pre)


def test_kill_and_resume_with_ttt_in_one_process(tmp_path, synthetic_tasks):
    """SIGKILL `testtime evaluate` twice while it trains per-task adapters, run it again: every task recorded once,
    the same records as a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from testtime.model.loading import load_model

    repo = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    tasks = synthetic_tasks(6)
    save_tasks(tasks, tmp_path / "tasks")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "testtime", "evaluate", "--tasks", str(tmp_path / "tasks"), "--model",
               str(tmp_path / "model"), "--out", str(out), "--policy", "always", "--samples", "8", "--epochs", "2",
               "--rank", "2", "--views", "1", "--max-group", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

    def lines() -> int:
        path = out / "results.jsonl"
        return path.read_bytes().count(b"\n") if path.exists() else 0

    for _ in range(2):  # each time: let one more task finish, then kill the process mid-training
        before = lines()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while lines() <= before:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no new result within 120 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    done_before = lines()
    assert 2 <= done_before < len(tasks), "the kills should land mid-run"
    assert not (out / "summary.json").exists()

    res = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    records = read_records(out / "results.jsonl")
    assert [r["task_id"] for r in records] == [t.id for t in tasks]  # every task once, in task order
    assert all(r["ttt_loss"] and r["policy"]["ttt_steps"] == 8 for r in records)  # TTT ran for every task
    assert json.loads((out / "summary.json").read_text())["complete"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = config_from_dict({"tasks": str(tmp_path / "tasks"), "model": str(tmp_path / "model"), "device": "cpu",
                                "policy": "always", "max_group": 1, "ttt_cfg": {"samples": 8, "epochs": 2, "rank": 2},
                                "predict_cfg": {"views": 1}})
        loaded = load_model(cfg.model)
        ref = evaluate(cfg, tmp_path / "ref", model=loaded.model, codec=loaded.codec, tasks=tasks, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    keys = ("task_id", "attempts", "correct", "greedy", "ttt_loss", "invalid", "tokens", "error", "policy")
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in ref]
