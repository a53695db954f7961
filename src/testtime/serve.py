"""`testtime serve`: a small HTTP service that keeps a model warm and answers ARC tasks (FastAPI on uvicorn).

    testtime serve --host 127.0.0.1 --port 8000
    curl -s localhost:8000/health
    curl -s localhost:8000/solve -H 'content-type: application/json' -d @task.json            # a task in ARC JSON
    curl -s localhost:8000/solve -d '{"task": {"train": [...], "test": [...]}, "policy": "always", "settings": {"views": 4}}'

`POST /solve` takes a task in ARC JSON, bare or as `task` beside an optional `id`, `recipe`, `policy` and `settings`
(the API's settings: flags by name or dotted config paths, `testtime.api.SETTINGS`), and answers with the attempts,
every candidate ranked (with its votes and score), the seconds of each stage, and the batch it ran in.
`GET /health` says whether the service is ready and what it has done.

Concurrent requests are gathered into one `Solver.solve_many` call (`Batcher`): one worker thread takes the first
request waiting, collects more for `window` seconds or until `max_batch`, and solves them together, each task in
its own adapter slot of the batched bank; requests of other settings wait for a batch of their own. Each request
gets its own answer. A request the service cannot take is a 4xx with one line, `{"error": "..."}`: malformed JSON
(400), a body over `max_body` bytes (413), a wrong schema, a bad grid (empty, ragged, a color outside 0..9, a side
over 30), more demos, test inputs or cells than `Limits` allows, an unknown recipe, policy or setting (422); a full
queue or a service shutting down is 503. A task that fails inside a batch is solved again alone, so it fails only
its own request. A client that disconnects has its task dropped if it has not started.

SIGTERM (or Ctrl-C) stops it cleanly: no new connections; tasks waiting for a batch are answered 503 at once; the
batch running finishes and is answered, or after `grace` seconds its requests are answered 503; then exit 0.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which name classes
# imported inside `create_app` (FastAPI and uvicorn load only when a service starts; `testtime.cli` imports this).
import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from testtime.batching import Answer, Batcher, Job, ServiceError
from testtime.cli_options import DEVICE, DTYPE
from testtime.core.config import one_line
from testtime.data.tasks import Task, task_from_dict

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from testtime.api import Solver

log = logging.getLogger("testtime.serve")

CLIENT_CLOSED = 499  # nginx's status for a request whose client went away (never seen by that client)


@dataclass(frozen=True)
class Limits:
    """What one request may hold (ARC's largest tasks: 10 demos, 4 test inputs, 9240 cells)."""

    max_demos: int = 10
    max_tests: int = 4
    max_cells: int = 20_000  # every grid of the task, outputs included (ten 30x30 demos and two test inputs fit)
    max_body: int = 2 << 20  # bytes


class SolveRequest(BaseModel):
    """The body of `POST /solve`: a task in ARC JSON and how to solve it; a bare ARC task is read as `task`."""

    model_config = ConfigDict(extra="forbid")

    task: dict[str, Any] = Field(description='ARC JSON: {"train": [{"input": grid, "output": grid}...], '
                                             '"test": [{"input": grid}...]}; a test output, where given, is scored')
    id: str | None = Field(None, min_length=1, max_length=200,
                           description="the task's id, which seeds its augmentations and adapter (default: a hash)")
    recipe: str | None = Field(None, description="a named recipe (`testtime recipes`; default: default)")
    policy: str | None = Field(None, description="a TTT policy (`testtime policies`)")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description='settings by flag name or dotted config path, e.g. {"views": 4}')

    @model_validator(mode="before")
    @classmethod
    def bare_task(cls, value: Any) -> Any:
        if isinstance(value, dict) and "task" not in value and "train" in value and "test" in value:
            rest = {k: v for k, v in value.items() if k not in ("train", "test")}
            return {**rest, "task": {"train": value["train"], "test": value["test"]}}
        return value


