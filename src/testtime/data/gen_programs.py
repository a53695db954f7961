"""Procedurally generated ARC tasks: a program of 1-3 grid primitives applied to random inputs of one style.

`generate_task` draws an input family and its style (`gen_grids`), the task's inputs, then the program one step at
a time: a primitive with its parameters drawn from the current grids (`Ctx`), kept only when it applies to every
pair and changes at least one of them (a step that is the identity on all of a task's inputs teaches nothing, and
one that fails on a pair makes the task ill-posed). The finished task passes the filters below or is dropped.

The primitives here act on whole grids; those about objects and counts live in `gen_objects`, moves in
`gen_moves`, periodic patterns in `gen_patterns`, arrays of cells in `gen_cells`, template stamping in `gen_stamps`,
lines from single pixels and moves to the largest object in `gen_lines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from testtime.data.augment import D8_NAMES, dihedral
from testtime.data.gen_cells import CELL_MAKERS
from testtime.data.gen_grids import draw_inputs, draw_style
from testtime.data.gen_lines import LINE_MAKERS
from testtime.data.gen_moves import MOVE_MAKERS, SIDES, turned_down
from testtime.data.gen_objects import (
    OBJECT_MAKERS,
    Ctx,
    Maker,
    Step,
    colors_in,
    context,
    needs_background,
    other_color,
)
from testtime.data.gen_pairs import choose_pairs
from testtime.data.gen_patterns import PATTERN_MAKERS
from testtime.data.gen_stamps import STAMP_MAKERS
from testtime.data.sources import grid_key
from testtime.data.tasks import MAX_SIDE, N_COLORS, Example, freeze, grids_equal

STEP_COUNTS = np.array([0.45, 0.4, 0.15])  # P(program of 1, 2, 3 primitives)
# Primitives tried for one step before the program stops growing. About half the weight is on primitives of one
# kind of scene (WEIGHTS), which decline at once elsewhere: 24 tries leave about 11 for the others, as the 12 tries
# did before those came.
STEP_TRIES = 24
POOL = 2  # candidate inputs drawn for each pair a task needs


@dataclass(frozen=True)
class GenTask:
    name: str  # "family|primitive>primitive", e.g. "objects|keep_largest>rot90"
    pairs: tuple[Example, ...]


# ---------------------------------------------------------------- primitives on whole grids


def recolor(grid: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[grid]


def upscale(grid: np.ndarray, ky: int, kx: int) -> np.ndarray:
    return np.repeat(np.repeat(grid, ky, axis=0), kx, axis=1)


def tile(grid: np.ndarray, ny: int, nx: int, mirror: bool) -> np.ndarray:
    """ny x nx copies; mirrored, every other copy flips so neighbours meet as reflections."""
    rows = []
    for i in range(ny):
        row = grid[::-1] if mirror and i % 2 else grid
        rows.append(np.concatenate([row[:, ::-1] if mirror and j % 2 else row for j in range(nx)], axis=1))
    return np.concatenate(rows, axis=0)


def crop(grid: np.ndarray, bg: int) -> np.ndarray | None:
    fg = grid != bg
    if not fg.any():
        return None
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    return grid[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def pad(grid: np.ndarray, width: int, color: int) -> np.ndarray:
    return np.pad(grid, width, constant_values=color)


def shift(grid: np.ndarray, bg: int, dy: int, dx: int, wrap: bool) -> np.ndarray:
    if wrap:
        return np.roll(grid, (dy, dx), axis=(0, 1))
    h, w = grid.shape
    out = np.full_like(grid, bg)
    src = grid[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = src
    return out


def gravity(grid: np.ndarray, bg: int, turns: int) -> np.ndarray:
    """Every non-background cell falls toward one side until blocked (SIDES[turns]), keeping its order."""
    g = turned_down(grid, turns)
    out = np.full_like(g, bg)
    for c in range(g.shape[1]):
        cells = g[:, c][g[:, c] != bg]
        out[g.shape[0] - len(cells) :, c] = cells
    return np.rot90(out, turns)


def symmetrize(grid: np.ndarray, bg: int, axes: str) -> np.ndarray:
    """Complete a mirror symmetry: background cells take their mirror image's color, left-right then up-down."""
    out = grid
    for axis in axes:
        flipped = out[:, ::-1] if axis == "h" else out[::-1]
        out = np.where(out == bg, flipped, out)
    return out


