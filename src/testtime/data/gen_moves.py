"""Primitives of `gen_programs` that move, order, pick or shrink objects: rigid gravity, a move to a border, objects
sorted by size, the one object that stands out, a downscale. Each returns None where its rule is not well defined
on a grid (two objects that would land on one cell, a tie in size, no unique object, a side not a multiple of k).
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np

from testtime.data.gen_objects import Ctx, Maker, Obj, Step, dominant, needs_background, objects

SIDES = ("down", "right", "up", "left")  # the side a rule moves toward (objects, cells, rays), by quarter turns


def turned_down(grid: np.ndarray, turns: int) -> np.ndarray:
    """The grid turned clockwise `turns` quarters, so that side SIDES[turns] is its bottom: a rule toward a side is
    written once, for the bottom, and its result turned back (`np.rot90(out, turns)`)."""
    return np.rot90(grid, -turns)


def _bottom(o: Obj) -> int:
    return o.top + o.mask.shape[0]


def rigid_gravity(grid: np.ndarray, bg: int, turns: int) -> np.ndarray:
    """Each object falls as a whole toward SIDES[turns] until it touches the border or an object that has landed;
    the objects nearest that side land first."""
    g = turned_down(grid, turns)
    out = np.full_like(g, bg)
    for o in sorted(objects(g, bg), key=_bottom, reverse=True):
        cells = g[o.box][o.mask]
        drop = 0
        while _bottom(o) + drop < g.shape[0]:
            rows, cols = o.box
            below = out[rows.start + drop + 1 : rows.stop + drop + 1, cols][o.mask]
            if (below != bg).any():
                break
            drop += 1
        rows, cols = o.box
        out[rows.start + drop : rows.stop + drop, cols][o.mask] = cells
    return np.rot90(out, turns)


def to_border(grid: np.ndarray, bg: int, turns: int) -> np.ndarray | None:
    """Each object moves as a whole toward SIDES[turns] until it touches that border, whatever lies between; None
    when two objects would overlap (which one is on top would be a guess)."""
    g = turned_down(grid, turns)
    out = np.full_like(g, bg)
    for o in objects(g, bg):
        top = g.shape[0] - o.mask.shape[0]
        region = out[top:, o.box[1]]
        if (region[o.mask] != bg).any():
            return None
        region[o.mask] = g[o.box][o.mask]
    return np.rot90(out, turns)


def _crop(grid: np.ndarray, o: Obj, bg: int) -> np.ndarray:
    return np.where(o.mask, grid[o.box], np.uint8(bg))


def sort_by_size(grid: np.ndarray, bg: int, vertical: bool) -> np.ndarray | None:
    """The objects' crops from smallest to largest, left to right (top to bottom when `vertical`), one background
    cell apart and aligned at the top (left); None with fewer than two objects or two of one size."""
    objs = sorted(objects(grid, bg), key=lambda o: o.size)
    sizes = [o.size for o in objs]
    if len(objs) < 2 or len(set(sizes)) < len(sizes):
        return None
    crops = [_crop(grid, o, bg) for o in objs]
    if vertical:
        crops = [c.T for c in crops]
    height = max(c.shape[0] for c in crops)
    parts: list[np.ndarray] = []
    for c in crops:
        column = np.full((height, c.shape[1]), bg, dtype=np.uint8)
        column[: c.shape[0]] = c
        parts += [column, np.full((height, 1), bg, dtype=np.uint8)]
    out = np.concatenate(parts[:-1], axis=1)
    return out.T if vertical else out


def _key(grid: np.ndarray, o: Obj, by: str) -> tuple:
    if by == "color":
        return tuple(np.unique(grid[o.box][o.mask]).tolist())
    return o.mask.shape, o.mask.tobytes()


def extract_unique(grid: np.ndarray, bg: int, by: str) -> np.ndarray | None:
    """The crop of the one object whose colors (`by` "color") or shape (`by` "shape") no other object has; None
    unless exactly one stands out among three or more (with two, each differs from the other)."""
    objs = objects(grid, bg)
    keys = [_key(grid, o, by) for o in objs]
    counts = Counter(keys)
    unique = [o for o, k in zip(objs, keys, strict=True) if counts[k] == 1]
    if len(objs) < 3 or len(unique) != 1:
        return None
    return grid[unique[0].box].copy()


def downscale(grid: np.ndarray, bg: int, k: int, any_fg: bool) -> np.ndarray | None:
    """Each k x k block becomes one cell: its most common color, or with `any_fg` its most common non-background
    color when it has one; None when a side is not a multiple of k or a block's count ties."""
    h, w = grid.shape
    if h % k or w % k or h == k == w:
        return None
    blocks = grid.reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(h // k, w // k, k * k)
    out = np.empty((h // k, w // k), dtype=np.uint8)
    for r, c in np.ndindex(out.shape):
        color = dominant(blocks[r, c], bg, any_fg)
        if color is None:
            return None
        out[r, c] = color
    return out


# ---------------------------------------------------------------- makers (a task's parameters)


def _sided(name: str, fn) -> Maker:
    def make(rng: np.random.Generator, ctx: Ctx) -> Step:
        turns = int(rng.integers(4))
        return Step(f"{name}_{SIDES[turns]}", partial(fn, bg=ctx.bg, turns=turns))

    return make


def _sort(rng: np.random.Generator, ctx: Ctx) -> Step:
    vertical = bool(rng.random() < 0.5)
    return Step("sort_column" if vertical else "sort_row", partial(sort_by_size, bg=ctx.bg, vertical=vertical))


def _extract(rng: np.random.Generator, ctx: Ctx) -> Step:
    by = "color" if rng.random() < 0.5 else "shape"
    return Step(f"extract_unique_{by}", partial(extract_unique, bg=ctx.bg, by=by))


def _downscale(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    # A factor most grids' sides are multiples of: the others drop out, and a task needs most of its pool.
    fits = [k for k in (2, 3, 4) if 2 * sum(g.shape[0] % k == 0 == g.shape[1] % k for g in ctx.grids) >= len(ctx.grids)]
    if not fits:
        return None
    k = fits[int(rng.integers(len(fits)))]
    any_fg = bool(rng.random() < 0.5)
    return Step(f"downscale{k}{'_any' if any_fg else ''}", partial(downscale, bg=ctx.bg, k=k, any_fg=any_fg))


MOVE_MAKERS: dict[str, Maker] = {
    "rigid_gravity": needs_background(_sided("rigid_gravity", rigid_gravity)),
    "to_border": needs_background(_sided("to_border", to_border)),
    "sort_by_size": needs_background(_sort),
    "extract_unique": needs_background(_extract),
    "downscale": _downscale,
}