def schema_error(e: ValidationError) -> str:
    """The first problem pydantic found, in one line: where in the request, and what."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "request"
    return f"{where}: {err['msg']}" + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else "")


def parse_body(raw: bytes) -> SolveRequest:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ServiceError(400, f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ServiceError(422, f"the body must be a JSON object (a task, or {{\"task\": ...}}), not {type(obj).__name__}")
    try:
        return SolveRequest.model_validate(obj)
    except ValidationError as e:
        raise ServiceError(422, schema_error(e)) from None


def task_of(req: SolveRequest, limits: Limits) -> Task:
    """The request's task, checked against ARC's rules (`tasks.task_from_dict`) and the service's `limits`."""
    raw = req.task
    for key, most in (("train", limits.max_demos), ("test", limits.max_tests)):
        if isinstance(raw.get(key), list) and len(raw[key]) > most:
            noun = "demonstrations" if key == "train" else "test inputs"
            raise ServiceError(422, f"task: {len(raw[key])} {noun}, more than this service takes ({most})")
    tid = req.id or "sha1-" + hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
    task = task_from_dict(raw, tid)  # a TaskError (a ValueError) names the example and the problem
    cells = sum(g.size for e in (*task.train, *task.test) for g in (e.input, e.output) if g is not None)
    if cells > limits.max_cells:
        raise ServiceError(422, f"task {tid}: {cells} cells, more than this service takes ({limits.max_cells})")
    return task


