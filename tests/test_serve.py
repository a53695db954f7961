"""`testtime serve` (`testtime.serve`) on a loopback port with a tiny model: a task is answered; concurrent requests
are solved in one batch, each with its own answer; a bad request is a one-line 4xx and the service keeps serving; a
client that goes away loses only its own task; SIGTERM stops the process cleanly (exit 0). No timed assertion: the
time limits below only keep a hang from stalling the suite."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from testtime.api import Solver
from testtime.data.encode import GridCodec
from testtime.data.tasks import task_to_dict
from testtime.model.loading import save_model
from testtime.serve import Limits, create_app

HANG = 300  # seconds: a guard against a hang, never a measure of speed
SMALL = {"samples": 2, "epochs": 1, "rank": 2, "views": 1, "predict_cfg.max_len": 320}  # a tiny model's quick run


class GatedSolver(Solver):
    """A solver whose `solve_many` waits for `gate` and records the tasks of each batch it is given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.fail = ""  # a batch holding the task of this id raises

    def solve_many(self, tasks, **kwargs):
        assert self.gate.wait(HANG)
        self.batches.append([t.id for t in tasks])
        if any(t.id == self.fail for t in tasks):
            raise FloatingPointError(f"task {self.fail}: the loss went to NaN")
        return super().solve_many(tasks, **kwargs)


