"""Periodic patterns: the "periodic" input family (a small motif tiled over the grid, partly hidden) and the
primitives that read a pattern's period: complete_pattern, masked_patch, continue_pattern.

A period is a lattice of translations that leave the pattern unchanged, spanned by (0, px) along a row and (py, sh)
down to the next band of rows, shifted sh cells: sh = 0 for a plain tiling, 0 < sh < px for a diagonal one (a
mirrored tiling repeats every two motifs, so its period is plain and twice the motif's). Cells one lattice
translation apart form a class, and a hidden cell takes the color of the visible cells of its class.

The period is what the learner has to infer, so `restore` finds it from the visible cells alone and declines
whenever they leave the answer open. It considers every lattice with both periods at most MAX_PERIOD and at most
half the grid's side (a period shows only when the grid holds two repeats of it) that the visible cells agree
with, and answers only when each of them fills every hidden cell and all of them fill alike: then every periodic
grid of such a period that matches the visible cells has the same hidden cells, so the answer is the input's own.
"""

from __future__ import annotations

from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy import ndimage

from testtime.data.gen_objects import CROSS, SAMPLE, Ctx, Maker, Step, clear_around, colors_in

if TYPE_CHECKING:
    from testtime.data.gen_style import Style

MAX_PERIOD = 6  # the largest period restore considers (a mirrored tiling of a 3-cell motif)
MOTIF_SIDES = (2, 5)  # a motif's side, inclusive, before mirroring
MAX_MASKS = 4  # most hidden rectangles a mask color may form to be read as a mask

Lattice = tuple[int, int, int]  # (py, sh, px)


# ---------------------------------------------------------------- the period finder


def _translations(marked: np.ndarray, top_y: int, n: int) -> np.ndarray:
    """ok[dy, dx] for 0 <= dy <= top_y, 0 <= dx < n: every two visible cells (dy, dx) apart have one color, in
    `marked` (the grid, hidden cells -1). One vectorized comparison of the grid with its shifted copies (a strided
    view of a padded copy), as this runs on every grid a pattern primitive is tried on."""
    h, w = marked.shape
    padded = np.full((h + top_y, w + n), -1, dtype=np.int8)
    padded[:h, :w] = marked
    s0, s1 = padded.strides
    shifted = as_strided(padded, shape=(top_y + 1, h, n, w), strides=(s0, s0, s1, s1), writeable=False)
    a = marked[None, :, None, :]
    return ~((shifted != a) & (shifted >= 0) & (a >= 0)).any(axis=(1, 3))