def split(grid: np.ndarray, vertical: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The two halves left | right (`vertical`) or top / bottom, around a middle line of one color when the side is
    odd; None when the side is odd and its middle line is not one color."""
    g = grid.T if vertical else grid
    n = g.shape[0]
    if n < 2:
        return None
    if n % 2:
        middle = g[n // 2]
        if (middle != middle[0]).any():
            return None
    a, b = g[: n // 2], g[(n + 1) // 2 :]
    return (a.T, b.T) if vertical else (a, b)


def keep_half(grid: np.ndarray, vertical: bool, second: bool) -> np.ndarray | None:
    halves = split(grid, vertical)
    return None if halves is None else halves[int(second)]


LOGIC = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor, "nor": lambda a, b: ~(a | b)}


def logic(grid: np.ndarray, bg: int, vertical: bool, op: str, color: int) -> np.ndarray | None:
    """Overlay the two halves: a cell takes `color` where op(this half's cell is set, that half's cell is set)."""
    halves = split(grid, vertical)
    if halves is None:
        return None
    a, b = halves
    return np.where(LOGIC[op](a != bg, b != bg), np.uint8(color), np.uint8(bg))


def delete_color(grid: np.ndarray, bg: int, color: int) -> np.ndarray:
    return np.where(grid == color, np.uint8(bg), grid)


# ---------------------------------------------------------------- makers (a task's parameters)


def _d8(rng: np.random.Generator, ctx: Ctx) -> Step:
    k = int(rng.integers(1, 8))
    return Step(D8_NAMES[k], partial(dihedral, k=k))


def _colormap(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    """Recolor some of the colors present (the background too, now and then). A color missing from the
    demonstrations would make the map unlearnable, so only colors in at least half of the grids are drawn."""
    present = [c for c in ctx.common if c != ctx.bg] + ([ctx.bg] if rng.random() < 0.15 else [])
    if not present:
        return None
    chosen = rng.permutation(present)[: int(rng.integers(1, len(present) + 1))]
    table = np.arange(N_COLORS, dtype=np.uint8)
    swap = len(chosen) == 2 and rng.random() < 0.5
    for i, c in enumerate(chosen):
        table[c] = chosen[1 - i] if swap else other_color(rng, int(c))
    mapped = frozenset(int(c) for c in chosen)
    name = "swap_colors" if swap else f"colormap{len(chosen)}"
    return Step(name, partial(recolor, table=table), partial(colors_in, among=mapped))


def _upscale(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    h, w = ctx.max_shape
    ky, kx = min(MAX_SIDE // h, 4), min(MAX_SIDE // w, 4)
    if min(ky, kx) < 2:
        return None
    k = int(rng.integers(2, min(ky, kx) + 1))
    ky, kx = (k, k) if rng.random() < 0.8 else ((k, 1) if rng.random() < 0.5 else (1, k))
    return Step(f"upscale{ky}x{kx}", partial(upscale, ky=ky, kx=kx))


def _tile(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    h, w = ctx.max_shape
    fits = [(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if (a, b) != (1, 1) and a * h <= MAX_SIDE >= b * w]
    if not fits:
        return None
    ny, nx = fits[int(rng.integers(len(fits)))]
    mirror = bool(rng.random() < 0.5)
    return Step(f"{'mirror_tile' if mirror else 'tile'}{ny}x{nx}", partial(tile, ny=ny, nx=nx, mirror=mirror))


def _pad(rng: np.random.Generator, ctx: Ctx) -> Step:
    width = 1 if rng.random() < 0.7 else 2
    color = ctx.bg if rng.random() < 0.2 else other_color(rng, ctx.bg)
    return Step(f"pad{width}", partial(pad, width=width, color=color))


def _shift(rng: np.random.Generator, ctx: Ctx) -> Step:
    dy, dx = 0, 0
    while dy == dx == 0:
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
    wrap = bool(rng.random() < 0.4)
    return Step(f"{'roll' if wrap else 'shift'}{dy:+d}{dx:+d}", partial(shift, bg=ctx.bg, dy=dy, dx=dx, wrap=wrap))


def _gravity(rng: np.random.Generator, ctx: Ctx) -> Step:
    turns = int(rng.integers(4))
    return Step(f"gravity_{SIDES[turns]}", partial(gravity, bg=ctx.bg, turns=turns))


def _symmetrize(rng: np.random.Generator, ctx: Ctx) -> Step:
    axes = ("h", "v", "hv")[int(rng.integers(3))]
    return Step(f"symmetrize_{axes}", partial(symmetrize, bg=ctx.bg, axes=axes))


def _half(rng: np.random.Generator, ctx: Ctx) -> Step:
    vertical, second = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    side = ("right" if second else "left") if vertical else ("bottom" if second else "top")
    return Step(f"half_{side}", partial(keep_half, vertical=vertical, second=second))


def _logic(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    # The split must work on every grid, so the axis is one that does (the separator's, for `halves` inputs).
    axes = [v for v in (True, False) if all(split(g, v) is not None for g in ctx.grids)]
    if not axes:
        return None
    vertical = axes[int(rng.integers(len(axes)))]
    op = list(LOGIC)[int(rng.integers(len(LOGIC)))]
    return Step(f"{op}_halves", partial(logic, bg=ctx.bg, vertical=vertical, op=op, color=other_color(rng, ctx.bg)))


def _delete_color(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    if len(ctx.colors) < 2:  # deleting the only color leaves a blank grid
        return None
    color = int(rng.choice(ctx.colors))
    return Step("delete_color", partial(delete_color, bg=ctx.bg, color=color), partial(colors_in, among={color}))


GRID_MAKERS: dict[str, Maker] = {
    "d8": _d8,
    "colormap": _colormap,
    "upscale": _upscale,
    "tile": _tile,
    "crop": needs_background(lambda rng, ctx: Step("crop", partial(crop, bg=ctx.bg))),
    "pad": _pad,
    "shift": _shift,
    "gravity": needs_background(_gravity),
    "symmetrize": needs_background(_symmetrize),
    "half": _half,
    "logic": _logic,
    "delete_color": _delete_color,
}
MAKERS: dict[str, Maker] = {
    **GRID_MAKERS,
    **OBJECT_MAKERS,
    **MOVE_MAKERS,
    **PATTERN_MAKERS,
    **CELL_MAKERS,
    **STAMP_MAKERS,
    **LINE_MAKERS,
}
# Primitives that apply to nearly any grid would crowd out the rest; the d8 maker stands for seven of them. Those of
# one kind of scene (a pattern, cells, a template) are weighted up: elsewhere they decline at once, and on their
# scene the primitives of any grid would otherwise come first (at weight 1, 1 task in 20 used one).
WEIGHTS = {
    "d8": 1.5,
    "colormap": 0.8,
    "shift": 0.6,
    "pad": 0.6,
    "logic": 1.5,
    "complete_pattern": 5.0,
    "masked_patch": 4.0,
    "continue_pattern": 5.0,
    "odd_cell": 4.0,
    "overlay_cells": 3.0,
    "cell_summary": 3.0,
    "fill_marked_cells": 5.0,
    "stamp": 10.0,
    "cross_lines": 1.5,
    "attract": 6.0,
    "extend_to_contact": 6.0,
}
_NAMES = list(MAKERS)
_P = np.array([WEIGHTS.get(n, 1.0) for n in _NAMES])


# ---------------------------------------------------------------- programs and tasks


def valid(grid: np.ndarray | None) -> bool:
    return (
        grid is not None
        and grid.ndim == 2
        and 1 <= grid.shape[0] <= MAX_SIDE
        and 1 <= grid.shape[1] <= MAX_SIDE
        and int(grid.max()) < N_COLORS
    )


Path = list[np.ndarray]  # one candidate pair's grids: its input, then the grid after each step so far


def apply_step(step: Step, paths: list[Path], bg: int) -> list[Path]:
    """The paths the step extends: those where it gives a valid grid that it did not blank (a scene wiped to
    background teaches nothing, e.g. an `and` of two halves that never overlap)."""
    out = []
    for path in paths:
        new = step.fn(path[-1])
        if not valid(new) or ((new == bg).all() and not (path[-1] == bg).all()):
            continue
        out.append([*path, np.asarray(new, dtype=np.uint8)])
    return out


def draw_step(
    rng: np.random.Generator, paths: list[Path], need: int, avoid: str | None
) -> tuple[str, Step, list[Path]] | None:
    """A primitive that applies to at least `need` of the paths and changes one: (its maker's name, the step, the
    paths it extends). A maker never follows itself: two rotations, two color maps or two crops in a row are one
    step written twice."""
    ctx = context([p[-1] for p in paths])
    p = np.where(np.array(_NAMES) == avoid, 0.0, _P)
    for kind in rng.choice(len(_NAMES), size=STEP_TRIES, p=p / p.sum()).tolist():
        step = MAKERS[_NAMES[kind]](rng, ctx)
        if step is None:
            continue
        kept = apply_step(step, paths, ctx.bg)
        if len(kept) >= need and any(not grids_equal(q[-2], q[-1]) for q in kept):
            return _NAMES[kind], step, kept
    return None


def acceptable(paths: list[Path]) -> bool:
    """A task worth learning: every output differs from its input (the caller keeps only pairs that every step
    changes, yet two steps may undo each other), every step changes some pair (else the name overstates the
    program), the outputs are not all one grid, and no two pairs share an input."""
    if any(grids_equal(p[0], p[-1]) for p in paths):
        return False
    for i in range(1, len(paths[0])):
        if all(grids_equal(p[i - 1], p[i]) for p in paths):
            return False
    if len(paths) > 1 and all(grids_equal(paths[0][-1], p[-1]) for p in paths[1:]):
        return False
    return len({grid_key(p[0]) for p in paths}) == len(paths)


def evidence(steps: list[Step], path: Path) -> frozenset:
    """What one pair shows of the program: each step's witness items on the grid that step reads (tagged with the
    step), and each color its output has that its input lacks (a new color is a parameter of the rule too)."""
    items: set = {(i, x) for i, step in enumerate(steps) if step.witness for x in step.witness(path[i])}
    new = set(np.unique(path[-1]).tolist()) - set(np.unique(path[0]).tolist())
    return frozenset(items | {("new", c) for c in new})


@dataclass
class Program:
    """A drawn program before its pairs are chosen: its style, steps, and the candidate paths every step changes."""

    family: str
    steps: list[Step]
    paths: list[Path]

    @property
    def name(self) -> str:
        return f"{self.family}|{'>'.join(s.name for s in self.steps)}"


def draw_program(rng: np.random.Generator, n_pairs: int) -> Program | None:
    """An input family with its style, a program of 1-3 primitives with their parameters, and the candidate paths
    (POOL * n_pairs inputs were drawn) that every step changes; None when no step could be drawn.

    As a hand-written generator would, the inputs fit the program: a step keeps the inputs it is well defined on
    and changes (a unique largest object, a pixel to shoot a ray from)."""
    style = draw_style(rng)
    paths = [[g] for g in draw_inputs(rng, style, POOL * n_pairs)]
    if len(paths) < n_pairs:
        return None
    n_steps = int(rng.choice(len(STEP_COUNTS), p=STEP_COUNTS)) + 1
    steps: list[Step] = []
    kind = None
    for _ in range(n_steps):
        drawn = draw_step(rng, paths, n_pairs, kind)
        if drawn is None:
            break
        kind, step, paths = drawn
        steps.append(step)
    # Only pairs every step changes: a step that leaves the demos alone but changes the query cannot be inferred
    # (1.2% of pretraining draws when a step had to change one pair of the pool only).
    changed = [p for p in paths if all(not grids_equal(a, b) for a, b in zip(p, p[1:], strict=False))]
    return Program(style.family, steps, changed) if steps else None


def generate_task(rng: np.random.Generator, n_pairs: int) -> GenTask | None:
    """One task: a drawn program (`draw_program`) and n_pairs (input, output) pairs where every item a step relies
    on is shown by two pairs (`choose_pairs`), or None when this draw fails the filters (the caller draws again).

    The context a step's parameters are drawn from is the whole pool, so a color of a map or a size of a table can
    be common there yet shown by one chosen pair only (0.9% of pretraining samples relied on such an item before
    the pairs were chosen for it)."""
    program = draw_program(rng, n_pairs)
    if program is None or len(program.paths) < n_pairs:
        return None
    idx = choose_pairs([evidence(program.steps, p) for p in program.paths], n_pairs)
    if idx is None:
        return None
    chosen = [program.paths[i] for i in idx]
    if not acceptable(chosen):
        return None
    return GenTask(program.name, tuple(Example(freeze(p[0]), freeze(p[-1])) for p in chosen))
