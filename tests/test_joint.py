"""The joint stage: trained on every task's demonstrations (never a test output), resumable, reused, and end to end
with the product-of-experts selection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from testtime.core.config import ConfigError
from testtime.data.encode import NEWLINE, GridCodec, encode_example
from testtime.data.pretrain_data import SequenceSampler
from testtime.data.sources import TaskSource
from testtime.data.tasks import Example, Task, leave_one_out, save_tasks
from testtime.model.training import pad_right, target_loss
from testtime.recipes.joint import JointConfig, demo_tasks, joint_stage, plan_steps
from testtime.stages.ttt import TTTConfig, build_dataset

REPO = Path(__file__).resolve().parents[1]


def _demo_loss(model, tasks) -> float:
    """Mean loss of every task's leave-one-out sequences, untransformed: how well the demos are known."""
    codec = GridCodec()
    seqs = [encode_example(codec, leave_one_out(t, i).train, t.train[i]) for t in tasks for i in range(len(t.train))]
    ids, mask = pad_right(seqs, codec.pad_id, "cpu")
    with torch.no_grad():
        return float(target_loss(model, ids, mask, [slice(0, len(seqs))])[0])


JOINT = {"samples": 48, "token_budget": 512, "max_len": 320, "lr": 3e-3, "warmup": 0.1}


def test_the_joint_stage_lowers_the_demonstrations_loss_and_leaves_the_model_given(tiny_grid_model, synthetic_tasks,
                                                                                    tmp_path):
    tasks = synthetic_tasks(4)
    model = tiny_grid_model(5)
    before = _demo_loss(model, tasks)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    res = joint_stage(model, None, GridCodec(), tasks, JointConfig(**JOINT), tmp_path / "joint", progress=False)
    after = _demo_loss(res.model, tasks)
    assert after < 0.7 * before, (before, after)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # a copy was trained
    assert res.steps == plan_steps(demo_tasks(tasks), GridCodec(), JointConfig(**JOINT), 512) > 5
    assert (tmp_path / "joint" / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "joint" / "stage.json").read_text())["finished"]

    # A finished stage is reused (no training: same weights); one of other tasks or settings is refused.
    again = joint_stage(model, None, GridCodec(), tasks, JointConfig(**JOINT), tmp_path / "joint", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(res.model.state_dict().values(), again.model.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ConfigError, match="other tasks, settings or base model"):
        joint_stage(model, None, GridCodec(), tasks[:3], JointConfig(**JOINT), tmp_path / "joint", progress=False)


def _rows(enc) -> set[int]:
    """Lengths of the grid rows in an encoded sequence (cells between newlines)."""
    out, run = set(), 0
    for t in enc.input_ids.tolist():
        if t == NEWLINE:
            out.add(run)
            run = 0
        elif 0 <= t < 10:
            run += 1
        else:
            run = 0
    return out


def test_no_test_output_reaches_a_test_time_training_set():
    """Test outputs here are 7x7 while every demo grid is 3x4: no rotation, flip or recoloring makes a 7-cell row
    from them. Neither the joint stage's samples nor a task's own TTT sequences may hold one."""
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(5):
        demos = tuple(Example(g, g[::-1].copy()) for g in (rng.integers(0, 10, (3, 4)).astype(np.uint8)
                                                           for _ in range(3)))
        test = Example(rng.integers(0, 10, (3, 4)).astype(np.uint8), rng.integers(0, 10, (7, 7)).astype(np.uint8))
        tasks.append(Task(f"k{k}", demos, (test,)))
    stripped = demo_tasks(tasks)
    assert all(t.test == () for t in stripped)
    sampler = SequenceSampler([TaskSource(stripped)], max_len=1024, seed=0)
    joint_rows = set().union(*(_rows(sampler.next()[0]) for _ in range(500)))
    ttt_rows = set().union(*(_rows(e) for t in tasks for e in build_dataset(t, GridCodec(), TTTConfig(samples=64))))
    assert joint_rows == ttt_rows == {3, 4}


def test_evaluate_runs_the_joint_stage_then_scores_every_selection(tmp_path, tiny_grid_model, small_cfg,
                                                                   synthetic_tasks):
    """End to end in one process: joint stage, per-task TTT from its weights, product of experts; the records say
    what each selection would score and the summary what the stage cost; a single task (solve) skips the stage."""
    from testtime.recipes.grid import evaluate, solve_task

    # Enough joint training and views that the tiny model decodes some valid grids to rank.
    cfg = small_cfg(joint_cfg=JointConfig(**{**JOINT, "samples": 200}), **{"predict_cfg.views": 8})
    recs = evaluate(cfg, tmp_path / "run", model=tiny_grid_model(), codec=GridCodec(), tasks=synthetic_tasks(4),
                    show_progress=False)
    assert len(recs) == 4 and not any(r["error"] for r in recs)
    assert all(set(r["selections"]) == {"poe", "vote", "greedy"} and r["selection"] == "poe" for r in recs)
    for r in recs:  # every voted candidate (up to the 5 recorded) was scored where there were more than 2
        assert [len(q) for q in r["ranked"]] == [len(q) for q in r["votes"]]
        assert all((c["logprob"] is not None) == (len(q) > 2) for q in r["ranked"] for c in q)
    assert any(len(r["ranked"][0]) > 2 for r in recs)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["joint"]["steps"] >= 1 and summary["joint"]["world"] == 1
    assert summary["mean_seconds_with_joint"] > summary["mean_seconds"]
    assert set(summary["selections"]) == {"poe", "vote", "greedy"}
    solo = solve_task(synthetic_tasks(1)[0], cfg, tiny_grid_model(), GridCodec(), show_progress=False)
    assert solo["error"] is None and not (tmp_path / "joint").exists()


# ---------------------------------------------------------------- kill during the stage, resume


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory, synthetic_tasks):
    from testtime.model.loading import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("joint")
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                       max_position_embeddings=2048)), None, root / "model")
    save_tasks(synthetic_tasks(4), root / "tasks")
    cfg = {"max_group": 4, "ttt_cfg": {"samples": 4, "epochs": 1, "rank": 2},
           "predict_cfg": {"views": 2, "max_len": 320}, "select_cfg": {"views": 2, "colors": 1},
           "joint_cfg": {**JOINT, "samples": 160, "checkpoint_minutes": 1e-6}}
    (root / "cfg.json").write_text(json.dumps(cfg))
    return root