@contextlib.contextmanager
def served(app):
    """The app on a free loopback port, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(HANG)
        sock.close()


def until(condition, what: str = "the condition") -> None:
    end = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < end, f"{what} did not happen within {HANG} s"
        time.sleep(0.05)


@pytest.fixture()
def solver(tiny_grid_model):
    return GatedSolver(tiny_grid_model(), GridCodec())


def body(task, **extra) -> dict:
    return {"task": task_to_dict(task), "id": task.id, "settings": SMALL, **extra}


def post(url: str, payload, **kw) -> httpx.Response:
    if isinstance(payload, bytes):
        return httpx.post(f"{url}/solve", content=payload, timeout=HANG, **kw)
    return httpx.post(f"{url}/solve", json=payload, timeout=HANG, **kw)


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=HANG).json()


def test_a_valid_task_is_answered(solver, flip_task):
    task = flip_task(1, "mirror")
    alone = solver.solve(task, max_seconds=None, show_progress=False, **SMALL)
    with served(create_app(solver, max_seconds=None, window=0)) as url:
        assert health(url)["status"] == "ready"
        got = post(url, body(task))
        assert got.status_code == 200, got.text
        res = got.json()
        assert res["id"] == "mirror" and res["batch"]["size"] == 1
        assert res["attempts"] == alone.record["attempts"]
        assert res["candidates"] == [[r.to_json() for r in per_test] for per_test in alone.candidates]
        assert set(res["seconds"]) == {"icl", "loo", "ttt", "predict", "select"}
        assert res["correct"] is not None and res["policy"]["ttt_steps"] == 1
        # a bare ARC task, without a JSON content type (as `curl -d @task.json` sends it)
        bare = post(url, json.dumps(task_to_dict(task)).encode())
        assert bare.status_code == 200, bare.text
        assert bare.json()["id"].startswith("sha1-")


def test_several_models_are_served_as_one_with_their_attempts_combined(two_models):
    from testtime.checkpoints import load_checkpoints
    from testtime.data.tasks import as_task
    from testtime.report.combine import combine_attempts

    pair = load_checkpoints([two_models / "a", two_models / "b"], device="cpu")
    tasks = [as_task(p) for p in sorted((two_models / "tasks").iterdir())]
    settings = {"ttt": False, "views": 4}
    alone = [{t.id: s.solve(t, max_seconds=None, show_progress=False, **settings).record["attempts"] for t in tasks}
             for s in pair.solvers]
    assert alone[0] != alone[1]  # the two models answer differently: the check below has teeth
    with served(create_app(pair, max_seconds=None, window=0)) as url:
        assert health(url)["model"] == f"{two_models / 'a'} + {two_models / 'b'}"
        replies = [post(url, body(t, settings=settings)) for t in tasks]
    for t, got in zip(tasks, replies, strict=True):
        assert got.status_code == 200, got.text
        want = [combine_attempts([qa, qb])[0] for qa, qb in zip(alone[0][t.id], alone[1][t.id], strict=True)]
        assert got.json()["attempts"] == want


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer(solver, flip_task):
    tasks = [flip_task(i, f"t{i}", shape=(2 + i % 3, 3)) for i in range(4)]
    alone = {t.id: solver.solve(t, max_seconds=None, show_progress=False, **SMALL).record["attempts"] for t in tasks}
    solver.batches.clear()
    other = flip_task(9, "views2")  # other settings: a batch of its own
    with served(create_app(solver, max_seconds=None, window=0, max_batch=8)) as url:
        solver.gate.clear()  # the first batch waits, so the requests after it gather
        replies: dict[str, httpx.Response] = {}
        payloads = [body(t) for t in tasks] + [body(other, settings={**SMALL, "views": 2})]
        threads = [threading.Thread(target=lambda p=p: replies.__setitem__(p["id"], post(url, p))) for p in payloads]
        threads[0].start()
        until(lambda: health(url)["running"] == 1 or len(solver.batches) > 0, "the first batch")
        for t in threads[1:]:
            t.start()
        until(lambda: health(url)["waiting"] == len(payloads) - 1, "the requests to queue")
        solver.gate.set()
        for t in threads:
            t.join(HANG)
    assert all(r.status_code == 200 for r in replies.values()), {k: r.text for k, r in replies.items()}
    assert sorted(map(len, solver.batches)) == [1, 1, 3]  # the first alone, three together, other settings apart
    assert ["views2"] in solver.batches
    for t in tasks:
        res = replies[t.id].json()
        assert res["id"] == t.id and res["attempts"] == alone[t.id]
    assert max(replies[t.id].json()["batch"]["size"] for t in tasks) == 3


def test_a_task_that_fails_in_its_batch_fails_only_its_own_request(solver, flip_task):
    good, bad = flip_task(1, "good"), flip_task(2, "bad")
    solver.fail = "bad"
    with served(create_app(solver, max_seconds=None, window=0)) as url:
        solver.gate.clear()
        replies: dict[str, httpx.Response] = {}
        threads = [threading.Thread(target=lambda t=t: replies.__setitem__(t.id, post(url, body(t))))
                   for t in (flip_task(3, "first"), good, bad)]
        threads[0].start()
        until(lambda: health(url)["running"] == 1, "the first batch")
        for t in threads[1:]:
            t.start()
        until(lambda: health(url)["waiting"] == 2, "the requests to queue")
        solver.gate.set()
        for t in threads:
            t.join(HANG)
        assert post(url, body(flip_task(4, "after"))).status_code == 200
    assert replies["first"].status_code == 200 and replies["good"].status_code == 200
    assert replies["bad"].status_code == 500 and "NaN" in replies["bad"].json()["error"]
    assert sorted(solver.batches[1]) == ["bad", "good"] and solver.batches[2:4] in (
        [["good"], ["bad"]], [["bad"], ["good"]])  # together, then each alone


def test_bad_requests_get_one_line_errors_and_the_service_keeps_serving(solver, flip_task):
    task = task_to_dict(flip_task())
    big = np.zeros((31, 31), dtype=int).tolist()
    cases = [
        (b'{"task": {"train": [', 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[1, 2]", 422, "must be a JSON object"),
        ({"task": [1]}, 422, "task: Input should be a valid dictionary"),
        ({"task": task, "colour": 1}, 422, "colour: Extra inputs are not permitted"),
        ({"task": {"train": task["train"]}}, 422, "missing key 'test'"),
        ({"task": {**task, "test": [{"input": big}]}}, 422, "more than 30"),
        ({"task": {**task, "train": task["train"] * 4}}, 422, "12 demonstrations, more than this service takes (10)"),
        ({"task": {**task, "test": [{"input": [[1, 2], [3]]}]}}, 422, "not rectangular"),
        ({"task": {**task, "test": [{"input": [[12]]}]}}, 422, "outside 0..9"),
        ({"task": task, "recipe": "fastest"}, 422, "unknown recipe 'fastest'"),
        ({"task": task, "policy": "sometimes"}, 422, "unknown policy 'sometimes'"),
        ({"task": task, "settings": {"views": 99}}, 422, "views"),
        ({"task": task, "settings": {"device": "cuda"}}, 422, "not for solving"),
        (b'{"task": "' + b"x" * 5000 + b'"}', 413, "more than this service takes"),
    ]
    with served(create_app(solver, max_seconds=None, window=0, limits=Limits(max_body=4096))) as url:
        for payload, status, words in cases:
            got = post(url, payload)
            assert got.status_code == status, (payload if isinstance(payload, bytes) else str(payload)[:200], got.text)
            line = got.json()["error"]
            assert words in line and "\n" not in line, (words, line)
        assert httpx.get(f"{url}/nothing", timeout=HANG).status_code == 404
        assert httpx.get(f"{url}/solve", timeout=HANG).status_code == 405
        assert post(url, body(flip_task())).status_code == 200  # still serving
        assert health(url)["requests"] == {"solved": 1}


def raw_request(port: int, payload: bytes, send: int | None = None) -> socket.socket:
    """A connection that sends a POST /solve of `payload` (only its first `send` bytes) and is left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
    head = f"POST /solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    sock.sendall(head.encode() + payload[:send])
    return sock


