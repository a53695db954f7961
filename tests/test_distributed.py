"""Scale-out and restart safety: sharding, the results-file policy, merging, and real 2-process runs (gloo, CPU)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.core.distributed import Dist, from_env, shard
from testtime.core.store import append_records, finished_ids, merge_results, read_file_records, read_records
from testtime.data.tasks import Example, Task, save_tasks

REPO = Path(__file__).resolve().parents[1]
# torchrun is `python -m torch.distributed.run`; this spelling keeps the interpreter that runs the tests.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def run_torchrun(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run for a torchrun command line, for a hang: the launcher and its workers run in a session of
    their own, with Python's fault handler on; past `timeout` each is sent SIGABRT (the handler writes every
    thread's stack to the captured stderr), then the whole group is killed, and the test fails with those stacks.
    A timeout of subprocess.run would kill the launcher alone and leave a hung worker behind (CI, 2026-12-06: a
    2-process pretraining printed "finished" and one worker never exited)."""
    env = {**kw.pop("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        pytest.fail(f"{shlex.join(cmd)[:300]} hung past {timeout} s; stdout: {out[-1000:]}\nstacks:\n{err[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_a_hung_launch_fails_with_its_stacks_and_leaves_no_process(tmp_path):
    """run_torchrun's own check, with a stand-in for a launcher whose worker never exits."""
    pid_file = tmp_path / "worker.pid"
    worker = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    launcher = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {worker!r}])"
    with pytest.raises(pytest.fail.Exception, match=r"(?s)hung past 3 s.*Fatal Python error: Aborted.*line 1 in <module>"):
        run_torchrun([sys.executable, "-c", launcher], timeout=3)
    pid = int(pid_file.read_text())
    for _ in range(50):  # the kill is sent; the worker's exit is reaped by its parent's group going down
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the hung worker {pid} outlived the test")



# ---------------------------------------------------------------- shard


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 1000), max_size=60), st.integers(1, 9))
def test_shard_every_item_once_and_balanced(costs, world):
    items = list(range(len(costs)))
    shares = [shard(items, world, r, cost=lambda i: costs[i]) for r in range(world)]
    assert sorted(i for s in shares for i in s) == items  # each exactly once
    assert all(s == sorted(s) for s in shares)  # input order kept
    loads = [sum(costs[i] for i in s) for s in shares]
    if costs:
        assert max(loads) <= sum(costs) / world + max(costs)  # LPT bound
    assert shares == [shard(items, world, r, cost=lambda i: costs[i]) for r in range(world)]  # deterministic


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError, match="outside"):
        shard([1], 2, 2)


def test_env_without_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert from_env() == Dist(0, 1, 0) and not from_env().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert from_env() == Dist(3, 4, 1)


# ---------------------------------------------------------------- results files


