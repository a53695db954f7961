"""The `testtime` command line. Commands only map flags to library calls.

Layout: `app` holds top-level commands (pretrain, evaluate, solve, ...); `tasks_app`
groups the task inspection commands. Wrap every command in `@cli_errors` so a bad input
ends as one line `error: ...` on stderr and exit code 2, never a traceback
(set TESTTIME_DEBUG=1 to see the traceback instead).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from testtime.tasks import TaskError

F = TypeVar("F", bound=Callable)

# Errors a user can cause and fix: bad task files, missing paths, bad option values.
USER_ERRORS: tuple[type[BaseException], ...] = (TaskError, OSError, ValueError, KeyError)
EXIT_USER_ERROR = 2

app = typer.Typer(help="Test-time training for ARC tasks.", no_args_is_help=True, pretty_exceptions_enable=False)
tasks_app = typer.Typer(help="Inspect tasks and datasets.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


def fail(message: object) -> typer.Exit:
    """Print `error: message` as one line on stderr; return the Exit to raise."""
    text = " ".join(str(message).split()) or type(message).__name__
    typer.echo(f"error: {text}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def cli_errors(fn: F) -> F:
    """Decorator for commands: user errors become one stderr line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if os.environ.get("TESTTIME_DEBUG"):
                raise  # the full traceback, for when a "user error" is really a bug
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise fail(message) from None

    return wrapper  # type: ignore[return-value]


def _text_summary(s: dict) -> str:
    acc = "n/a" if s["task_accuracy"] is None else f"{100 * s['task_accuracy']:.1f}%"
    return f"{s['tasks']} text tasks, mean task accuracy {acc}, {s['errors']} error(s)"


def _console():
    from rich.console import Console

    return Console()


@app.callback()
def main() -> None:
    """Test-time training for ARC tasks."""


# ---------------------------------------------------------------- tasks


@tasks_app.command("list")
@cli_errors
def tasks_list(
    spec: Annotated[str, typer.Argument(help="Dataset name (arc1/train, arc1/eval, arc2/train, arc2/eval), task file, challenges file or folder.")],
) -> None:
    """List tasks: id, number of train and test examples, largest grid."""
    from rich.table import Table

    from testtime.tasks import load_tasks

    tasks = load_tasks(spec)
    table = Table(title=f"{spec}: {len(tasks)} tasks")
    for col in ("id", "#train", "#test", "max grid"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for t in tasks:
        grids = [g for e in (*t.train, *t.test) for g in (e.input, e.output) if g is not None]
        h = max(g.shape[0] for g in grids)
        w = max(g.shape[1] for g in grids)
        table.add_row(t.id, str(len(t.train)), str(len(t.test)), f"{h}x{w}")
    _console().print(table)


@tasks_app.command("show")
@cli_errors
def tasks_show(
    task: Annotated[str, typer.Argument(help="Task file, FILE:ID, DATASET/ID or a bare task id.")],
    png: Annotated[Path | None, typer.Option(help="Also draw the task to this PNG file.")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the task as a self-contained HTML page.")] = None,
) -> None:
    """Show one task in color; optionally save it as PNG and/or HTML."""
    from testtime.render import print_task, task_html, task_png
    from testtime.tasks import resolve_task

    t = resolve_task(task)
    print_task(t, console=_console())
    if png is not None:
        typer.echo(f"wrote {task_png(t, png)}")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(task_html(t))
        typer.echo(f"wrote {html}")


# ---------------------------------------------------------------- runs


@app.command("report")
@cli_errors
def report(run_dir: Annotated[Path, typer.Argument(help="Run folder holding results.jsonl (and config.json).")]) -> None:
    """Print a run's summary and write RUN_DIR/report.html (grid or text run, told by its tasks file)."""
    import json

    from testtime.report import print_summary, read_results, write_report
    from testtime.text import is_text_task_path

    cfg_path = run_dir / "config.json"
    tasks = json.loads(cfg_path.read_text()).get("tasks") if cfg_path.exists() else None
    if isinstance(tasks, str) and is_text_task_path(tasks):
        from testtime.text_report import summary, write_text_report

        typer.echo(_text_summary(summary(read_results(run_dir))))
        typer.echo(f"wrote {write_text_report(run_dir)}")
        return
    print_summary(read_results(run_dir), console=_console())
    typer.echo(f"wrote {write_report(run_dir)}")


@app.command("compare")
@cli_errors
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="The reference run folder (say, without TTT).")],
    run_b: Annotated[Path, typer.Argument(help="The run to judge against it, on the same tasks.")],
    png: Annotated[Path | None, typer.Option(help="Also draw the per-task scores of both runs to this PNG.")] = None,
    show: Annotated[int, typer.Option(min=0, help="List at most this many tasks whose scores differ.")] = 30,
) -> None:
    """Pair two runs by task: totals, tasks won and lost, and an exact sign test (grid or text runs)."""
    from rich.table import Table

    from testtime.compare import compare_runs, plot

    cmp = compare_runs(run_a, run_b)
    if not cmp.pairs:
        raise ValueError(f"{run_a} and {run_b}: no task scored in both runs")
    ta, tb = cmp.totals
    table = Table(title=f"{len(cmp.pairs)} tasks scored in both runs")
    table.add_column("task")
    table.add_column(cmp.labels[0], justify="right")
    table.add_column(cmp.labels[1], justify="right")
    for p in cmp.changed[:show]:
        table.add_row(p.task_id, f"{p.a:g}", f"{p.b:g}")
    table.add_row("total", f"{ta:g}", f"{tb:g}", end_section=True)
    _console().print(table)
    typer.echo(f"{cmp.labels[1]} against {cmp.labels[0]}: {cmp.b_won} tasks won, {cmp.b_lost} lost, "
               f"{len(cmp.pairs) - cmp.b_won - cmp.b_lost} tied; sign test p = {cmp.p_value:.3g}")
    if png is not None:
        typer.echo(f"wrote {plot(cmp, png)}")