def finite(value: Any) -> Any:
    """`value` with every float that is not finite as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def answer_json(a: Answer, latency: float) -> dict[str, Any]:
    s, rec = a.solution, a.solution.record
    return finite({
        "id": s.task.id,
        "attempts": rec["attempts"],
        "candidates": [[r.to_json() for r in per_test] for per_test in s.candidates],
        "seconds": s.seconds,
        "latency": round(latency, 4),
        "queued": round(a.queued, 4),
        "batch": {"size": a.batch_size, "seconds": round(a.batch_seconds, 4)},
        "policy": rec.get("policy"),
        "ttt_loss": rec.get("ttt_loss"),
        "budget": rec.get("budget"),
        "correct": rec.get("correct"),
        "score": rec.get("score"),
        "note": rec.get("error"),  # a view whose prompt did not fit, say: the answer stands
    })


def respond(content: dict[str, Any], status: int = 200) -> "JSONResponse":
    from fastapi.responses import JSONResponse

    return JSONResponse(content, status_code=status)


def error(status: int, message: str) -> "JSONResponse":
    return respond({"error": one_line(message)}, status)


async def read_body(request: "Request", cap: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > cap:
        raise ServiceError(413, f"the body is {size} bytes, more than this service takes ({cap})")
    chunks, got = [], 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > cap:
            raise ServiceError(413, f"the body is over {cap} bytes, more than this service takes")
        chunks.append(chunk)
    return b"".join(chunks)


async def until_disconnected(request: "Request") -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class Service:
    """What the app holds: the solver's batcher, the limits, and how shutting down goes."""

    batcher: Batcher
    limits: Limits = field(default_factory=Limits)
    grace: float = 30.0  # seconds a batch running at shutdown has to finish
    closing: asyncio.Event | None = None  # set on the event loop (`loop`) once shutting down
    loop: asyncio.AbstractEventLoop | None = None
    started: float = field(default_factory=time.time)

    def shut_down(self) -> None:
        """From SIGTERM's handler: no new jobs, those waiting answered 503, the running batch given `grace` s."""
        self.batcher.closing.set()
        if self.loop is not None and self.closing is not None:
            self.loop.call_soon_threadsafe(self.closing.set)

    async def wait(self, request: "Request", job: Job) -> "JSONResponse":
        """The job's answer; or, if the client goes away first, its task dropped (unless started)."""
        answer = asyncio.wrap_future(job.future)
        gone = asyncio.ensure_future(until_disconnected(request))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            done, _ = await asyncio.wait({answer, gone, closing}, return_when=asyncio.FIRST_COMPLETED)
            if closing in done and answer not in done and gone not in done:
                done, _ = await asyncio.wait({answer, gone}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    return error(503, f"the service is shutting down; the batch of this task did not finish "
                                      f"within {self.grace:g} s")
            if answer not in done:
                job.future.cancel()  # dropped if it has not started; else its answer is thrown away
                self.batcher.counts["disconnected"] += 1
                return error(CLIENT_CLOSED, "the client went away")
            try:
                got: Answer = answer.result()
            except ServiceError as e:
                return error(e.status, e.message)
            except ValueError as e:  # a TaskError, a ConfigError, training that diverged: the task's fault
                return error(422, str(e))
            except Exception as e:
                log.exception("task %s failed", job.task.id)
                return error(500, f"internal error: {type(e).__name__}: {e}")
            if not got.solution.candidates:
                return error(422, f"task {job.task.id}: {got.solution.error}")
            return respond(answer_json(got, time.perf_counter() - job.arrived))
        finally:
            gone.cancel()
            closing.cancel()


def create_app(solver: "Solver", *, window: float = 0.02, max_batch: int | None = None, max_queue: int = 1024,
               max_seconds: float | Literal["auto"] | None = "auto", grace: float = 30.0,
               limits: Limits | None = None) -> "FastAPI":
    """The app over a loaded solver; its batcher starts with the app (lifespan) and stops with it. `max_batch`
    defaults to the solver's group size (`runs.GROUP_SIZES`: 64 tasks on a GPU, 8 on a CPU)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from testtime.recipes.grid import plan_of
    from testtime.recipes.runs import group_size

    batcher = Batcher(solver, window=window, max_batch=max_batch or group_size(None, solver.device, "grid"),
                      max_queue=max_queue, max_seconds=max_seconds)
    service = Service(batcher, limits or Limits(), grace)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.closing, service.loop = asyncio.Event(), asyncio.get_running_loop()
        batcher.start()
        yield
        service.shut_down()
        await asyncio.get_running_loop().run_in_executor(None, batcher.close, grace)

    app = FastAPI(title="testtime", summary="Test-time training for ARC tasks, one warm model, batched requests.",
                  lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, e: ServiceError) -> JSONResponse:
        return error(e.status, e.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code in (404, 405):
            return error(e.status_code, f"no {request.method} {request.url.path} here: the service answers "
                                        "GET /health and POST /solve")
        return error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(e).__name__}: {e}")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, e: ClientDisconnect) -> JSONResponse:
        batcher.counts["disconnected"] += 1
        return error(CLIENT_CLOSED, "the client went away before its request was read")

    @app.get("/health")
    async def health() -> JSONResponse:
        """Ready (200) or shutting down (503), with what the service has done so far."""
        up = not batcher.closing.is_set()
        return JSONResponse({
            "status": "ready" if up else "shutting down", "model": solver.name or "shipped", "device": solver.device,
            "waiting": batcher.waiting, "running": batcher.running, "max_batch": batcher.max_batch,
            "window": batcher.window, "batches": {str(k): v for k, v in sorted(batcher.sizes.items())},
            "requests": dict(batcher.counts), "uptime": round(time.time() - service.started, 1),
        }, status_code=200 if up else 503)

    @app.post("/solve", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": SolveRequest.model_json_schema()}}}})
    async def solve(request: Request) -> JSONResponse:
        """Solve one task: attempts, ranked candidates, seconds per stage (see the module's docstring)."""
        if batcher.closing.is_set():
            raise ServiceError(503, "the service is shutting down")
        req = parse_body(await read_body(request, service.limits.max_body))
        try:
            task = task_of(req, service.limits)
            settings = dict(req.settings)
            if req.policy is not None:
                settings["policy"] = req.policy
            cfg = solver.config(req.recipe or "default", **settings)
            plan_of(cfg)  # an unknown or contradictory policy fails here, not in its batch
        except ServiceError:
            raise
        except (ValueError, TypeError) as e:  # TaskError, ConfigError: one line naming the problem
            raise ServiceError(422, str(e)) from None
        job = Job(task, cfg, json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str))
        batcher.submit(job)
        return await service.wait(request, job)

    return app


def warm_up(solver: "Solver") -> float:
    """One small task solved end to end (TTT, decoding, scoring), so the first request pays no one-time start
    (CUDA's lazy initialisation, first kernels, the CPU budget's timing of the model); returns its seconds."""
    import numpy as np

    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, (3, 3)).tolist() for _ in range(4)]
    task = task_from_dict({"train": [{"input": g, "output": [r[::-1] for r in g]} for g in grids[:3]],
                           "test": [{"input": grids[3]}]}, "warm-up")
    start = time.perf_counter()
    solver.solve(task, policy="always", show_progress=False,
                 **{"ttt_cfg.samples": 2, "ttt_cfg.epochs": 1, "views": 2, "select_cfg.views": 2, "select_cfg.colors": 1})
    return time.perf_counter() - start