def classes(shape: tuple[int, int], lattice: Lattice) -> np.ndarray:
    """Each cell's class under the lattice: its position in the motif, row-major (py * px classes)."""
    py, sh, px = lattice
    r, c = np.indices(shape)
    return (r % py) * px + (c - sh * (r // py)) % px


def _fill(grid: np.ndarray, visible: np.ndarray, lattice: Lattice) -> np.ndarray | None:
    """Each hidden cell's color under the lattice (-1 where its class has no visible cell), or None when the visible
    cells of a class disagree (the lattice is not a period of what is shown)."""
    idx = classes(grid.shape, lattice)
    n = lattice[0] * lattice[2]
    k, v = idx[visible], grid[visible].astype(np.int64)
    count = np.bincount(k, minlength=n)
    total = np.bincount(k, v, minlength=n)
    if (np.bincount(k, v * v, minlength=n) * count != total * total).any():  # a class with two colors
        return None
    color = np.where(count > 0, total.astype(np.int64) // np.maximum(count, 1), -1)
    return color[idx[~visible]]


def periods(grid: np.ndarray, visible: np.ndarray) -> list[Lattice]:
    """The lattices within bounds (see the module's docstring) that the visible cells agree with, smallest first:
    those whose two spanning translations the visible cells allow (`_fill` then checks the classes)."""
    h, w = grid.shape
    top_y, top_x = max(1, min(MAX_PERIOD, h // 2)), max(1, min(MAX_PERIOD, w // 2))
    ok = _translations(np.where(visible, grid.astype(np.int8), np.int8(-1)), top_y, top_x + 1)
    across = np.flatnonzero(ok[0, 1:]) + 1
    found = [
        (py, int(sh), int(px)) for py in range(1, top_y + 1) for px in across for sh in np.flatnonzero(ok[py, :px])
    ]
    return sorted(found, key=lambda t: (t[0] * t[2], t))


def restore(grid: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
    """The grid with its hidden cells in the colors of the pattern's period, or None when the visible cells do not
    fix them: no period, a pattern of one color (a flood fill, not a pattern), or two periods the visible cells
    allow that fill a hidden cell differently or leave one open."""
    visible = ~hidden
    if not hidden.any() or len(np.unique(grid[visible])) < 2:
        return None
    answer = None
    for lattice in periods(grid, visible):
        fill = _fill(grid, visible, lattice)
        if fill is None:  # the single translations agree, yet a class disagrees through hidden cells
            continue
        if (fill < 0).any() or (answer is not None and (fill != answer).any()):
            return None
        answer = fill
    if answer is None:
        return None
    out = grid.copy()
    out[hidden] = answer
    return out


# ---------------------------------------------------------------- primitives


def rectangles(mask: np.ndarray) -> list[tuple[slice, slice]] | None:
    """The boxes of the mask's 4-connected parts when each part fills its box, else None."""
    labels, _ = ndimage.label(mask, structure=CROSS)
    boxes = ndimage.find_objects(labels)
    if any((labels[box] != i).any() for i, box in enumerate(boxes, 1)):
        return None
    return boxes


def known_corner(known: np.ndarray) -> bool:
    """The known cells fill one rectangle holding a corner of the grid, and some cells are not known."""
    rows, cols = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
    if not len(rows) or known.all():
        return False
    (h, w), top, bottom, left, right = known.shape, rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if known.sum() != (bottom - top) * (right - left):  # not one filled rectangle: it would fill its box
        return False
    return (top == 0 or bottom == h) and (left == 0 or right == w)


def complete_pattern(grid: np.ndarray, mask: int) -> np.ndarray | None:
    """The whole pattern: the cells in the mask color restored from the period (`restore`). Holes in a pattern,
    not a pattern in a corner that goes on (that is continue_pattern)."""
    hidden = grid == mask
    return None if known_corner(~hidden) else restore(grid, hidden)


def masked_patch(grid: np.ndarray, mask: int) -> np.ndarray | None:
    """What the one rectangle in the mask color hides; None unless the mask is one filled rectangle."""
    hidden = grid == mask
    boxes = rectangles(hidden)
    if boxes is None or len(boxes) != 1:
        return None
    out = restore(grid, hidden)
    return None if out is None else out[boxes[0]].copy()


def continue_pattern(grid: np.ndarray, bg: int) -> np.ndarray | None:
    """The pattern in one corner of the grid (the rest background) continued over the whole grid; None unless the
    pattern is a rectangle at a corner (the generator draws it at the top and the left; a rotation moves it)."""
    known = grid != bg
    return restore(grid, ~known) if known_corner(known) else None


# ---------------------------------------------------------------- the "periodic" input family


def _motif(rng: np.random.Generator, style: Style, h: int, w: int) -> np.ndarray:
    """An h x w motif holding every color of the palette (2-4 colors, 4 cells at least): every input of a task then
    shows the same colors, so what a later step does with a color is shown by each pair."""
    pal = np.asarray(style.palette, dtype=np.uint8)
    cells = pal[rng.integers(len(pal), size=h * w)]
    cells[rng.choice(h * w, size=len(pal), replace=False)] = rng.permutation(pal)
    return cells.reshape(h, w)


def motif_side(rng: np.random.Generator, room: int, mirrored: bool) -> int:
    """A motif's side whose period repeats at least twice in `room` cells and is one restore looks for (a mirrored
    motif's period is twice its side)."""
    k = 2 if mirrored else 1  # motifs a period spans
    top = min(MOTIF_SIDES[1], MAX_PERIOD // k, room // (2 * k))
    return int(rng.integers(MOTIF_SIDES[0], max(top, MOTIF_SIDES[0]) + 1))


def pattern(rng: np.random.Generator, style: Style, shape: tuple[int, int], room: tuple[int, int]) -> np.ndarray:
    """A motif tiled over the grid: plain, mirrored (every other copy flipped) or shifted sh cells a band of rows;
    its period repeats at least twice within the top-left `room` (a mirrored tiling needs room for 4 motifs: on a
    smaller grid the tiling is plain)."""
    mirrored = style.tiling == "mirror" and min(room) >= 8
    m = _motif(rng, style, motif_side(rng, room[0], mirrored), motif_side(rng, room[1], mirrored))
    if mirrored:
        m = np.block([[m, m[:, ::-1]], [m[::-1], m[::-1, ::-1]]])
    sh = int(rng.integers(1, m.shape[1])) if style.tiling == "shift" else 0
    r, c = np.indices(shape)
    return m[r % m.shape[0], (c - sh * (r // m.shape[0])) % m.shape[1]]


def _mask_rects(rng: np.random.Generator, grid: np.ndarray, n: int, color: int) -> None:
    """Up to n rectangles in `color`, sides 2 to a third of the grid's, apart from each other (touching ones would
    read as one shape that is no rectangle)."""
    h, w = grid.shape
    hidden = np.zeros(grid.shape, dtype=bool)
    for _ in range(n * 4):
        rh, rw = (int(rng.integers(2, max(2, side // 3) + 1)) for side in (h, w))
        top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        if clear_around(hidden, top, left, rh, rw):
            hidden[top : top + rh, left : left + rw] = True
            n -= 1
            if n == 0:
                break
    grid[hidden] = color


def draw_periodic(rng: np.random.Generator, style: Style, shape: tuple[int, int]) -> np.ndarray:
    """An input of the "periodic" family: a pattern with rectangles in the background color over it ("masked": a
    few, "patch": one), or the pattern over the top, the left or the top-left part of the grid only ("partial")."""
    h, w = shape
    if style.layout != "partial":
        grid = pattern(rng, style, shape, shape).astype(np.uint8)
        n = 1 if style.layout == "patch" else int(rng.integers(style.count[0], style.count[1] + 1))
        _mask_rects(rng, grid, n, style.bg)
        return grid
    # Two rows (columns) more shown than the largest period restore looks for: with no more than it, a band of
    # rows that repeats with any shift would fit what is shown, and restore would decline.
    rows, cols = (int(rng.integers(min(MAX_PERIOD, side // 2) + 2, side)) for side in shape)
    which = rng.random()
    rows, cols = (rows, w) if which < 0.4 else ((h, cols) if which < 0.8 else (rows, cols))
    grid = pattern(rng, style, shape, (rows, cols)).astype(np.uint8)
    grid[rows:] = style.bg
    grid[:, cols:] = style.bg
    return grid


# ---------------------------------------------------------------- makers (a task's parameters)


def _candidates(ctx: Ctx, fits) -> list[int]:
    """Colors of most grids whose cells fit a mask's shape (`fits`) in each of the first SAMPLE grids holding them."""
    out = []
    for color in ctx.common:
        held = list(islice((g for g in ctx.grids if (g == color).any()), SAMPLE))
        if held and all(fits(g == color) for g in held):
            out.append(color)
    return out


def _is_mask(hidden: np.ndarray) -> bool:
    """A few filled rectangles of sides 2 or more (a mask, not a speck of the pattern) over under half of the grid,
    none across a whole side (a line, not a hole)."""
    if 2 * hidden.sum() >= hidden.size or hidden.all(axis=0).any() or hidden.all(axis=1).any():
        return False
    boxes = rectangles(hidden)
    return boxes is not None and len(boxes) <= MAX_MASKS and all(b.stop - b.start > 1 for box in boxes for b in box)


def _masked(name: str, fn) -> Maker:
    """A maker for a primitive of a mask color: a color whose cells are a few filled rectangles, as a mask's are."""

    def make(rng: np.random.Generator, ctx: Ctx) -> Step | None:
        colors = _candidates(ctx, _is_mask)
        if not colors:
            return None
        mask = colors[int(rng.integers(len(colors)))]
        return Step(name, partial(fn, mask=mask), partial(colors_in, among=frozenset({mask})))

    return make


def _continue(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    colors = _candidates(ctx, lambda hidden: known_corner(~hidden))
    if not colors:
        return None
    bg = colors[int(rng.integers(len(colors)))]
    return Step("continue_pattern", partial(continue_pattern, bg=bg), partial(colors_in, among=frozenset({bg})))


PATTERN_MAKERS: dict[str, Maker] = {
    "complete_pattern": _masked("complete_pattern", complete_pattern),
    "masked_patch": _masked("masked_patch", masked_patch),
    "continue_pattern": _continue,
}
