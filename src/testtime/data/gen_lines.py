"""Lines drawn from single pixels and objects drawn to the largest: three ARC rules of a scene of objects and single
pixels (`gen_grids`' "beacons" layout draws one: a large anchor object and a few pixels beside it, in its rows or
columns, on one side).

- `cross_lines`: each single pixel draws its whole row, column or both in its color, over background only.
- `attract`: every object but the one largest moves along rows (or columns) toward it until it touches it.
- `extend_to_contact`: each single pixel shoots a ray one way to the first non-background cell and paints the
  object there its color.

A single pixel is a non-background cell with no non-background 8-neighbour (`isolated`), an object an 8-connected
component (`objects`). Each primitive returns None where its result would be a guess (see each one).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy import ndimage

from testtime.data.gen_moves import SIDES, turned_down
from testtime.data.gen_objects import CROSS, EIGHT, SAMPLE, Ctx, Maker, Step, isolated, needs_background, objects

AXES = ("row", "col", "both")  # the lines a single pixel draws in cross_lines
FIT_SAMPLE = 8  # grids a maker tries a parameter on: it draws one that is defined on at least half of them


def cross_lines(grid: np.ndarray, bg: int, axes: str) -> np.ndarray | None:
    """Each single pixel's row (`axes` "row"), column ("col") or both in its color, over background cells only
    (a line runs behind the objects it meets, to the border). A background cell that two lines of different colors
    would take, where they cross or share a row or column, is a guess: None; so is a grid with no single pixel."""
    lone = np.argwhere(isolated(grid, bg))
    if not len(lone):
        return None
    free = grid == bg
    ink = np.full(grid.shape, -1, dtype=np.int16)  # the color a line gives a background cell, -1 for none
    for r, c in lone.tolist():
        color = int(grid[r, c])
        views = ([(r, slice(None))] if axes != "col" else []) + ([(slice(None), c)] if axes != "row" else [])
        for at in views:
            line, open_ = ink[at], free[at]  # line: a view of ink
            if ((line >= 0) & (line != color) & open_).any():
                return None
            line[open_] = color
    return np.where(ink >= 0, ink, grid).astype(np.uint8)


def _moved(mask: np.ndarray, d: int) -> np.ndarray:
    """`mask` (full grid) shifted d columns right (left for d < 0); the caller keeps it inside the grid."""
    return np.roll(mask, d, axis=1)


def attract(grid: np.ndarray, bg: int, vertical: bool) -> np.ndarray | None:
    """Every object but the one largest moves along its rows (`vertical`: its columns) toward the largest, whole,
    until it touches it (a 4-neighbour of one of its cells). None where the largest ties, where an object shares no
    row with it (it would never meet it) or lies across it, or where two moving objects' paths (from where each
    starts to where it stops) meet: one would stop at the other, and which moves first is a guess."""
    g = grid.T if vertical else grid
    objs = objects(g, bg)
    sizes = [o.size for o in objs]
    if len(objs) < 2 or sizes.count(max(sizes)) > 1:
        return None
    i_big = sizes.index(max(sizes))
    big = objs[i_big]
    masks = []
    for o in objs:
        m = np.zeros(g.shape, dtype=bool)
        m[o.box] = o.mask
        masks.append(m)
    big_mask = masks[i_big]
    near = ndimage.binary_dilation(big_mask, structure=CROSS) & ~big_mask
    b_top, b_bottom = big.top, big.top + big.mask.shape[0]
    b_left, b_right = big.left, big.left + big.mask.shape[1]
    out = np.where(big_mask, g, np.uint8(bg))
    claimed = big_mask.copy()  # cells some object passes over or rests on
    for i, (o, m) in enumerate(zip(objs, masks, strict=True)):
        if i == i_big:
            continue
        o_right = o.left + o.mask.shape[1]
        if o.top >= b_bottom or o.top + o.mask.shape[0] <= b_top or b_left < o_right and o.left < b_right:
            return None
        step = 1 if o_right <= b_left else -1
        swept, d = m.copy(), 0
        while not (_moved(m, d) & near).any():  # a shared row has cells of both: they meet before the far side
            d += step
            swept |= _moved(m, d)
        if (swept & claimed).any():
            return None
        claimed |= swept
        out[_moved(m, d)] = g[m]
    return out.T if vertical else out


def extend_to_contact(grid: np.ndarray, bg: int, turns: int) -> np.ndarray | None:
    """From each single pixel a ray of its color toward SIDES[turns] over background, to the first non-background
    cell, whose object takes the pixel's color ("shoot and paint"). None where a ray leaves the grid (it hits
    nothing), where it hits another single pixel (that one shoots too: paint first or shoot first is a guess), or
    where two rays of different colors hit one object; also on a grid with no single pixel."""
    g = turned_down(grid, turns)  # the rays run down
    lone = isolated(g, bg)
    if not lone.any():
        return None
    labels, _ = ndimage.label(g != bg, structure=EIGHT)
    out = g.copy()
    paint: dict[int, int] = {}
    for r, c in np.argwhere(lone).tolist():
        color = int(g[r, c])
        hit = r + 1 + int(np.argmax(g[r + 1 :, c] != bg)) if (g[r + 1 :, c] != bg).any() else None
        if hit is None or lone[hit, c] or paint.setdefault(int(labels[hit, c]), color) != color:
            return None
        out[r + 1 : hit, c] = color
    for label, color in paint.items():
        out[labels == label] = color
    return np.rot90(out, turns)


# ---------------------------------------------------------------- makers (a task's parameters)


def _fitting(ctx: Ctx, fn, options: dict) -> list:
    """The options (name -> keyword arguments of fn) that give a grid on at least half of the first grids: a task
    needs most of its pool, and a scene of pixels on one side of an object fits one ray direction only."""
    grids = ctx.grids[:FIT_SAMPLE]
    fits = {name: sum(fn(g, ctx.bg, **kw) is not None for g in grids) for name, kw in options.items()}
    return [name for name, n in fits.items() if 2 * n >= len(grids)]


def _has_pixels(ctx: Ctx) -> bool:
    return any(isolated(g, ctx.bg).any() for g in ctx.grids[:SAMPLE])


def _pick(rng: np.random.Generator, names: list) -> str | None:
    return names[int(rng.integers(len(names)))] if names else None


def _cross(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    if not _has_pixels(ctx):
        return None
    axes = _pick(rng, _fitting(ctx, cross_lines, {a: {"axes": a} for a in AXES}))
    return None if axes is None else Step(f"cross_lines_{axes}", partial(cross_lines, bg=ctx.bg, axes=axes))


def _attract(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    if not any(len(objects(g, ctx.bg)) > 1 for g in ctx.grids[:SAMPLE]):
        return None
    way = _pick(rng, _fitting(ctx, attract, {"rows": {"vertical": False}, "cols": {"vertical": True}}))
    return None if way is None else Step(f"attract_{way}", partial(attract, bg=ctx.bg, vertical=way == "cols"))


def _extend(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    if not _has_pixels(ctx):
        return None
    side = _pick(rng, _fitting(ctx, extend_to_contact, {s: {"turns": t} for t, s in enumerate(SIDES)}))
    if side is None:
        return None
    return Step(f"extend_to_contact_{side}", partial(extend_to_contact, bg=ctx.bg, turns=SIDES.index(side)))


# No witness: each rule's colors are the pixels' own, and a color an output gains is witnessed by the generator.
LINE_MAKERS: dict[str, Maker] = {
    "cross_lines": needs_background(_cross),
    "attract": needs_background(_attract),
    "extend_to_contact": needs_background(_extend),
}
