"""The `testtime` command line. Commands only map flags to library calls.

Layout: `app` holds top-level commands (pretrain, evaluate, solve, ...); `tasks_app`
groups the task inspection commands. Wrap every command in `@cli_errors` so a bad input
ends as one line `error: ...` on stderr and exit code 2, never a traceback
(set TESTTIME_DEBUG=1 to see the traceback instead). Usage errors (an unknown option, a value
of the wrong type, a missing argument) take the same form (`OneLineUsageErrors`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

from testtime import cli_options as opt
from testtime.cli_pretrain import average_command, generate_command, pretrain_command, quantize_command, ship_command
from testtime.core.config import one_line
from testtime.data.tasks import TaskError
from testtime.recipes.runs import GROUP_SIZES
from testtime.serve import command as serve_command

F = TypeVar("F", bound=Callable)

# Errors a user can cause and fix: bad task files, missing paths, bad option values.
USER_ERRORS: tuple[type[BaseException], ...] = (TaskError, OSError, ValueError, KeyError)
EXIT_USER_ERROR = 2


class OneLineUsageErrors(TyperGroup):
    """The command group whose usage errors print as one line `error: ...` (exit code 2), the form of every
    other error, instead of click's usage text or typer's boxed panel. A bare group still prints its help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        if not standalone_mode:  # the caller handles exceptions itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(click_errors, "NoArgsIsHelpError", ()) as e:  # click >= 8.2; before, help is an Exit
            typer.echo(e.ctx.get_help())
            code = e.exit_code
        except click_errors.ClickException as e:
            text = one_line(e.format_message()).rstrip(".")
            hint = f"; see '{e.ctx.command_path} --help'" if getattr(e, "ctx", None) is not None else ""
            typer.echo(f"error: {text[:1].lower()}{text[1:]}{hint}", err=True)
            code = e.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(help="Test-time training for ARC tasks.", no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=OneLineUsageErrors)
tasks_app = typer.Typer(help="Inspect tasks and datasets.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


def run() -> None:
    """The `testtime` command (and `python -m testtime`): the app, then an exit without the interpreter's teardown
    (`core.process_exit`)."""
    from testtime.core.process_exit import run_and_exit

    run_and_exit(lambda: app(prog_name="testtime"))


def fail(message: object) -> typer.Exit:
    """Print `error: message` as one line on stderr; return the Exit to raise."""
    text = one_line(message)
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

    from testtime.data.tasks import load_tasks

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
    from testtime.data.render import print_task, task_html, task_png
    from testtime.data.tasks import resolve_task

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
    from testtime.core.store import read_config, read_joint_summary, read_results
    from testtime.report.report import print_summary, write_report
    from testtime.text.tasks import is_text_task_path

    tasks = (read_config(run_dir) or {}).get("tasks")
    text = isinstance(tasks, str) and is_text_task_path(tasks)
    records = read_results(run_dir)
    odd = next((r for r in records if (r.get("kind") == "text") != text), None)
    if odd is not None:  # config.json and the records disagree on the kind of run: neither report would be right
        raise ValueError(f"{run_dir}: config.json names {'text' if text else 'grid'} tasks ({tasks}), but task "
                         f"{odd['task_id']}'s record is a {'grid' if text else 'text'} record")
    if text:
        from testtime.text.report import summary, write_text_report

        typer.echo(_text_summary(summary(records)))
        typer.echo(f"wrote {write_text_report(run_dir)}")
        return
    print_summary(records, console=_console(), joint=read_joint_summary(run_dir))
    typer.echo(f"wrote {write_report(run_dir)}")


@app.command("compare")
@cli_errors
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="The reference run folder (say, without TTT).")],
    run_b: Annotated[Path, typer.Argument(help="The run to judge against it, on the same tasks.")],
    png: Annotated[Path | None, typer.Option(help="Also draw the per-task scores of both runs to this PNG.")] = None,
    show: Annotated[int, typer.Option(help="List at most this many tasks whose scores differ.")] = 30,
    selection_a: Annotated[str | None, typer.Option(help="Score run A by this selection of its records (vote, poe, "
                                                         "greedy) instead of its attempts.")] = None,
    selection_b: Annotated[str | None, typer.Option(help="The same for run B (RUN_A and RUN_B may be one run).")] = None,
) -> None:
    """Pair two runs by task: totals, tasks won and lost, and an exact sign test (grid or text runs)."""
    from rich.table import Table

    from testtime.core.config import Range, check_value
    from testtime.report.compare import compare_runs, plot, read_both, settings_differ

    check_value("--show", show, Range(0, 10**6))

    records = read_both(run_a, run_b)  # once, for the pairing and the adapters a task
    cmp = compare_runs(run_a, run_b, selection_a, selection_b, records)
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
    won, lost, paired = cmp.items
    if paired:
        typer.echo(f"by query: {won} won, {lost} lost of {paired} paired; sign test p = {cmp.items_p_value:.3g}")
    differ = settings_differ(run_a, run_b, records)
    if differ:
        typer.echo("settings that differ (A -> B): " + "; ".join(differ))
    if png is not None:
        typer.echo(f"wrote {plot(cmp, png)}")