def serve(solver: "Solver", host: str = "127.0.0.1", port: int = 8000, *, say: Callable[[str], None] = print,
          log_level: str = "info", **options: Any) -> bool:
    """Serve `solver` on host:port until SIGTERM or Ctrl-C (`options`: `create_app`'s), then return: True when every
    batch finished, False when one still ran after the grace period (its thread is left running)."""
    import uvicorn

    app = create_app(solver, **options)
    service: Service = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            service.shut_down()
            super().handle_exit(sig, frame)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)  # connections wait in the backlog until the server takes them
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=service.grace + 10,
                            lifespan="on", access_log=log_level == "debug")
    server = Server(config)
    # uvicorn raises the signal that stopped it again once it is done; ignored here, the process then exits 0.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    say(f"serving {solver.name or 'the shipped model'} on {solver.device} at http://{host}:{bound} "
        "(POST /solve, GET /health); SIGTERM or Ctrl-C stops it")
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    return not service.batcher.busy


def command(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one, printed).")] = 8000,
    device: DEVICE = None,
    dtype: DTYPE = None,
    model: Annotated[list[str] | None, typer.Option(help="A Hugging Face causal LM folder; default: the shipped model. "
                                                         "Named twice or more: each model solves each task, their "
                                                         "attempts combined as `testtime combine` does.")] = None,
    window: Annotated[float, typer.Option(help="Seconds a batch waits for more requests after its first.")] = 0.02,
    max_batch: Annotated[int | None, typer.Option(help="Tasks solved together at most (default: 64 on a GPU, 8 on "
                                                       "a CPU).")] = None,
    max_queue: Annotated[int, typer.Option(help="Tasks waiting at most; more are answered 503.")] = 1024,
    grace: Annotated[float, typer.Option(help="Seconds the running batch has to finish after SIGTERM; then its "
                                              "requests are answered 503.")] = 30.0,
    max_seconds: Annotated[float | None, typer.Option(help="Time budget of each task, as `testtime solve` takes it "
                                                           "(default: 300 on a CPU, none on a GPU).")] = None,
    warm_up_first: Annotated[bool, typer.Option("--warm-up/--no-warm-up", help="Solve a small task before serving, "
                                                "so the first request pays no start-up.")] = True,
) -> None:
    """Serve tasks over HTTP with the model kept warm: POST /solve (a task in ARC JSON), GET /health.

    Concurrent requests are solved together in one batch. SIGTERM or Ctrl-C stops it cleanly (exit 0).
    """
    import os
    import sys

    from testtime.core.config import SECONDS, Range, check_value

    for flag, value, limits in (("--port", port, Range(0, 65535)), ("--window", window, Range(0, 60)),
                                ("--max-batch", max_batch, Range(1, 4096)), ("--max-queue", max_queue, Range(1, 10**6)),
                                ("--grace", grace, Range(0, 86400)), ("--max-seconds", max_seconds, SECONDS)):
        check_value(flag, value, limits)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"testtime serve needs FastAPI and uvicorn ({e}): pip install 'testtime[serve]'") from None
    from testtime.checkpoints import load_solver

    solver = load_solver(model, device, dtype)
    if warm_up_first:
        typer.echo(f"warmed up in {warm_up(solver):.1f} s")
    finished = serve(solver, host, port, say=typer.echo, window=window, max_batch=max_batch, max_queue=max_queue,
                     grace=grace, max_seconds="auto" if max_seconds is None else max_seconds)
    typer.echo("stopped" if finished else f"stopped; a batch still running after {grace:g} s was left unfinished")
    if not finished:  # its thread may be inside a kernel: leave without waiting for it
        sys.stdout.flush()
        os._exit(0)