def _evaluate(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "testtime", "evaluate", "--tasks", str(root / "tasks"), "--model",
            str(root / "model"), "--config", str(root / "cfg.json"), "--device", "cpu", "--out", str(out)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _checkpoint_step(stage: Path) -> int:
    try:
        return json.loads((stage / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


KEYS = ("task_id", "attempts", "correct", "greedy", "votes", "ranked", "ttt_loss", "tokens", "error")


def test_a_kill_during_the_joint_stage_resumes_it_and_loses_nothing(run_setup, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_evaluate(run_setup, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _checkpoint_step(out / "joint") < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no joint-stage checkpoint within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stage = json.loads((out / "joint" / "stage.json").read_text())
    assert not stage["finished"] and _checkpoint_step(out / "joint") < stage["steps"], "kill should land mid-stage"
    assert not (out / "results.jsonl").exists()

    res = subprocess.run(_evaluate(run_setup, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = subprocess.run(_evaluate(run_setup, tmp_path / "ref"), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    def records(run: Path) -> list[dict]:
        return [{k: r[k] for k in KEYS} for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())]

    assert records(out) == records(tmp_path / "ref")  # the resumed stage trained the same weights
    logged = [json.loads(ln)["step"] for ln in (out / "joint" / "log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged))  # no step logged twice


def test_under_torchrun_the_joint_stage_is_data_parallel_and_the_run_goes_on(run_setup, tmp_path):
    """Two processes (gloo): the stage trains once, over both (DDP, one writer), then each shards its tasks; the
    pretraining loop leaves the evaluation's process group for the merge at the end."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           *_evaluate(run_setup, out)[1:]]
    cfg = json.loads((run_setup / "cfg.json").read_text())
    cfg["joint_cfg"]["samples"] = 32
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    cmd[cmd.index(str(run_setup / "cfg.json"))] = str(tmp_path / "cfg.json")
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["world_size"] == 2 and summary["joint"]["world"] == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    steps = [json.loads(ln)["step"] for ln in (out / "joint" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == summary["joint"]["steps"]  # one writer, every step once
