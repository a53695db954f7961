"""The `testtime` command line. Commands only map flags to library calls.

Layout: `app` holds top-level commands (pretrain, evaluate, solve, ...); `tasks_app`
groups the task inspection commands. Wrap every command in `@cli_errors` so a bad input
ends as one line `error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
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
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise fail(message) from None

    return wrapper  # type: ignore[return-value]


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
    """Print a run's summary and write RUN_DIR/report.html."""
    from testtime.report import print_summary, read_results, write_report

    print_summary(read_results(run_dir), console=_console())
    typer.echo(f"wrote {write_report(run_dir)}")


if __name__ == "__main__":
    app()
