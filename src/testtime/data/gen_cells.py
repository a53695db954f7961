"""Grids divided into cells: the "cells" input family (separator lines of one color cut the grid into an r x c
array of equal cells, each with a small content) and the primitives that read the cells: odd_cell, overlay_cells,
cell_summary, fill_marked_cells.

A grid is read as cells (`split_cells`) when the full rows and columns of the separator color are single lines at
equal spacing, none on the border, and that color appears nowhere else: then the cells are what a person sees,
and a rule about "each cell" has one meaning.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from testtime.data.gen_objects import SAMPLE, Ctx, Maker, Step, colors_in, dominant, other_color
from testtime.data.tasks import N_COLORS

if TYPE_CHECKING:
    from testtime.data.gen_style import Style

OVERLAYS = {
    "or": lambda masks: masks.any(axis=0),
    "and": lambda masks: masks.all(axis=0),
    "xor": lambda masks: masks.sum(axis=0) == 1,  # set in exactly one cell (the usual xor for two)
}


def _bands(n: int, lines: np.ndarray) -> list[slice] | None:
    """The equal bands between single lines at `lines` across a side of n cells, or None when they are not."""
    m = len(lines) + 1
    side, rest = divmod(n - len(lines), m)
    if rest or side < 1 or lines.tolist() != [k * (side + 1) - 1 for k in range(1, m)]:
        return None
    return [slice(k * (side + 1), k * (side + 1) + side) for k in range(m)]


def split_cells(grid: np.ndarray, sep: int) -> list[list[np.ndarray]] | None:
    """The grid's cells, row by row (views), or None unless the separator lines cut it into at least two equal
    cells and the separator color is on the lines only."""
    on = grid == sep
    rows, cols = np.flatnonzero(on.all(axis=1)), np.flatnonzero(on.all(axis=0))
    if not len(rows) and not len(cols):
        return None
    (h, w), row_bands, col_bands = grid.shape, _bands(grid.shape[0], rows), _bands(grid.shape[1], cols)
    if row_bands is None or col_bands is None or on.sum() != len(rows) * w + len(cols) * (h - len(rows)):
        return None
    return [[grid[r, c] for c in col_bands] for r in row_bands]


def _assemble(cells: list[list[np.ndarray]], sep: int) -> np.ndarray:
    """Cells joined row by row with separator lines between them (the inverse of split_cells)."""
    ch, cw = cells[0][0].shape
    bar = np.full((ch, 1), sep, dtype=np.uint8)
    rows = [np.concatenate([x for c in row for x in (bar, c)][1:], axis=1) for row in cells]
    line = np.full((1, rows[0].shape[1]), sep, dtype=np.uint8)
    return np.concatenate([x for r in rows for x in (line, r)][1:], axis=0)


# ---------------------------------------------------------------- primitives


def odd_cell(grid: np.ndarray, sep: int) -> np.ndarray | None:
    """The one cell that differs from all the others, which are all alike; None unless there is exactly one (so
    three cells at least)."""
    cells = split_cells(grid, sep)
    flat = [c for row in cells for c in row] if cells else []
    counts = Counter(c.tobytes() for c in flat)
    if len(flat) < 3 or len(counts) != 2 or min(counts.values()) != 1:
        return None
    return next(c for c in flat if counts[c.tobytes()] == 1).copy()


def overlay_cells(grid: np.ndarray, sep: int, bg: int, op: str, color: int) -> np.ndarray | None:
    """One cell-sized grid: `color` where op (or, and, xor: exactly one) of "this cell is not background" over all
    the cells holds, background elsewhere."""
    cells = split_cells(grid, sep)
    if cells is None:
        return None
    masks = np.stack([c != bg for row in cells for c in row])
    return np.where(OVERLAYS[op](masks), np.uint8(color), np.uint8(bg))


def cell_summary(grid: np.ndarray, sep: int, bg: int, marker: int | None, mark: int) -> np.ndarray | None:
    """An r x c grid, a pixel per cell: `mark` where the cell holds the `marker` color, else the cell's most common
    color other than the background (the background where it has none); None on a tie."""
    cells = split_cells(grid, sep)
    if cells is None:
        return None
    out = np.full((len(cells), len(cells[0])), bg, dtype=np.uint8)
    for (r, c), cell in zip(np.ndindex(out.shape), (c for row in cells for c in row), strict=True):
        if marker is not None and (cell == marker).any():
            out[r, c] = mark
            continue
        color = dominant(cell, bg, any_fg=True)
        if color is None:
            return None
        out[r, c] = color
    return out


def fill_marked_cells(grid: np.ndarray, sep: int, marker: int) -> np.ndarray | None:
    """Each cell that holds a pixel of the marker color is filled with it whole; the lines and the other cells stay."""
    out = grid.copy()
    cells = split_cells(out, sep)  # views into the copy
    if cells is None:
        return None
    for row in cells:
        for cell in row:
            if (cell == marker).any():
                cell[:] = marker
    return out


# ---------------------------------------------------------------- the "cells" input family


def _content(rng: np.random.Generator, style: Style, side: int, colors: tuple[int, ...]) -> np.ndarray:
    """A cell: background with about `density` of it, one pixel at least, in `colors` (drawn for each pixel)."""
    on = rng.random((side, side)) < style.density
    on.flat[rng.integers(on.size)] = True
    pal = np.asarray(colors, dtype=np.uint8)
    return np.where(on, pal[rng.integers(len(pal), size=on.shape)], np.uint8(style.bg)).astype(np.uint8)


def _inks(rng: np.random.Generator, style: Style, n: int, colors: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The colors of n cells: all of `colors` mixed in each (`multicolor`), or one each, every one of them in some
    cell when there are enough cells (every input then shows the task's colors)."""
    if style.multicolor:
        return [colors] * n
    return [(int(c),) for c in rng.permutation(np.resize(rng.permutation(colors), n))]