def test_a_client_that_goes_away_loses_only_its_own_task(solver, flip_task):
    first, dropped, after = flip_task(1, "first"), flip_task(2, "dropped"), flip_task(3, "after")
    with served(create_app(solver, max_seconds=None, window=0)) as url:
        port = int(url.rsplit(":", 1)[1])
        # a client that goes away in the middle of its body
        raw_request(port, json.dumps(body(dropped)).encode(), send=40).close()
        until(lambda: health(url)["requests"].get("disconnected") == 1, "the first disconnect")
        # a client that goes away while its task waits behind a running batch
        solver.gate.clear()
        busy = threading.Thread(target=lambda: post(url, body(first)))
        busy.start()
        until(lambda: health(url)["running"] == 1, "the first batch")
        sock = raw_request(port, json.dumps(body(dropped)).encode())
        until(lambda: health(url)["waiting"] == 1, "the request to queue")
        sock.close()
        until(lambda: health(url)["requests"].get("disconnected") == 2, "the second disconnect")
        solver.gate.set()
        busy.join(HANG)
        got = post(url, body(after))
        assert got.status_code == 200 and got.json()["id"] == "after"
    assert solver.batches == [["first"], ["after"]]  # the dropped task never ran


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_grid_model):
    return save_model(tiny_grid_model(), path=tmp_path_factory.mktemp("model") / "tiny")


def test_sigterm_stops_the_service_cleanly(tiny_model_dir, flip_task):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "testtime", "serve", "--port", "0", "--device", "cpu", "--model",
                             str(tiny_model_dir), "--grace", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        until(lambda: any("serving" in ln for ln in lines) or proc.poll() is not None, "the service to start")
        match = re.search(r"http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert match, "".join(lines)
        url = match.group(0)
        until(lambda: health(url)["status"] == "ready", "the service to be ready")
        replies: list[httpx.Response] = []
        client = threading.Thread(target=lambda: replies.append(post(url, body(flip_task(), settings={
            **SMALL, "samples": 64, "epochs": 100}))))
        client.start()
        until(lambda: health(url)["running"] == 1, "the request to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG) == 0, "".join(lines)
        client.join(HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(HANG)
    assert len(replies) == 1 and replies[0].status_code in (200, 503), replies
    if replies[0].status_code == 503:
        assert "shutting down" in replies[0].json()["error"]
    assert "stopped" in "".join(lines) and "Traceback" not in "".join(lines), "".join(lines)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=HANG)