def test_read_records_policy(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"task_id": "a"}\n\n{"task_id": "b", "att')  # killed mid-write: the tail is not a record
    assert read_records(p) == [{"task_id": "a"}]
    p.write_text('{"task_id": "a"}\n{"task_id": "b"}')  # parses, but no newline: never read as complete
    assert read_records(p) == [{"task_id": "a"}]
    p.write_text('{"task_id": "a"}\n{oops\n{"task_id": "c"}\n')
    with pytest.raises(ValueError, match=r"r\.jsonl: line 2: bad JSON"):
        read_records(p)
    p.write_text('[1]\n')
    with pytest.raises(ValueError, match="line 1: expected an object"):
        read_records(p)
    assert read_file_records(tmp_path / "absent.jsonl") == []


def test_append_after_a_cut_line_starts_clean(tmp_path):
    p = tmp_path / "results.rank0.jsonl"
    p.write_text('{"task_id": "a"}\n{"task_id": "b", "att')
    append_records(p, [{"task_id": "b"}])
    assert read_records(p) == [{"task_id": "a"}, {"task_id": "b"}]


def test_merge_dedupes_in_task_order_and_keeps_others(tmp_path, synthetic_tasks):
    tasks = synthetic_tasks(4)
    (tmp_path / "results.jsonl").write_text('{"task_id": "old"}\n{"task_id": "t2", "n": 0}\n')
    (tmp_path / "results.rank0.jsonl").write_text('{"task_id": "t3"}\n{"task_id": "t0"}\n')
    (tmp_path / "results.rank1.jsonl").write_text('{"task_id": "t2", "n": 1}\n{"task_id": "t1"}\n{"task_id": "x", "cut')
    assert finished_ids(tmp_path) == {"old", "t0", "t1", "t2", "t3"}
    got = merge_results(tmp_path, [t.id for t in tasks])
    assert [r["task_id"] for r in got] == ["t0", "t1", "t2", "t3"]
    assert got[2]["n"] == 0  # the first record of a task wins
    ids = [r["task_id"] for r in read_records(tmp_path / "results.jsonl")]
    assert ids == ["t0", "t1", "t2", "t3", "old"]
    assert not list(tmp_path.glob(".*tmp"))  # written through a temp file, renamed


# ---------------------------------------------------------------- real runs under torchrun (gloo, CPU)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_tasks):
    """A tiny random model, 8 small synthetic tasks, and a config that keeps each task fast but not instant."""
    from testtime.model.loading import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    save_model(build_model(ModelConfig.tiny()), None, root / "model")
    tasks = synthetic_tasks(8)
    save_tasks(tasks, root / "tasks")
    # max_group 1: a task's computation does not depend on which tasks share its batch (see evaluate docs).
    cfg = {"max_group": 1, "ttt_cfg": {"batch_size": 2}, "predict_cfg": {"max_len": 320}}
    (root / "cfg.json").write_text(json.dumps(cfg))
    return root, tasks


def _command(root: Path, out: Path) -> list[str]:
    return [*TORCHRUN, "--nproc-per-node", "2", "--standalone",
            "-m", "testtime", "evaluate", "--tasks", str(root / "tasks"), "--model", str(root / "model"),
            "--out", str(out), "--views", "1", "--samples", "16", "--epochs", "2", "--rank", "2", "--device", "cpu",
            "--config", str(root / "cfg.json")]


def _env() -> dict[str, str]:
    """The workers' environment: no torchrun variables of ours, and this checkout's `testtime` first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    path = os.pathsep.join([str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _complete_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("results.rank*.jsonl"))


KEYS = ("task_id", "attempts", "correct", "greedy", "ttt_loss", "invalid", "tokens", "error")


def test_kill_and_resume_loses_and_repeats_nothing(setup, tmp_path):
    from testtime.model.loading import load_model
    from testtime.recipes.grid import evaluate, load_eval_config

    root, tasks = setup
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(root, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    deadline = time.monotonic() + 90
    while not out.exists() or _complete_lines(out) < 1:
        workers |= set(_children(proc.pid))
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no result within 90 s"
        time.sleep(0.01)
    # SIGKILL torchrun and its workers (each in its own session), as a lost machine would be.
    for pid in [proc.pid, *workers, *_children(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.2)
    done_before = _complete_lines(out)
    assert 1 <= done_before < len(tasks), "the kill should land mid-run"
    assert not (out / "summary.json").exists()
    with (out / "results.rank1.jsonl").open("a") as f:  # and a write cut short by the kill
        f.write('{"task_id": "t7", "attempts": [[nu')

    res = run_torchrun(_command(root, out), env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    merged = read_records(out / "results.jsonl")
    assert sorted(r["task_id"] for r in merged) == sorted(t.id for t in tasks)  # every task exactly once
    per_rank = [r["task_id"] for p in out.glob("results.rank*.jsonl") for r in read_records(p)]
    assert sorted(per_rank) == sorted(t.id for t in tasks)  # nothing finished ran twice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["world_size"] == 2
    assert set(json.loads((out / "submission.json").read_text())) == {t.id for t in tasks}

    # The same tasks, uninterrupted, in this one process (no torchrun): the same records.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_eval_config(root / "cfg.json")
        cfg.tasks, cfg.model, cfg.device = str(root / "tasks"), str(root / "model"), "cpu"
        cfg.predict_cfg.views, cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs, cfg.ttt_cfg.rank = 1, 16, 2, 2
        loaded = load_model(cfg.model)
        ref = evaluate(cfg, tmp_path / "ref", model=loaded.model, codec=loaded.codec, tasks=tasks, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [{k: r[k] for k in KEYS} for r in merged] == [{k: r[k] for k in KEYS} for r in ref]


def test_pretrain_ddp_two_processes(tmp_path):
    """`torchrun -m testtime pretrain` as users start it: DDP on two processes, one writer."""
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(6):
        grids = [rng.integers(0, 10, size=(3, 3)).astype(np.uint8) for _ in range(3)]
        tasks.append(Task(f"p{k}", tuple(Example(g, g.T.copy()) for g in grids[:2]),
                          (Example(grids[2], grids[2].T.copy()),)))
    save_tasks(tasks, tmp_path / "tasks")
    # A config as a user writes one: only the keys that differ from the defaults (ModelConfig.tiny's model).
    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 2048}
    cfg = {"model": tiny, "datasets": [str(tmp_path / "tasks")], "max_len": 256, "token_budget": 1024, "pool_size": 16,
           "pad_multiple": 64, "warmup_steps": 1, "total_steps": 4, "device": "cpu", "log_every": 2, "prefetch": 1}
    (tmp_path / "pt.json").write_text(json.dumps(cfg))
    run = tmp_path / "pt"
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "testtime", "pretrain",
           "--config", str(tmp_path / "pt.json"), "--run-dir", str(run)]
    res = run_torchrun(cmd, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished at step 4/4") == 1  # rank 0 speaks for the run
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # one writer (rank 0), no duplicated lines
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and len(state["streams"]) == 2
    assert state["streams"][0] != state["streams"][1]  # each rank draws its own stream (seed + rank)
    assert (run / "model" / "config.json").exists()


# ---------------------------------------------------------------- README's torchrun lines, as written

README_SECTION = "## Several GPUs or machines"


def readme_torchrun_lines() -> list[list[str]]:
    """Every `torchrun ...` command in README's section on several GPUs, split as a shell would."""
    text = (REPO / "README.md").read_text()
    assert README_SECTION in text, f"README.md lost its section {README_SECTION!r}"
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line) for line in re.findall(r"torchrun [^`\n]+", section)]


