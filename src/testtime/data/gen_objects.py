"""Objects in generated grids, and the primitives of `gen_programs` that act on objects or count them.

An object is an 8-connected component of non-background cells, whatever its colors: the input families place
objects a cell apart, so this one definition matches what a person sees. A primitive is a plain function of a grid
and its parameters that returns the new grid, or None where the rule is not well defined on that grid (a tie for
the largest object, two rays of different colors crossing): the generator keeps no pair where a step returned None.
Each primitive has a maker that draws its parameters for one task from the task's current grids (`Ctx`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from testtime.data.tasks import MAX_SIDE, N_COLORS

MAX_SIZE_CLASSES = 4  # most sizes that recolor_by_size gives a color each
MIN_BG_SHARE = 0.5  # below it, grids have no background that object primitives could rely on
SAMPLE = 3  # grids a scene-specific maker reads to tell whether the task's scenes are its kind
EIGHT = np.ones((3, 3), dtype=bool)
CROSS = ndimage.generate_binary_structure(2, 1)
RAY_DIRECTIONS = {
    "down": ((1, 0),), "up": ((-1, 0),), "right": ((0, 1),), "left": ((0, -1),),
    "row": ((0, 1), (0, -1)), "col": ((1, 0), (-1, 0)),
    "cross": ((1, 0), (-1, 0), (0, 1), (0, -1)), "diag": ((1, 1), (1, -1), (-1, 1), (-1, -1)),
}


Witness = Callable[[np.ndarray], frozenset]


class Step(NamedTuple):
    """One primitive with its parameters bound: a readable name, grid -> grid (None: not applicable), and what the
    rule relies on in a grid it reads (a mapped color, a size of a table, the sizes beside a threshold). The generator
    keeps only pairs where each such item is shown by at least two of them: a query never relies on what no other
    pair shows."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray | None]
    witness: Witness | None = None


@dataclass(frozen=True)
class Ctx:
    """What a primitive's parameters are drawn from: the task's current grids, one per pair."""

    grids: tuple[np.ndarray, ...]
    bg: int  # the most common color over all of them
    colors: tuple[int, ...]  # the other colors present in any of them, ascending
    bg_share: float  # the share of cells in the background color
    common: tuple[int, ...]  # the colors present in at least half of them, ascending

    @property
    def max_shape(self) -> tuple[int, int]:
        return max(g.shape[0] for g in self.grids), max(g.shape[1] for g in self.grids)


def context(grids: list[np.ndarray] | tuple[np.ndarray, ...]) -> Ctx:
    per_grid = np.array([np.bincount(g.ravel(), minlength=N_COLORS) for g in grids])
    counts = per_grid.sum(axis=0)
    bg = int(np.argmax(counts))
    colors = tuple(int(c) for c in np.flatnonzero(counts) if c != bg)
    common = tuple(int(c) for c in np.flatnonzero(2 * (per_grid > 0).sum(axis=0) >= len(grids)))
    return Ctx(tuple(grids), bg, colors, float(counts[bg] / counts.sum()), common)


Maker = Callable[[np.random.Generator, Ctx], Step | None]


def needs_background(make: Maker) -> Maker:
    """A maker that declines grids with no clear background (a mosaic): there, an "object" or "the background" is
    only the most common color by chance, and a rule about it could not be read from the examples."""
    return lambda rng, ctx: make(rng, ctx) if ctx.bg_share >= MIN_BG_SHARE else None


def other_color(rng: np.random.Generator, *avoid: int) -> int:
    return int(rng.choice([c for c in range(N_COLORS) if c not in avoid]))


@dataclass(frozen=True)
class Obj:
    top: int
    left: int
    mask: np.ndarray  # bool over the object's bounding box

    @property
    def size(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.mask.shape[0]), slice(self.left, self.left + self.mask.shape[1])


def objects(grid: np.ndarray, bg: int) -> list[Obj]:
    labels, _ = ndimage.label(grid != bg, structure=EIGHT)
    return [Obj(sl[0].start, sl[1].start, labels[sl] == i) for i, sl in enumerate(ndimage.find_objects(labels), 1)]


def n_components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=EIGHT)[1])


def clear_around(taken: np.ndarray, r: int, c: int, h: int, w: int) -> bool:
    """No taken cell within one cell of the h x w box at (r, c): shapes placed so never touch, not even at a corner,
    and read as separate objects under every definition."""
    return not taken[max(r - 1, 0) : r + h + 1, max(c - 1, 0) : c + w + 1].any()