@app.command("pretrain")
@cli_errors
def pretrain_cmd(
    config: Annotated[Path, typer.Option(help="Pretraining config JSON (configs/pretrain-base.json).")] = Path("configs/pretrain-base.json"),
    run_dir: Annotated[Path, typer.Option(help="Run folder; an existing checkpoint/ there is continued.")] = Path("runs/pretrain"),
    max_minutes: Annotated[float | None, typer.Option(help="Wall clock for this call; then save and exit (run again to continue).")] = None,
    steps: Annotated[int | None, typer.Option(help="Override total_steps (the length of the schedule).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    export: Annotated[bool, typer.Option("--export", help="Write RUN_DIR/model even if the schedule is not done.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore an existing checkpoint and start over.")] = False,
) -> None:
    """Pretrain (or continue pretraining) the base model on augmented ARC training tasks.

    A config with `init_from` fine-tunes an existing Hugging Face LM instead (configs/finetune-gemma3-arc.json).
    """
    import dataclasses

    from testtime.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig.from_json(config)
    overrides = {k: v for k, v in (("max_minutes", max_minutes), ("total_steps", steps), ("device", device)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    res = pretrain(cfg, run_dir, resume=not fresh, export=export or None)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    state = "finished" if res.finished else "stopped (run again to continue)"
    typer.echo(f"{state} at step {res.step}/{cfg.total_steps}; log {run_dir / 'log.jsonl'}, plot {run_dir / 'loss.png'}")
    if res.model_dir is not None:
        typer.echo(f"model written to {res.model_dir}")
    if res.best_val is not None:
        typer.echo(f"lowest held-out loss {res.best_val:.4f}; that model is in {run_dir / 'best'}")


# ---------------------------------------------------------------- solving


def _eval_config(
    tasks: str, model: str | None, ttt: bool, limit: int | None, device: str | None, views: int, orders: int,
    samples: int | None, epochs: int | None, lr: float | None, rank: int | None, augment: bool, leave_one_out: bool,
    demo_loss: bool, shared: bool, config: Path | None, policy: str | None = None,
):
    from testtime.evaluate import EvalConfig, load_eval_config

    cfg = load_eval_config(config) if config else EvalConfig()
    cfg.tasks, cfg.model, cfg.ttt, cfg.limit, cfg.device = tasks, model, ttt, limit, device
    if policy is not None:
        cfg.policy = policy
    cfg.predict_cfg.views, cfg.predict_cfg.orders = views, orders
    t = cfg.ttt_cfg
    for name, value in (("samples", samples), ("epochs", epochs), ("lr", lr), ("rank", rank)):
        if value is not None:
            setattr(t, name, value)
    t.augment, t.leave_one_out, t.loss_on_demos, t.shared = augment, leave_one_out, demo_loss, shared
    return cfg


_MODEL = Annotated[str | None, typer.Option(help="A Hugging Face causal LM folder; default: the shipped base model.")]
_TTT = Annotated[bool, typer.Option("--ttt/--no-ttt", help="Train a per-task adapter before predicting.")]
_VIEWS = Annotated[int, typer.Option(min=1, max=8, help="D8 views for augmented inference (1: plain greedy).")]
_ORDERS = Annotated[int, typer.Option(min=1, help="Demo orders per view.")]
_DEVICE = Annotated[str | None, typer.Option(help="cpu or cuda; default: cuda when available.")]
_SAMPLES = Annotated[int | None, typer.Option(min=1, help="TTT sequences per task.")]
_EPOCHS = Annotated[int | None, typer.Option(min=1, help="TTT epochs.")]
_LR = Annotated[float | None, typer.Option(help="TTT learning rate.")]
_RANK = Annotated[int | None, typer.Option(min=1, help="LoRA rank.")]
_AUG = Annotated[bool, typer.Option("--augment/--no-augment", help="Transform TTT samples (D8, colors, order).")]
_LOO = Annotated[bool, typer.Option("--loo/--no-loo", help="Leave-one-out TTT tasks (else plain input->output pairs).")]
_DEMO = Annotated[bool, typer.Option("--demo-loss/--no-demo-loss", help="Also learn demo outputs, not only the held-out one.")]
_SHARED = Annotated[bool, typer.Option("--shared", help="Ablation: one adapter shared by the tasks of a batch.")]
_CONFIG = Annotated[Path | None, typer.Option(help="JSON EvalConfig to start from (flags override it).")]
_POLICY = Annotated[str | None, typer.Option(
    help="When to train: never, always, extended (default with --ttt), agree, loo-stop, adaptive; see `testtime policies`.")]


@app.command("policies")
def policies_cmd() -> None:
    """List the test-time training policies that `evaluate --policy` takes."""
    from testtime.policy import DEFAULT_POLICY, POLICIES

    for p in POLICIES.values():
        mark = " (default with --ttt)" if p.name == DEFAULT_POLICY else ""
        typer.echo(f"{p.name}{mark}: {p.summary}")


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    tasks: Annotated[str, typer.Option(help="Dataset name, task file, challenges file or folder.")] = "arc1/eval",
    model: _MODEL = None,
    ttt: _TTT = True,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N tasks.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (results.jsonl, report.html); resumes if it exists.")] = None,
    device: _DEVICE = None,
    views: _VIEWS = 8,
    orders: _ORDERS = 1,
    samples: _SAMPLES = None,
    epochs: _EPOCHS = None,
    lr: _LR = None,
    rank: _RANK = None,
    augment: _AUG = True,
    loo: _LOO = True,
    demo_loss: _DEMO = True,
    shared: _SHARED = False,
    config: _CONFIG = None,
    policy: _POLICY = None,
    max_minutes: Annotated[float | None, typer.Option(help="Start no new batch of tasks after this long.")] = None,
    token_budget: Annotated[int | None, typer.Option(min=1024, help="Prompt+answer tokens per generation batch (default: sized to free memory).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A task file that fails validation stops the run (default: skip it, report it).")] = False,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay the decode step as a CUDA graph (GPU).")] = True,
    max_group: Annotated[int | None, typer.Option(min=1, help="Tasks trained and predicted together (default: 64 grid or 16 text tasks on a GPU, 8 or 4 on a CPU). Results are written as each group ends.")] = None,
) -> None:
    """Solve a set of tasks and score pass@2; one JSON line per task, resumable, with an HTML report.

    Runs as is under torchrun (tasks sharded across ranks; rank 0 merges results and writes the report).
    """
    from testtime.text import is_text_task_path

    if is_text_task_path(tasks):  # text few-shot tasks (JSONL): their own recipe, same flags
        from testtime.text_eval import evaluate_text_cli

        if policy is not None:
            from testtime.config import ConfigError

            raise ConfigError("--policy applies to grid tasks; text tasks take --ttt/--no-ttt")
        run, s = evaluate_text_cli(tasks, model, ttt, limit, out, device, samples, epochs, lr, rank, shared, max_minutes,
                                   max_group)
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
            return
        typer.echo(f"{_text_summary(s)}; wrote {run / 'results.jsonl'}")
        return

    from testtime import distributed
    from testtime.evaluate import effective_policy, evaluate, load_task_set
    from testtime.report import print_summary, write_report

    cfg = _eval_config(tasks, model, ttt, limit, device, views, orders, samples, epochs, lr, rank, augment, loo,
                       demo_loss, shared, config, policy)
    if token_budget is not None:
        cfg.predict_cfg.token_budget = token_budget
    cfg.predict_cfg.cuda_graphs = cuda_graphs
    if max_group is not None:
        cfg.max_group = max_group
    default_name = {"never": "icl"}.get(effective_policy(cfg), effective_policy(cfg))
    out = out or Path("runs") / f"{tasks.replace('/', '-')}-{default_name}"
    task_list, skipped = load_task_set(tasks, strict=strict)
    main = distributed.from_env().is_main
    if main:
        for problem in skipped:
            typer.echo(f"skipped: {problem}", err=True)
    records = evaluate(cfg, out, tasks=task_list, max_minutes=max_minutes, skipped=skipped, show_progress=main)
    if main:
        print_summary(records, console=_console())
        if skipped:
            typer.echo(f"{len(skipped)} task file(s) skipped as invalid (listed in {out / 'summary.json'})")
        typer.echo(f"wrote {out / 'results.jsonl'}, {out / 'submission.json'} and {write_report(out, task_list)}")


@app.command("submit")
@cli_errors
def submit_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder holding results.jsonl (and config.json).")],
    out: Annotated[Path | None, typer.Option(help="Submission file; default RUN_DIR/submission.json.")] = None,
) -> None:
    """Write a Kaggle ARC Prize submission (two attempts per test input) from a run's results."""
    import json

    from testtime.report import read_results
    from testtime.submission import write_submission
    from testtime.tasks import load_tasks

    records = read_results(run_dir)
    tasks = []
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():  # so that tasks the run has not finished still get an (empty) entry
        run_cfg = json.loads(cfg_path.read_text())
        tasks = load_tasks(run_cfg["tasks"])[: run_cfg.get("limit") or None]
    path = write_submission(records, out or run_dir / "submission.json", tasks=tasks)
    typer.echo(f"wrote {path} ({len(records)} task(s) with results)")


@app.command("score")
@cli_errors
def score_cmd(
    submission: Annotated[Path, typer.Argument(help="A submission.json (Kaggle ARC Prize format).")],
    solutions: Annotated[str, typer.Option(help="Solutions file ({id: [grid, ...]}), dataset name, task file or folder.")],
) -> None:
    """Score a submission file against known answers: per task and in total."""
    from rich.table import Table

    from testtime.submission import score_submission

    res = score_submission(submission, solutions)
    table = Table(title=f"{submission}: {res['score']:g} / {res['n_tasks']} ({res['percent']:.2f}%)")
    table.add_column("task")
    table.add_column("score", justify="right")
    for tid, score in res["tasks"].items():
        table.add_row(tid, f"{score:g}" + ("  (missing)" if tid in res["missing"] else ""))
    _console().print(table)
    typer.echo(f"score {res['score']:g} / {res['n_tasks']} = {res['percent']:.2f}%")


@app.command("solve")
@cli_errors
def solve_cmd(
    task: Annotated[str, typer.Argument(help="Task file, FILE:ID, DATASET/ID or a bare task id.")],
    model: _MODEL = None,
    ttt: _TTT = True,
    device: _DEVICE = None,
    views: _VIEWS = 8,
    samples: _SAMPLES = None,
    epochs: _EPOCHS = None,
    policy: _POLICY = None,
    html: Annotated[Path | None, typer.Option(help="Also write the task and both attempts as HTML.")] = None,
) -> None:
    """Solve one task: test-time train, predict under augmentations, vote, print the two attempts."""
    import time

    import numpy as np
    import torch

    from testtime.evaluate import solve_task
    from testtime.model import load_model
    from testtime.render import print_task, task_html
    from testtime.tasks import resolve_task

    t = resolve_task(task)
    cfg = _eval_config(task, model, ttt, None, device, views, 1, samples, epochs, None, None, True, True, True,
                       False, None, policy)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    loaded = load_model(model, device=dev)
    rec = solve_task(t, cfg, loaded.model, loaded.codec)
    preds = [[None if g is None else np.asarray(g, dtype=np.uint8) for g in att] for att in rec["attempts"]]
    print_task(t, predictions=preds, console=_console())
    if rec["correct"] is not None:
        typer.echo(f"solved {sum(rec['correct'])}/{len(rec['correct'])} test input(s)")
    typer.echo(f"{time.perf_counter() - start:.1f} s end to end on {dev}")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(task_html(t, predictions=preds))
        typer.echo(f"wrote {html}")


if __name__ == "__main__":
    app()
