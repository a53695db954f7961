"""Template stamping: a scene of one shape of several cells (the template) and single pixels (markers), and the
primitive that draws a copy of the template at each marker, centered on it or hanging from it by the template's
first cell (the leftmost of its top row), in the template's colors or recolored to the marker's.

The anchor is a cell of the template in both cases (its center cell must be filled to be centered on), so a
marker is always covered by its copy and the output shows where each copy was anchored. Stamps that would overlap
each other, the template or another object, or leave the grid, make the rule's result a guess: None.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from testtime.data.gen_objects import SAMPLE, Ctx, Obj, Step, needs_background, objects


def anchor(mask: np.ndarray, centered: bool) -> tuple[int, int] | None:
    """The template's cell that lands on a marker: its center (None unless both sides are odd and the center is
    filled) or its top row's leftmost cell."""
    h, w = mask.shape
    if not centered:
        return 0, int(np.argmax(mask[0]))
    return (h // 2, w // 2) if h % 2 and w % 2 and mask[h // 2, w // 2] else None


def template_and_markers(grid: np.ndarray, bg: int) -> tuple[Obj, list[Obj]] | None:
    """The one object of more than one cell and the single-pixel objects, when the scene is exactly that."""
    objs = objects(grid, bg)
    big = [o for o in objs if o.size > 1]
    dots = [o for o in objs if o.size == 1]
    return (big[0], dots) if len(big) == 1 and dots else None


def stamp(grid: np.ndarray, bg: int, centered: bool, recolor: bool) -> np.ndarray | None:
    """A copy of the template at each marker (see the module's docstring); the template stays where it is."""
    found = template_and_markers(grid, bg)
    if found is None:
        return None
    template, dots = found
    at = anchor(template.mask, centered)
    if at is None:
        return None
    h, w = grid.shape
    th, tw = template.mask.shape
    colors = grid[template.box]
    out = grid.copy()
    taken = grid != bg  # what a stamp may not cover: the template, other markers, earlier stamps
    for dot in dots:
        top, left = dot.top - at[0], dot.left - at[1]
        if top < 0 or left < 0 or top + th > h or left + tw > w:
            return None
        region = (slice(top, top + th), slice(left, left + tw))
        own = np.zeros_like(template.mask)
        own[at] = True  # the marker's own cell, which its stamp covers
        if (taken[region] & template.mask & ~own).any():
            return None
        ink = np.where(template.mask, grid[dot.top, dot.left] if recolor else colors, out[region])
        out[region] = ink
        taken[region] |= template.mask
    return out


def _stamp(rng: np.random.Generator, ctx: Ctx) -> Step | None:
    if not any(template_and_markers(g, ctx.bg) for g in ctx.grids[:SAMPLE]):
        return None
    centered, recolor = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    name = f"stamp_{'center' if centered else 'corner'}{'_recolor' if recolor else ''}"
    return Step(name, partial(stamp, bg=ctx.bg, centered=centered, recolor=recolor))


STAMP_MAKERS = {"stamp": needs_background(_stamp)}
