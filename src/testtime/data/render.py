"""Drawing grids and tasks: plain text, colored terminal (rich), PNG (matplotlib) and HTML.

Every renderer uses ARC's standard 10-color palette. `predictions`, where accepted, holds
one entry per test input: a sequence of attempt grids (None for an attempt not made).
An attempt is framed green when it equals the known answer, red when it does not, and
grey when the answer is unknown.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from testtime.data.tasks import Grid, Task, grid_text, grids_equal, shape_text

PALETTE = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 sky
    "#870C25",  # 9 maroon
)
GOOD, BAD, UNKNOWN = "#2ECC40", "#FF4136", "#888888"

Predictions = Sequence[Sequence[Grid | None]]


def verdict_color(attempt: Grid | None, truth: Grid | None) -> str:
    """Frame color for an attempt: green if right, red if wrong, grey if the answer is unknown."""
    if truth is None:
        return UNKNOWN
    return GOOD if attempt is not None and grids_equal(np.asarray(attempt, dtype=np.uint8), truth) else BAD


def _attempts(predictions: Predictions | None, i: int) -> list[Grid | None]:
    if predictions is None or i >= len(predictions):
        return []
    return [None if a is None else np.asarray(a, dtype=np.uint8) for a in predictions[i]]


# ---------------------------------------------------------------- terminal (rich)


def grid_rich(grid: Grid | None, digits: bool = False):
    """A rich Text: two spaces per cell on the cell's background color (or plain digits, for pipes)."""
    from rich.text import Text

    if grid is None:
        return Text("?")
    if digits:
        return Text("\n".join(grid_text(grid)))
    text = Text()
    for r, row in enumerate(grid):
        if r:
            text.append("\n")
        for c in row:
            text.append("  ", style=f"on {PALETTE[int(c)]}")
    return text