def test_readme_torchrun_lines_parse():
    """Each line's torchrun flags parse, and so do its testtime command and options (nothing runs)."""
    import typer
    from torch.distributed.run import get_args_parser

    from testtime.cli import app

    lines = readme_torchrun_lines()
    commands = set()
    for argv in lines:
        args = get_args_parser().parse_args(argv[1:])
        assert args.module and args.training_script == "testtime", argv
        name, *rest = args.training_script_args
        typer.main.get_command(app).commands[name].make_context(name, list(rest))  # a bad flag raises here
        commands.add(name)
        if "--config" in rest:
            assert (REPO / rest[rest.index("--config") + 1]).exists(), argv
    assert commands == {"evaluate", "pretrain"}
    assert any("--nnodes" in argv and "--rdzv-endpoint" in argv for argv in lines)


def test_readme_torchrun_line_runs_as_written(tmp_path):
    """README's quick check (two processes, here gloo on the CPU) runs as written, from a fresh folder."""
    argv = next(a for a in readme_torchrun_lines() if a[a.index("--nproc-per-node") + 1] == "2")
    out = tmp_path / argv[argv.index("--out") + 1]
    limit = int(argv[argv.index("--limit") + 1])
    res = run_torchrun([*TORCHRUN, *argv[1:]], cwd=tmp_path, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("results.rank*.jsonl")) == ["results.rank0.jsonl", "results.rank1.jsonl"]
    merged = [r["task_id"] for r in read_records(out / "results.jsonl")]
    assert len(merged) == limit == len(set(merged))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["world_size"] == 2
    assert (out / "report.html").exists() and res.stdout.count("wrote ") == 1  # rank 0 speaks for the run