app.command("pretrain")(cli_errors(pretrain_command))
app.command("generate")(cli_errors(generate_command))
app.command("average")(cli_errors(average_command))
app.command("quantize")(cli_errors(quantize_command))
app.command("ship")(cli_errors(ship_command))


# ---------------------------------------------------------------- solving


@app.command("policies")
def policies_cmd() -> None:
    """List the test-time training policies that `evaluate --policy` takes."""
    from testtime.api import DEFAULT_POLICY, POLICIES

    for p in POLICIES.values():
        mark = " (default with --ttt)" if p.name == DEFAULT_POLICY else ""
        typer.echo(f"{p.name}{mark}: {p.summary}")


@app.command("recipes")
def recipes_cmd() -> None:
    """List the named recipes that `evaluate --recipe` and `solve --recipe` start from."""
    from testtime.api import RECIPES

    for r in RECIPES.values():
        typer.echo(f"{r.name}: {r.summary}")


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    tasks: Annotated[str | None, typer.Option(help="Dataset name, task file, challenges file, folder, or a text tasks "
                                                   ".jsonl file (default: arc1/eval).")] = None,
    model: opt.MODELS = None,
    ttt: opt.TTT = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (results.jsonl, report.html); resumes if it exists.")] = None,
    device: opt.DEVICE = None,
    views: opt.VIEWS = None,
    orders: opt.ORDERS = None,
    samples: opt.SAMPLES = None,
    epochs: opt.EPOCHS = None,
    lr: opt.LR = None,
    rank: opt.RANK = None,
    adapter: opt.ADAPTER = None,
    augment: opt.AUG = None,
    loo: opt.LOO = None,
    demo_loss: opt.DEMO = None,
    shared: opt.SHARED = False,
    config: opt.CONFIG = None,
    recipe: opt.RECIPE = None,
    policy: opt.POLICY = None,
    select: opt.SELECT = None,
    joint_samples: opt.JOINT = None,
    joint_dir: opt.JOINT_DIR = None,
    max_minutes: Annotated[float | None, typer.Option(help="Start no new batch of tasks after this long.")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Prompt+answer tokens per generation batch (default: sized to free memory).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A task file that fails validation stops the run (default: skip it, report it; a text tasks file is always read strictly).")] = False,
    cuda_graphs: Annotated[bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs", show_default=False, help="Replay the decode step as a CUDA graph (GPU; default: yes).")] = None,
    max_group: Annotated[int | None, typer.Option(help=f"Tasks trained and predicted together (default: {GROUP_SIZES['grid'][0]} grid or {GROUP_SIZES['text'][0]} text tasks on a GPU, {GROUP_SIZES['grid'][1]} or {GROUP_SIZES['text'][1]} on a CPU). Results are written as each group ends.")] = None,
    max_seconds: opt.MAX_SECONDS = None,
    icl: opt.ICL = None,
    ttt_data: opt.TTT_DATA = None,
    per_query: opt.PER_QUERY = False,
    max_queries: opt.MAX_QUERIES = None,
    adapters: opt.ADAPTERS = None, dfs: opt.DFS = None, second_round: opt.SECOND = None,
    budget: opt.BUDGET = None,
    audit_loo: opt.AUDIT_LOO = False,
    labels: opt.LABELS = None,
) -> None:
    """Solve a set of tasks and score them (pass@2 for grids); one JSON line per task, resumable, with an HTML report.

    Runs as is under torchrun (tasks sharded across ranks; rank 0 merges results and writes the report).
    """
    from testtime import api
    from testtime.core import distributed
    from testtime.core.config import MINUTES, SECONDS, ConfigError, check_value

    check_value("--max-minutes", max_minutes, MINUTES)
    check_value("--max-seconds", max_seconds, SECONDS)
    models = model or [None]
    cfg = api.build_config(tasks, recipe, config, dict(
        model=models[0], ttt=ttt, limit=limit, device=device, views=views, orders=orders, samples=samples, epochs=epochs,
        lr=lr, rank=rank, adapter=adapter, augment=augment, loo=loo, demo_loss=demo_loss, shared=shared or None,
        policy=policy, select=select, joint_samples=joint_samples, joint_dir=joint_dir, token_budget=token_budget,
        cuda_graphs=cuda_graphs, max_group=max_group, icl=icl, ttt_data=ttt_data, per_query=per_query or None,
        max_queries=max_queries, adapters=adapters, dfs=dfs, second_round=second_round,
        budget=budget, audit_loo=audit_loo or None), spell=opt.flag_name)
    tags = api.read_labels(labels) if labels is not None else None
    main = distributed.from_env().is_main  # under torchrun, rank 0 speaks for the run
    if isinstance(cfg, api.TextEvalConfig):  # text few-shot tasks (JSONL)
        if len(models) > 1:
            raise ConfigError("several --model combine grid runs; a text run takes one model")
        if max_seconds is not None or labels is not None:
            raise ConfigError(f"{'--max-seconds' if labels is None else '--labels'} applies to grid tasks, not text tasks")
        from testtime.text.report import summary

        run = api.run_evaluation(cfg, out, max_minutes=max_minutes, show_progress=main)
        if main:
            typer.echo(f"{_text_summary(summary(run.records))}; wrote {run.out / 'results.jsonl'}")
        return

    from testtime.core.store import read_config
    from testtime.data.tasks import load_task_set
    from testtime.report.report import print_summary

    limit_seconds = "auto" if max_seconds is None else max_seconds
    distributed.pick_device(cfg.device)  # a bad device fails before the tasks are read
    task_list, skipped = load_task_set(cfg.tasks, strict=strict)
    if main:
        for problem in skipped:
            typer.echo(f"skipped: {problem}", err=True)
    run_args = dict(tasks=task_list, skipped=skipped, max_minutes=max_minutes, max_seconds=limit_seconds,
                    show_progress=main, say=typer.echo if main else None, labels=tags)
    if len(models) > 1:
        runs, combined = api.run_checkpoints(cfg, models, out, **run_args)
        for r in runs:
            typer.echo(f"{r.out.name}: {read_config(r.out)['model'] or 'the shipped model'}")
            print_summary(r.records, console=_console())
        score = "" if combined["score"] is None else \
            f": {combined['score']:g} / {combined['n_scored']} ({combined['percent']:.2f}%)"
        where = runs[0].out.parent.parent
        typer.echo(f"combined {len(runs)} models' runs{score}; wrote {where / 'results.jsonl'} and "
                   f"{where / 'submission.json'}" + (f"; {len(skipped)} task file(s) skipped" if skipped else ""))
        return
    run = api.run_evaluation(cfg, out, **run_args)
    if main:
        from testtime.core.store import read_joint_summary

        print_summary(run.records, console=_console(), joint=read_joint_summary(run.out))
        if skipped:
            typer.echo(f"{len(skipped)} task file(s) skipped as invalid (listed in {run.out / 'summary.json'})")
        typer.echo(f"wrote {run.out / 'results.jsonl'}, {run.out / 'submission.json'} and {run.out / 'report.html'}")


@app.command("submit")
@cli_errors
def submit_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder holding results.jsonl (and config.json).")],
    out: Annotated[Path | None, typer.Option(help="Submission file; default RUN_DIR/submission.json.")] = None,
) -> None:
    """Write a Kaggle ARC Prize submission (two attempts per test input) from a run's results."""
    from testtime.core.store import SUBMISSION, read_config, read_results
    from testtime.data.tasks import load_tasks
    from testtime.report.submission import write_submission

    records = read_results(run_dir)
    tasks = []
    run_cfg = read_config(run_dir)
    if run_cfg is not None:  # so that tasks the run has not finished still get an (empty) entry
        tasks = load_tasks(run_cfg["tasks"])[: run_cfg.get("limit") or None]
    path = write_submission(records, out or run_dir / SUBMISSION, tasks=tasks)
    typer.echo(f"wrote {path} ({len(records)} task(s) with results)")