def isolated(grid: np.ndarray, bg: int) -> np.ndarray:
    """Non-background cells with no non-background cell among their 8 neighbours."""
    fg = grid != bg
    h, w = fg.shape
    p = np.pad(fg, 1).astype(np.int8)
    neighbours = sum(p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - fg
    return fg & (neighbours == 0)


def _unique_extreme(values: list[int], largest: bool) -> int | None:
    """Index of the one largest (smallest) value, None on a tie: a rule about "the largest" needs one."""
    target = max(values) if largest else min(values)
    return values.index(target) if values.count(target) == 1 else None


def _ranked_colors(counts: dict[int, int]) -> list[int] | None:
    """Colors by count, most first; None when two counts tie (the order would be a guess)."""
    if len(set(counts.values())) < len(counts):
        return None
    return sorted(counts, key=lambda c: -counts[c])


def dominant(cells: np.ndarray, bg: int, any_fg: bool) -> int | None:
    """The most common color of `cells` (with `any_fg`: of its non-background cells, when it has one); None on a tie
    (a cell summarized by a block or a cell of the grid, `downscale`, `cell_summary`)."""
    if any_fg and (cells != bg).any():
        cells = cells[cells != bg]
    counts = np.bincount(cells.ravel())
    return None if (counts == counts.max()).sum() > 1 else int(counts.argmax())


# ---------------------------------------------------------------- primitives


def keep_extreme(grid: np.ndarray, bg: int, largest: bool) -> np.ndarray | None:
    objs = objects(grid, bg)
    if len(objs) < 2 or (i := _unique_extreme([o.size for o in objs], largest)) is None:
        return None
    out = np.full_like(grid, bg)
    box = objs[i].box
    out[box][objs[i].mask] = grid[box][objs[i].mask]
    return out


def recolor_rank(grid: np.ndarray, bg: int, table: tuple[int, ...]) -> np.ndarray | None:
    """The largest object takes table[0], the next table[1], ...; the others keep their colors."""
    objs = sorted(objects(grid, bg), key=lambda o: -o.size)
    sizes = [o.size for o in objs][: len(table) + 1]
    if len(objs) < len(table) or len(set(sizes)) < len(sizes):
        return None
    out = grid.copy()
    for o, color in zip(objs, table, strict=False):
        out[o.box][o.mask] = color
    return out


def colors_in(grid: np.ndarray, among: frozenset[int]) -> frozenset:
    """The colors of `among` that the grid holds: the entries of a color rule that this grid shows."""
    return frozenset(c for c in np.unique(grid).tolist() if c in among)


def sizes_in(grid: np.ndarray, bg: int) -> frozenset:
    """The grid's object sizes: the entries of a size -> color table that it shows."""
    return frozenset(o.size for o in objects(grid, bg))


def sizes_beside(grid: np.ndarray, bg: int, least: int) -> frozenset:
    """The largest size below the threshold and the smallest at or above it: where a threshold rule is learned
    from. When the task's closest sizes either side are each shown by two pairs, leaving out the query leaves the
    gap the demonstrations show, so no query object falls in a gap where the threshold could lie."""
    sizes = {o.size for o in objects(grid, bg)}
    below, above = [s for s in sizes if s < least], [s for s in sizes if s >= least]
    return frozenset(([("<", max(below))] if below else []) + ([(">=", min(above))] if above else []))


def recolor_size(grid: np.ndarray, bg: int, table: dict[int, int], least: int | None, big: int) -> np.ndarray:
    """An object of a size in `table` takes that color; with a threshold `least`, an object of that size or more
    takes `big` and the smaller ones keep theirs."""
    out = grid.copy()
    for o in objects(grid, bg):
        color = big if least is not None and o.size >= least else table.get(o.size)
        if color is not None:
            out[o.box][o.mask] = color
    return out


def fill_enclosed(grid: np.ndarray, bg: int, color: int) -> np.ndarray:
    fg = grid != bg
    holes = ndimage.binary_fill_holes(fg) & ~fg
    return np.where(holes, np.uint8(color), grid)


def hollow(grid: np.ndarray, bg: int) -> np.ndarray:
    fg = grid != bg
    interior = ndimage.binary_erosion(fg, structure=CROSS, border_value=0)
    return np.where(interior, np.uint8(bg), grid)


def halo(grid: np.ndarray, bg: int, color: int, diagonal: bool) -> np.ndarray:
    fg = grid != bg
    ring = ndimage.binary_dilation(fg, structure=EIGHT if diagonal else CROSS) & ~fg
    return np.where(ring, np.uint8(color), grid)


def boxes(grid: np.ndarray, bg: int, color: int, frame: bool) -> np.ndarray:
    """Each object's bounding box: its background cells filled, or a frame drawn one cell outside it."""
    out = grid.copy()
    h, w = grid.shape
    for o in objects(grid, bg):
        if not frame:
            region = out[o.box]
            region[region == bg] = color
            continue
        r0, c0, r1, c1 = o.top - 1, o.left - 1, o.top + o.mask.shape[0], o.left + o.mask.shape[1]
        ring = np.zeros_like(grid, dtype=bool)
        for r in (r0, r1):
            if 0 <= r < h:
                ring[r, max(c0, 0) : c1 + 1] = True
        for c in (c0, c1):
            if 0 <= c < w:
                ring[max(r0, 0) : r1 + 1, c] = True
        out[ring & (grid == bg)] = color
    return out


def remove_small(grid: np.ndarray, bg: int, below: int) -> np.ndarray:
    out = grid.copy()
    for o in objects(grid, bg):
        if o.size < below:
            out[o.box][o.mask] = bg
    return out


def drop_border_objects(grid: np.ndarray, bg: int) -> np.ndarray:
    out = grid.copy()
    h, w = grid.shape
    for o in objects(grid, bg):
        if o.top == 0 or o.left == 0 or o.top + o.mask.shape[0] == h or o.left + o.mask.shape[1] == w:
            out[o.box][o.mask] = bg
    return out


def recolor_holed(grid: np.ndarray, bg: int, color: int) -> np.ndarray:
    """Objects that enclose background take `color`."""
    out = grid.copy()
    for o in objects(grid, bg):
        if ndimage.binary_fill_holes(o.mask).sum() > o.size:
            out[o.box][o.mask] = color
    return out


def rays(grid: np.ndarray, bg: int, directions: tuple[tuple[int, int], ...]) -> np.ndarray | None:
    """From each single pixel, a ray of its color over background to the border or the first non-background cell.
    Two rays of different colors crossing make the rule ambiguous (which wins?): None."""
    out = grid.copy()
    h, w = grid.shape
    for r, c in np.argwhere(isolated(grid, bg)).tolist():
        color = grid[r, c]
        for dy, dx in directions:
            y, x = r + dy, c + dx
            while 0 <= y < h and 0 <= x < w and grid[y, x] == bg:
                if out[y, x] not in (bg, color):
                    return None
                out[y, x] = color
                y, x = y + dy, x + dx
    return out


def _join_runs(line: np.ndarray, lone: np.ndarray, out: np.ndarray, bg: int) -> bool:
    """Fill background between consecutive same-colored single pixels (`lone`) of a row or column (views), with
    nothing in between; False on a clash."""
    idx = np.flatnonzero(line != bg)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if b > a + 1 and line[a] == line[b] and lone[a] and lone[b]:
            seg = out[a + 1 : b]
            if ((seg != bg) & (seg != line[a])).any():
                return False
            seg[:] = line[a]
    return True


def connect(grid: np.ndarray, bg: int) -> np.ndarray | None:
    """A line between two single pixels of one color that face each other along a row or column across
    background. Pixels only: between any two cells of a color, the insides of shapes would fill instead."""
    out, lone = grid.copy(), isolated(grid, bg)
    rows_ok = all(_join_runs(grid[r], lone[r], out[r], bg) for r in range(grid.shape[0]))
    cols_ok = all(_join_runs(grid[:, c], lone[:, c], out[:, c], bg) for c in range(grid.shape[1]))
    return out if rows_ok and cols_ok else None


def count_bar(grid: np.ndarray, bg: int, vertical: bool) -> np.ndarray | None:
    """A bar in the most common color, one cell per object of that color."""
    counts = {c: int((grid == c).sum()) for c in np.unique(grid).tolist() if c != bg}
    ranked = _ranked_colors(counts) if counts else None
    if ranked is None:
        return None
    n = n_components(grid == ranked[0])
    return np.full((n, 1) if vertical else (1, n), ranked[0], dtype=np.uint8) if n <= MAX_SIDE else None


def count_rows(grid: np.ndarray, bg: int) -> np.ndarray | None:
    """A histogram: a row per color, most objects first, as many cells as it has objects."""
    counts = {c: n_components(grid == c) for c in np.unique(grid).tolist() if c != bg}
    ranked = _ranked_colors(counts) if counts else None
    if ranked is None or counts[ranked[0]] > MAX_SIDE:
        return None
    out = np.full((len(ranked), counts[ranked[0]]), bg, dtype=np.uint8)
    for i, c in enumerate(ranked):
        out[i, : counts[c]] = c
    return out


def majority(grid: np.ndarray, bg: int, side: int) -> np.ndarray | None:
    """A side x side square of the most common non-background color."""
    counts = {c: int((grid == c).sum()) for c in np.unique(grid).tolist() if c != bg}
    ranked = _ranked_colors(counts) if counts else None
    return None if ranked is None else np.full((side, side), ranked[0], dtype=np.uint8)


# ---------------------------------------------------------------- makers (a task's parameters)


def _keep(rng: np.random.Generator, ctx: Ctx) -> Step:
    largest = bool(rng.random() < 0.6)
    return Step("keep_largest" if largest else "keep_smallest", partial(keep_extreme, bg=ctx.bg, largest=largest))


def _recolor_rank(rng: np.random.Generator, ctx: Ctx) -> Step:
    n = int(rng.integers(1, 4))
    table = tuple(other_color(rng, ctx.bg) for _ in range(n))
    return Step(f"recolor_rank{n}", partial(recolor_rank, bg=ctx.bg, table=table))


def _recolor_size(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    # A size seen in one grid only could be the test pair's, its color then unseen in the demonstrations.
    seen = collections.Counter(s for g in ctx.grids for s in {o.size for o in objects(g, ctx.bg)})
    sizes = sorted(seen)
    if len(sizes) < 2 or min(seen.values()) < 2:
        return None
    if rng.random() < 0.5:
        least = sizes[int(rng.integers(1, len(sizes)))]
        big = other_color(rng, ctx.bg)
        fn = partial(recolor_size, bg=ctx.bg, table={}, least=least, big=big)
        return Step("recolor_big", fn, partial(sizes_beside, bg=ctx.bg, least=least))
    if len(sizes) > MAX_SIZE_CLASSES:  # a color for each of many sizes would be a table, not a rule
        return None
    colors = rng.permutation([c for c in range(N_COLORS) if c != ctx.bg])
    table = {s: int(colors[i]) for i, s in enumerate(sizes)}
    fn = partial(recolor_size, bg=ctx.bg, table=table, least=None, big=0)
    return Step("recolor_by_size", fn, partial(sizes_in, bg=ctx.bg))


def _colored(name: str, fn: Callable[..., np.ndarray | None]) -> Maker:
    """A maker for a primitive whose only parameter is a color other than the background."""

    def make(rng: np.random.Generator, ctx: Ctx) -> Step:
        return Step(name, partial(fn, bg=ctx.bg, color=other_color(rng, ctx.bg)))

    return make


def _halo(rng: np.random.Generator, ctx: Ctx) -> Step:
    diagonal = bool(rng.random() < 0.5)
    color = other_color(rng, ctx.bg)
    return Step(f"halo{8 if diagonal else 4}", partial(halo, bg=ctx.bg, color=color, diagonal=diagonal))


def _boxes(rng: np.random.Generator, ctx: Ctx) -> Step:
    frame = bool(rng.random() < 0.5)
    color = other_color(rng, ctx.bg)
    return Step("bbox_frame" if frame else "bbox_fill", partial(boxes, bg=ctx.bg, color=color, frame=frame))


def _remove_small(rng: np.random.Generator, ctx: Ctx) -> Step:
    below = 2 if rng.random() < 0.7 else int(rng.integers(3, 5))
    return Step("denoise" if below == 2 else f"remove_below{below}", partial(remove_small, bg=ctx.bg, below=below))


def _rays(rng: np.random.Generator, ctx: Ctx) -> Step:
    name = list(RAY_DIRECTIONS)[int(rng.integers(len(RAY_DIRECTIONS)))]
    return Step(f"rays_{name}", partial(rays, bg=ctx.bg, directions=RAY_DIRECTIONS[name]))


def _count_bar(rng: np.random.Generator, ctx: Ctx) -> Step:
    vertical = bool(rng.random() < 0.3)
    return Step("count_column" if vertical else "count_bar", partial(count_bar, bg=ctx.bg, vertical=vertical))


def _majority(rng: np.random.Generator, ctx: Ctx) -> Step:
    side = int(rng.integers(1, 4))
    return Step(f"majority{side}", partial(majority, bg=ctx.bg, side=side))


def _fixed(name: str, fn: Callable[..., np.ndarray | None]) -> Maker:
    return lambda rng, ctx: Step(name, partial(fn, bg=ctx.bg))


_OBJECT_MAKERS: dict[str, Maker] = {
    "keep": _keep,
    "recolor_rank": _recolor_rank,
    "recolor_size": _recolor_size,
    "fill_enclosed": _colored("fill_enclosed", fill_enclosed),
    "hollow": _fixed("hollow", hollow),
    "halo": _halo,
    "bbox": _boxes,
    "remove_small": _remove_small,
    "drop_border": _fixed("drop_border", drop_border_objects),
    "recolor_holed": _colored("recolor_holed", recolor_holed),
    "rays": _rays,
    "connect": _fixed("connect", connect),
    "count_bar": _count_bar,
    "count_rows": _fixed("count_rows", count_rows),
    "majority": _majority,
}
OBJECT_MAKERS = {name: needs_background(make) for name, make in _OBJECT_MAKERS.items()}