def _odd_one_out(rng: np.random.Generator, style: Style, base: np.ndarray, colors: tuple[int, ...]) -> np.ndarray:
    """A copy of `base` with one or two cells changed to another of the background and `colors`."""
    odd = base.copy().ravel()
    for i in rng.choice(odd.size, size=int(rng.integers(1, 3)), replace=False).tolist():
        odd[i] = rng.choice([x for x in (style.bg, *colors) if x != odd[i]])
    return odd.reshape(base.shape)


def draw_cells(rng: np.random.Generator, style: Style) -> np.ndarray:
    """An input of the "cells" family: r x c cells (`count` bounds r and c) of side `extent[0]` between lines of
    palette[0]. Each cell's content fits a layout: "odd" all cells alike but one, "random" each its own, "marked"
    each its own and some with a pixel of the last palette color (a marker, in no content)."""
    side = style.extent[0]
    lo, hi = style.count
    r = int(rng.integers(lo, hi + 1))
    c = r if style.square else int(rng.integers(lo, hi + 1))
    if r * c < (3 if style.layout == "odd" else 2):  # an odd one out needs two others to differ from
        r, c = (2, 2) if style.square or style.layout == "odd" else (1, 2)
    sep, colors = style.palette[0], style.palette[1:]
    if style.layout == "marked":
        colors = colors[:-1]
    if style.layout == "odd":
        base = _content(rng, style, side, _inks(rng, style, 1, colors)[0])
        cells = [base] * (r * c)
        cells[int(rng.integers(r * c))] = _odd_one_out(rng, style, base, colors)
    else:
        cells = [_content(rng, style, side, ink) for ink in _inks(rng, style, r * c, colors)]
    if style.layout == "marked":
        marked = rng.random(r * c) < 0.4
        marked[int(rng.integers(r * c))] = True  # a marker in every input: the rule shows in each pair
        for i in np.flatnonzero(marked):
            cells[i] = cells[i].copy()
            cells[i][tuple(rng.integers(0, side, size=2))] = style.palette[-1]
    return _assemble([cells[i * c : (i + 1) * c] for i in range(r)], sep)


# ---------------------------------------------------------------- makers (a task's parameters)


def grid_lines(ctx: Ctx) -> tuple[int, int] | None:
    """The separator color (one that cuts each of the first SAMPLE grids into cells) and the cells' background (the
    most common other color), or None."""
    seps: set[int] | None = None
    for g in ctx.grids[:SAMPLE]:
        here = {c for c in ctx.common if split_cells(g, c) is not None}
        seps = here if seps is None else seps & here
        if not seps:
            return None
    sep = min(seps)
    counts = sum(np.bincount(g.ravel(), minlength=N_COLORS) for g in ctx.grids)
    counts[sep] = -1
    return sep, int(np.argmax(counts))


def _cells_maker(make) -> Maker:
    """A maker that reads the grid lines first and declines grids that are not cut into cells."""

    def maker(rng: np.random.Generator, ctx: Ctx) -> Step | None:
        lines = grid_lines(ctx)
        return None if lines is None else make(rng, ctx, *lines)

    return maker


def _witness(*colors: int):
    return partial(colors_in, among=frozenset(colors))


def _odd(rng: np.random.Generator, ctx: Ctx, sep: int, bg: int) -> Step:
    return Step("odd_cell", partial(odd_cell, sep=sep), _witness(sep))


def _overlay(rng: np.random.Generator, ctx: Ctx, sep: int, bg: int) -> Step:
    op = list(OVERLAYS)[int(rng.integers(len(OVERLAYS)))]
    color = other_color(rng, bg, sep)
    return Step(f"overlay_cells_{op}", partial(overlay_cells, sep=sep, bg=bg, op=op, color=color), _witness(sep))


def _marker(ctx: Ctx, sep: int, bg: int) -> int | None:
    """The marker: the rarest color other than the lines' and the background that every grid holds (every pair then
    shows what the rule does with it) and the first SAMPLE grids hold as a pixel here and there, no more pixels than
    cells (the color of a whole half, always in one place, would make "fill the marked cell" a constant)."""

    def sparse(c: int) -> bool:
        return all((g == c).sum() <= sum(map(len, split_cells(g, sep))) for g in ctx.grids[:SAMPLE])

    colors = [c for c in ctx.common if c not in (sep, bg) and all((g == c).any() for g in ctx.grids) and sparse(c)]
    if not colors:
        return None
    return min(colors, key=lambda c: (sum(int((g == c).sum()) for g in ctx.grids), c))


def _summary(rng: np.random.Generator, ctx: Ctx, sep: int, bg: int) -> Step:
    marker = _marker(ctx, sep, bg)
    if marker is None or rng.random() < 0.5:
        return Step("cell_summary", partial(cell_summary, sep=sep, bg=bg, marker=None, mark=bg), _witness(sep))
    mark = other_color(rng, bg, sep)
    fn = partial(cell_summary, sep=sep, bg=bg, marker=marker, mark=mark)
    return Step("cell_summary_marked", fn, _witness(sep, marker))


def _fill_marked(rng: np.random.Generator, ctx: Ctx, sep: int, bg: int) -> Step | None:
    marker = _marker(ctx, sep, bg)
    if marker is None:
        return None
    return Step("fill_marked_cells", partial(fill_marked_cells, sep=sep, marker=marker), _witness(sep, marker))


CELL_MAKERS: dict[str, Maker] = {
    "odd_cell": _cells_maker(_odd),
    "overlay_cells": _cells_maker(_overlay),
    "cell_summary": _cells_maker(_summary),
    "fill_marked_cells": _cells_maker(_fill_marked),
}