@app.command("combine")
@cli_errors
def combine_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Two run folders or more, of the same tasks; the first's attempts "
                                                    "come first.")],
    out: Annotated[Path, typer.Option(help="The combined run's folder (results.jsonl, summary.json, submission.json).")],
    tasks: Annotated[str | None, typer.Option(help="The runs' tasks, to score the combination, where no run's "
                                                   "config.json names them.")] = None,
) -> None:
    """One run from several: each run's first attempt, then their seconds (two attempts a test input in all)."""
    from testtime.report.combine import combine_runs

    s = combine_runs(runs, out, tasks)
    alone = ", ".join(f"{k} {v:g}" for k, v in (s["run_scores"] or {}).items())
    scored = f": {s['score']:g} / {s['n_scored']} ({s['percent']:.2f}%) against {alone}" if s["score"] is not None else ""
    typer.echo(f"combined {s['n_tasks']} tasks{scored}; wrote {out}")


@app.command("score")
@cli_errors
def score_cmd(
    submission: Annotated[Path, typer.Argument(help="A submission.json (Kaggle ARC Prize format).")],
    solutions: Annotated[str, typer.Option(help="Solutions file ({id: [grid, ...]}), dataset name, task file or folder.")],
) -> None:
    """Score a submission file against known answers: per task and in total."""
    from rich.table import Table

    from testtime.report.submission import score_submission

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
    model: opt.SOLVE_MODELS = None,
    ttt: opt.TTT = None,
    device: opt.DEVICE = None,
    dtype: opt.DTYPE = None,
    views: opt.VIEWS = None,
    samples: opt.SAMPLES = None,
    epochs: opt.EPOCHS = None,
    lr: opt.LR = None,
    adapter: opt.ADAPTER = None,
    recipe: opt.RECIPE = None,
    policy: opt.POLICY = None,
    select: opt.SELECT = None,
    html: Annotated[Path | None, typer.Option(help="Also write the task and both attempts as HTML.")] = None,
    max_seconds: opt.MAX_SECONDS = None,
    adapters: opt.ADAPTERS = None, dfs: opt.DFS = None, second_round: opt.SECOND = None,
) -> None:
    """Solve one task: test-time train, predict under augmentations, vote, print the two attempts."""
    import time

    start = time.perf_counter()  # the budget counts loading too

    from testtime import api
    from testtime.checkpoints import load_solver
    from testtime.core.config import SECONDS, check_value
    from testtime.data.tasks import resolve_task
    from testtime.recipes.grid import plan_of
    from testtime.stages.budget import total

    check_value("--max-seconds", max_seconds, SECONDS)
    t = resolve_task(task)
    models = model or [None]
    cfg = api.build_config(task, recipe, None, dict(
        model=models[0], ttt=ttt, device=device, views=views, samples=samples, epochs=epochs, lr=lr, adapter=adapter,
        policy=policy, select=select, adapters=adapters, dfs=dfs, second_round=second_round), spell=opt.flag_name)
    plan_of(cfg)  # an unknown or contradictory policy fails here, before the model loads
    solver = load_solver(models, device, dtype)
    res = solver.solve(t, recipe=cfg, max_seconds="auto" if max_seconds is None else max_seconds,
                       spent=time.perf_counter() - start, say=typer.echo)
    res.show(console=_console())
    if res.correct is not None:
        typer.echo(f"solved {sum(res.correct)}/{len(res.correct)} test input(s)")
    took = f"{time.perf_counter() - start:.1f} s end to end on {solver.device}"
    note = res.record.get("budget")
    if note:
        took += f" (estimated {note['spent'] + total(note['estimate']):.0f} s, budget {note['max_seconds']:g} s)"
    typer.echo(took)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(res.html())
        typer.echo(f"wrote {html}")
    from testtime.core.bytecode import hint

    if (slow_start := hint()) is not None:
        typer.echo(slow_start, err=True)


# `testtime serve` lives beside its service (testtime.serve), which imports FastAPI only when it starts.
app.command("serve")(cli_errors(serve_command))


if __name__ == "__main__":
    app()