def task_rich(task: Task, predictions: Predictions | None = None, digits: bool = False):
    """A rich renderable of the whole task: one row per example, input -> output (-> attempts)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = [Text(f"Task {task.id}", style="bold")]
    for part, examples in (("train", task.train), ("test", task.test)):
        for i, e in enumerate(examples):
            attempts = _attempts(predictions, i) if part == "test" else []
            table = Table.grid(padding=(0, 2))
            cells = [grid_rich(e.input, digits), Text("->"), grid_rich(e.output, digits)]
            header = [f"{part}[{i}] {shape_text(e.input)}", "", f"output {shape_text(e.output)}"]
            for k, a in enumerate(attempts):
                ok = verdict_color(a, e.output)
                header.append(Text(f"attempt {k + 1} {shape_text(a)}", style=ok))
                cells.append(grid_rich(a, digits))
            table.add_row(*header)
            table.add_row(*cells)
            parts.append(table)
    return Group(*parts)


def print_task(task: Task, predictions: Predictions | None = None, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    # Without colors (output piped to a file), blank cells would say nothing: print digits instead.
    console.print(task_rich(task, predictions, digits=console.color_system is None))


# ---------------------------------------------------------------- PNG (matplotlib, Agg)


def _draw(ax, grid: Grid | None, title: str, frame: str | None = None) -> None:
    from matplotlib.colors import ListedColormap

    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if grid is None:
        ax.text(0.5, 0.5, "?", ha="center", va="center", fontsize=16, transform=ax.transAxes)
    else:
        h, w = grid.shape
        ax.imshow(grid, cmap=ListedColormap(PALETTE), vmin=0, vmax=9, interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
        ax.grid(which="minor", color="#555555", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_edgecolor(frame or "#555555")
        spine.set_linewidth(3 if frame else 1)


def _save(fig, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def grid_png(grid: Grid, path: str | Path, title: str = "") -> Path:
    from matplotlib.figure import Figure

    h, w = grid.shape
    fig = Figure(figsize=(max(1.5, w * 0.25), max(1.5, h * 0.25) + 0.3), dpi=100)
    _draw(fig.add_subplot(), grid, title)
    return _save(fig, path)


def task_png(task: Task, path: str | Path, predictions: Predictions | None = None) -> Path:
    """One column per example (train then test); rows: input, output, then each attempt."""
    from matplotlib.figure import Figure

    examples = [("train", i, e) for i, e in enumerate(task.train)] + [("test", i, e) for i, e in enumerate(task.test)]
    n_attempts = max((len(_attempts(predictions, i)) for i in range(len(task.test))), default=0)
    rows, cols = 2 + n_attempts, len(examples)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows), dpi=100)
    fig.suptitle(f"Task {task.id}", fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False)
    for c, (part, i, e) in enumerate(examples):
        _draw(axes[0][c], e.input, f"{part}[{i}] in {shape_text(e.input)}")
        _draw(axes[1][c], e.output, f"out {shape_text(e.output)}")
        attempts = _attempts(predictions, i) if part == "test" else []
        for k in range(n_attempts):
            ax = axes[2 + k][c]
            if k < len(attempts):
                a = attempts[k]
                _draw(ax, a, f"attempt {k + 1} {shape_text(a)}", verdict_color(a, e.output))
            else:
                ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- HTML

CSS = (
    "table.g{border-collapse:collapse;display:inline-table;margin:2px;vertical-align:top}"
    "table.g td{width:12px;height:12px;padding:0;border:1px solid #444;background:#000}"
    # A caption sits above its table, not in it: a table's caption wider than its grid would widen the cells too.
    ".gc{display:inline-block;margin:2px;vertical-align:top;font:11px sans-serif;white-space:nowrap}"
    ".gc>table.g{display:table;margin:4px 0 0}"  # room for an attempt's frame (outline) below the caption
    + "".join(f"table.g td.c{i}{{background:{c}}}" for i, c in enumerate(PALETTE))
    + ".ex{display:inline-block;margin:4px 12px 4px 0;vertical-align:top}"
    "table.g td.missing{width:40px;height:40px;border:1px dashed #888;background:#fff;text-align:center}"
)


def grid_html(grid: Grid | None, *, caption: str = "", border: str | None = None, css: bool = True) -> str:
    """A grid as an HTML table; with `css` the stylesheet comes along so the snippet stands alone."""
    style = f' style="outline:3px solid {border};outline-offset:1px"' if border else ""
    if grid is None:
        body = f'<table class="g"{style}><tr><td class="missing">?</td></tr></table>'
    else:
        # Terse on purpose (end tags are optional, color 0 is the default): reports hold thousands of grids.
        rows = "".join("<tr>" + "".join(f"<td class=c{c}>" if c else "<td>" for c in row.tolist()) for row in grid)
        body = f'<table class="g"{style}>{rows}</table>'
    if caption:
        body = f'<div class="gc">{html.escape(caption)}{body}</div>'
    return (f"<style>{CSS}</style>" if css else "") + body


# A report's task sections are laid out only as they come into view: a 400-task report (15 MB, 1.7M cells) then
# loads in under 3 s instead of 17-20 in headless Chromium on the 2-core CPU (results/report-browser-2026-12-04.md).
PAGE_CSS = "body{font-family:sans-serif}section{content-visibility:auto;contain-intrinsic-size:auto 1000px}"


def html_page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{PAGE_CSS}{CSS}</style></head><body>{body}</body></html>\n"
    )


def task_section(task: Task, predictions: Predictions | None = None) -> str:
    """The task as an HTML fragment (needs `CSS`, which `html_page` provides)."""
    out = [f"<h2>Task {html.escape(task.id)}</h2>"]
    for part, examples in (("train", task.train), ("test", task.test)):
        for i, e in enumerate(examples):
            cells = [
                grid_html(e.input, caption=f"{part}[{i}] input {shape_text(e.input)}", css=False),
                grid_html(e.output, caption=f"output {shape_text(e.output)}", css=False),
            ]
            if part == "test":
                for k, a in enumerate(_attempts(predictions, i)):
                    cells.append(grid_html(a, caption=f"attempt {k + 1}", border=verdict_color(a, e.output), css=False))
            out.append('<div class="ex">' + "".join(cells) + "</div>")
    return "\n".join(out)


def task_html(task: Task, predictions: Predictions | None = None) -> str:
    """A self-contained HTML page showing the task (and attempts, if given)."""
    return html_page(f"Task {task.id}", task_section(task, predictions))
