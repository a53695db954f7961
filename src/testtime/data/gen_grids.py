"""Random input grids in ARC's style, the scenes that the procedural task generator (`gen_programs`) transforms.

An input *family* is a kind of scene: sprites on a background (or one template shape and marker pixels), solid
rectangles, frames with holes, sparse points, noise, full lines, two halves beside a separator, a mosaic with no
background, a tiled pattern partly hidden (`gen_patterns`), an array of cells between grid lines (`gen_cells`). A
`Style` fixes once per task what every input of that task shares (family, layout, background, palette, size range,
object kinds), so the pairs of one task look alike and only the program tells them apart from their outputs. A
family's layout makes the scene one that a kind of rule is defined on (one odd cell among equal ones, a single
hidden rectangle): the generator keeps only inputs a step is defined on, and random scenes would rarely be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from testtime.data.gen_cells import draw_cells
from testtime.data.gen_objects import clear_around, n_components
from testtime.data.gen_patterns import draw_periodic
from testtime.data.gen_style import Style
from testtime.data.sources import grid_key
from testtime.data.tasks import MAX_SIDE, N_COLORS

FAMILIES = ("objects", "rects", "frames", "points", "noise", "lines", "halves", "mosaic", "periodic", "cells")
# Scenes of separate objects carry most object primitives, so they are drawn more often.
FAMILY_WEIGHTS = np.array([3.5, 2.0, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.8, 1.8])
# A family's scene variants with their odds: what each is for is said where it is drawn.
LAYOUTS = {
    "objects": {"sprites": 0.45, "template": 0.33, "beacons": 0.22},
    "periodic": {"masked": 0.45, "patch": 0.3, "partial": 0.25},
    "cells": {"odd": 0.35, "random": 0.35, "marked": 0.3},
}
TILINGS = {"plain": 0.6, "mirror": 0.2, "shift": 0.2}
PLACE_TRIES = 12


def _sides(rng: np.random.Generator, family: str, layout: str) -> tuple[int, int]:
    if family == "mosaic":
        lo = int(rng.integers(2, 5))
        return lo, lo + int(rng.integers(1, 4))
    if family == "halves":
        lo = int(rng.integers(3, 6))
        return lo, lo + int(rng.integers(0, 4))
    if family == "periodic" or layout in ("template", "beacons"):  # a mirrored motif twice; room beside a shape
        lo = int(rng.integers(8, 14))
        return lo, min(lo + int(rng.integers(0, 9)), MAX_SIDE)
    lo = int(rng.integers(3, 9))
    hi = lo + int(rng.integers(2, 13))
    if rng.random() < 0.05:  # now and then a large scene, as ARC has
        hi += 10
    return lo, min(hi, MAX_SIDE)


def _palette(rng: np.random.Generator, family: str, bg: int, layout: str) -> tuple[int, ...]:
    # Halves need a color for each half and a third for the separator; a mosaic has no background to avoid; a
    # pattern needs two colors; cells a line color, a content color and a marker's; a template a color its markers
    # do not have.
    lo, hi = {"halves": (3, 4), "mosaic": (2, 5), "periodic": (2, 5), "cells": (3, 6)}.get(family, (1, 5))
    lo = max(lo, 2) if layout in ("template", "beacons") else lo
    n = int(rng.integers(lo, hi))
    pool = np.arange(N_COLORS) if family == "mosaic" else np.array([c for c in range(N_COLORS) if c != bg])
    return tuple(int(c) for c in rng.permutation(pool)[:n])


def _pick(rng: np.random.Generator, odds: dict[str, float]) -> str:
    p = np.array(list(odds.values()))
    return list(odds)[int(rng.choice(len(p), p=p / p.sum()))]


def _cells_style(rng: np.random.Generator, style: Style) -> Style:
    """A cells style: a cell side (`extent`), how many cells a row and a column have (`count`), and the sides
    that follow; cells of sparse content (the background stays their most common color), no stray pixels."""
    side = int(rng.integers(2, 6))
    lo = int(rng.integers(1, 3))
    hi = int(rng.integers(lo + 1, 5))
    return replace(
        style,
        extent=(side, side),
        count=(lo, hi),
        sides=(side, hi * (side + 1) - 1),
        density=float(rng.uniform(0.2, 0.45)),
        speckle=0.0,
    )


def draw_style(rng: np.random.Generator, family: str | None = None) -> Style:
    """One task's look: a family (drawn when not given) and what all of the task's inputs share."""
    if family is None:
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=FAMILY_WEIGHTS / FAMILY_WEIGHTS.sum()))]
    layout = _pick(rng, LAYOUTS[family]) if family in LAYOUTS else ""
    bg = 0 if rng.random() < 0.8 else int(rng.integers(1, N_COLORS))
    lo_count = int(rng.integers(1, 4))
    ext_lo = int(rng.integers(1, 4))
    style = Style(
        family=family,
        bg=bg,
        palette=_palette(rng, family, bg, layout),
        sides=_sides(rng, family, layout),
        square=bool(rng.random() < 0.3),
        count=(lo_count, lo_count + int(rng.integers(0, 6))),
        extent=(ext_lo + (family == "frames") * 2, ext_lo + int(rng.integers(1, 4)) + (family == "frames") * 2),
        density=float(rng.uniform(0.1, 0.4) if family in ("noise", "halves") else rng.uniform(0.4, 1.0)),
        multicolor=bool(rng.random() < 0.2),
        speckle=float(rng.uniform(0.02, 0.08)) if rng.random() < 0.2 else 0.0,
        vertical=bool(rng.random() < 0.5),
        paired=bool(rng.random() < 0.4),
        layout=layout,
        tiling=_pick(rng, TILINGS) if family == "periodic" else "",
    )
    if family == "cells":
        return _cells_style(rng, style)
    if family == "periodic":  # a few hidden rectangles, and nothing stray that would break the pattern
        return replace(style, count=(1, int(rng.integers(1, 4))), speckle=0.0)
    if layout == "beacons":
        return replace(style, speckle=0.0, side=int(rng.integers(4)))
    return replace(style, speckle=0.0) if layout == "template" else style


def _shape(rng: np.random.Generator, style: Style) -> tuple[int, int]:
    lo, hi = style.sides
    h = int(rng.integers(lo, hi + 1))
    return (h, h) if style.square else (h, int(rng.integers(lo, hi + 1)))


def _count(rng: np.random.Generator, style: Style) -> int:
    return int(rng.integers(style.count[0], style.count[1] + 1))


def _colors(rng: np.random.Generator, style: Style, n: int, mixed: bool) -> np.ndarray:
    """n cell colors from the palette: all one color unless `mixed`."""
    pal = np.asarray(style.palette, dtype=np.uint8)
    return pal[rng.integers(len(pal), size=n)] if mixed else np.full(n, pal[rng.integers(len(pal))], np.uint8)


def sprite(rng: np.random.Generator, h: int, w: int, density: float) -> np.ndarray:
    """A random 4-connected shape grown inside an h x w box to about `density` of it, cropped to its bounding box."""
    target = max(1, round(density * h * w))
    u = rng.random(8 * target + 2)  # one batch of draws: a call per cell would dominate the cost of a scene
    start = (int(u[0] * h), int(u[1] * w))
    inside = {start}
    frontier = [start]
    k = 2
    while len(inside) < target and frontier and k < len(u):
        i = int(u[k] * len(frontier))
        k += 1
        r, c = frontier[i]
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < h and 0 <= nc < w and (nr, nc) not in inside:
                frontier.append((nr, nc))
        if (r, c) not in inside:
            inside.add((r, c))
        frontier[i] = frontier[-1]
        frontier.pop()
    mask = np.zeros((h, w), dtype=bool)
    rows, cols = zip(*inside, strict=True)
    mask[list(rows), list(cols)] = True
    return mask[min(rows) : max(rows) + 1, min(cols) : max(cols) + 1]


def place(
    rng: np.random.Generator, canvas: np.ndarray, taken: np.ndarray, mask: np.ndarray, colors: np.ndarray
) -> tuple[int, int] | None:
    """Paint `mask` where no taken cell lies within one cell of it (objects never touch, not even at a corner, so
    every definition of an object agrees); its top-left corner, or None when no such spot turned up."""
    h, w = mask.shape
    big_h, big_w = canvas.shape
    if h > big_h or w > big_w:
        return None
    for r, c in rng.integers(0, [big_h - h + 1, big_w - w + 1], size=(PLACE_TRIES, 2)).tolist():
        if clear_around(taken, r, c, h, w):
            canvas[r : r + h, c : c + w][mask] = colors
            taken[r : r + h, c : c + w] |= mask
            return r, c
    return None


def _extent(rng: np.random.Generator, style: Style, canvas: np.ndarray) -> tuple[int, int]:
    """An object's box, no larger than the canvas (a style's extents may outgrow its smaller grids)."""
    lo, hi = style.extent
    h, w = rng.integers(lo, hi + 1, size=2).tolist()
    return min(h, canvas.shape[0]), min(w, canvas.shape[1])


def _template_mask(rng: np.random.Generator, style: Style) -> np.ndarray:
    """A shape of odd sides (3 or 5) whose box it spans, its center filled, in one piece: a stamp can be centered on
    a cell or hang from its first cell."""
    h, w = (3 if rng.random() < 0.7 else 5 for _ in range(2))
    for _ in range(PLACE_TRIES):
        mask = rng.random((h, w)) < max(style.density, 0.5)
        mask[h // 2, w // 2] = True
        if mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any() and n_components(mask) == 1:
            return mask
    mask = np.zeros((h, w), dtype=bool)  # a plus, which always is
    mask[h // 2], mask[:, w // 2] = True, True
    return mask


def _template(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    """One template shape and single marker pixels, mostly of other colors than the template's, each with room for
    the template centered on it and for the template hanging from it by its first cell (what `gen_stamps.stamp`
    draws), that room apart from the template's and from each other's."""
    mask = _template_mask(rng, style)
    colors = _colors(rng, style, int(mask.sum()), style.multicolor)
    if place(rng, canvas, taken, mask, colors) is None:
        return
    h, w = mask.shape
    cy, cx, ax = h // 2, w // 2, int(np.argmax(mask[0]))
    left, right = max(cx, ax), max(cx, w - 1 - ax)  # the room's columns either side of the marker
    room = np.ones((cy + h, left + right + 1), dtype=bool)
    others = [c for c in style.palette if c not in set(colors.tolist())] or list(style.palette)
    scratch = canvas.copy()
    for _ in range(_count(rng, style)):
        at = place(rng, scratch, taken, room, np.zeros(room.sum(), dtype=np.uint8))
        if at is not None:
            canvas[at[0] + cy, at[1] + left] = others[int(rng.integers(len(others)))]


def _beacons(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    """A large anchor shape and a few items beside it on one side (`style.side`), each in rows of its own among the
    anchor's: single pixels of one color (mostly not the anchor's), now and then a small sprite. What `gen_lines`
    acts on: every pixel's ray toward the anchor hits it, every item shares a row with it and none lies in another's
    path to it, and the pixels' lines, of one color, never clash."""
    local, held = np.rot90(canvas, style.side).copy(), np.rot90(taken, style.side).copy()  # the items to the left
    h, w = local.shape
    ah, aw = min(int(rng.integers(3, 6)), h), min(int(rng.integers(3, 6)), max(w - 4, 1))
    mask = sprite(rng, ah, aw, max(style.density, 0.6))
    colors = _colors(rng, style, int(mask.sum()), style.multicolor)
    mh, mw = mask.shape
    top, left = int(rng.integers(0, h - mh + 1)), int(rng.integers(min(4, w - mw), w - mw + 1))  # room at its left
    local[top : top + mh, left : left + mw][mask] = colors
    held[top : top + mh, left : left + mw] |= mask
    others = [c for c in style.palette if c not in set(colors.tolist())] or list(style.palette)
    dot = np.full(1, others[int(rng.integers(len(others)))], dtype=np.uint8)
    rows = rng.permutation(np.arange(top, top + mh))[: _count(rng, style)].tolist()
    free = set(rows)
    for r in rows:
        if r not in free:
            continue
        item = np.ones((1, 1), dtype=bool) if rng.random() < 0.8 else sprite(rng, 2, 2, 0.75)
        if item.shape[0] == 2 and r + 1 not in free:
            item = item[:1]
        ink = dot if item.size == 1 else _colors(rng, style, int(item.sum()), False)
        for c in rng.permutation(max(left - item.shape[1], 0))[:PLACE_TRIES].tolist():
            if clear_around(held, r, c, *item.shape):
                local[r : r + item.shape[0], c : c + item.shape[1]][item] = ink
                held[r : r + item.shape[0], c : c + item.shape[1]] |= item
                free -= set(range(r, r + item.shape[0]))
                break
    canvas[:] = np.rot90(local, -style.side)
    taken[:] = np.rot90(held, -style.side)


def _objects(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    if style.layout == "template":
        _template(rng, style, canvas, taken)
        return
    if style.layout == "beacons":
        _beacons(rng, style, canvas, taken)
        return
    for _ in range(_count(rng, style)):
        mask = sprite(rng, *_extent(rng, style, canvas), style.density)
        place(rng, canvas, taken, mask, _colors(rng, style, int(mask.sum()), style.multicolor))


def _rects(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    for _ in range(_count(rng, style)):
        mask = np.ones(_extent(rng, style, canvas), dtype=bool)
        place(rng, canvas, taken, mask, _colors(rng, style, mask.size, False))


def _frames(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    # An open frame (one border cell missing) looks like a closed one but encloses nothing: the contrast
    # is what makes "fill the enclosed background" a rule rather than "fill inside every frame".
    for _ in range(_count(rng, style)):
        h, w = _extent(rng, style, canvas)
        mask = np.ones((max(h, 3), max(w, 3)), dtype=bool)
        mask[1:-1, 1:-1] = False
        if rng.random() > style.density:
            border = np.argwhere(mask)
            border = border[((border[:, 0] % (mask.shape[0] - 1)) == 0) ^ ((border[:, 1] % (mask.shape[1] - 1)) == 0)]
            mask[tuple(border[rng.integers(len(border))])] = False
        place(rng, canvas, taken, mask, _colors(rng, style, int(mask.sum()), style.multicolor))


def _points(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    dot = np.ones((1, 1), dtype=bool)
    for _ in range(_count(rng, style) * 2):
        color = _colors(rng, style, 1, False)
        first = place(rng, canvas, taken, dot, color)
        if first is None or not style.paired:
            continue
        # Its partner: a free cell on the same row or column (chosen per pair).
        r, c = first
        if rng.random() < 0.5:
            spots = [(r, j) for j in range(canvas.shape[1]) if clear_around(taken, r, j, 1, 1)]
        else:
            spots = [(i, c) for i in range(canvas.shape[0]) if clear_around(taken, i, c, 1, 1)]
        if spots:
            rr, cc = spots[int(rng.integers(len(spots)))]
            canvas[rr, cc] = color[0]
            taken[rr, cc] = True


def _noise(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    on = rng.random(canvas.shape) < style.density
    canvas[on] = _colors(rng, style, int(on.sum()), True)


def _lines(rng: np.random.Generator, style: Style, canvas: np.ndarray, taken: np.ndarray) -> None:
    length = canvas.shape[0] if style.vertical else canvas.shape[1]
    across = canvas.shape[1] if style.vertical else canvas.shape[0]
    n = min(_count(rng, style), max(1, across // 2))
    for i in rng.permutation(across)[:n]:
        color = _colors(rng, style, length, style.multicolor)
        if style.vertical:
            canvas[:, i] = color
        else:
            canvas[i, :] = color


def _halves(rng: np.random.Generator, style: Style) -> np.ndarray:
    h, w = _shape(rng, style)
    # `multicolor` here means the reverse: both halves in one color (the output's color then says nothing).
    a_color, sep = style.palette[0], style.palette[2]
    b_color = a_color if style.multicolor else style.palette[1]
    halves = [np.where(rng.random((h, w)) < style.density, color, style.bg) for color in (a_color, b_color)]
    if style.vertical:
        return np.concatenate([halves[0], np.full((h, 1), sep), halves[1]], axis=1).astype(np.uint8)
    return np.concatenate([halves[0], np.full((1, w), sep), halves[1]], axis=0).astype(np.uint8)


def _mosaic(rng: np.random.Generator, style: Style) -> np.ndarray:
    shape = _shape(rng, style)
    return np.asarray(style.palette, dtype=np.uint8)[rng.integers(len(style.palette), size=shape)]


Scene = Callable[[np.random.Generator, Style, np.ndarray, np.ndarray], None]
SCENES: dict[str, Scene] = {
    "objects": _objects,
    "rects": _rects,
    "frames": _frames,
    "points": _points,
    "noise": _noise,
    "lines": _lines,
}


def draw_grid(rng: np.random.Generator, style: Style) -> np.ndarray:
    """One input of the style's family (uint8, writable)."""
    if style.family == "halves":
        return _halves(rng, style)
    if style.family == "mosaic":
        return _mosaic(rng, style)
    if style.family == "periodic":
        return draw_periodic(rng, style, _shape(rng, style))
    if style.family == "cells":
        return draw_cells(rng, style)
    canvas = np.full(_shape(rng, style), style.bg, dtype=np.uint8)
    taken = np.zeros(canvas.shape, dtype=bool)
    SCENES[style.family](rng, style, canvas, taken)
    if style.speckle:
        stray = (canvas == style.bg) & (rng.random(canvas.shape) < style.speckle)
        canvas[stray] = _colors(rng, style, int(stray.sum()), True)
    return canvas


def draw_inputs(rng: np.random.Generator, style: Style, n: int) -> list[np.ndarray]:
    """n distinct inputs of one style, none of them blank; fewer when a few tries per input did not find them
    (a style of tiny grids may have too few distinct scenes)."""
    seen: set[tuple] = set()
    grids: list[np.ndarray] = []
    for _ in range(3 * n):
        g = draw_grid(rng, style)
        key = grid_key(g)
        if key in seen or (style.family != "mosaic" and not (g != style.bg).any()):
            continue
        seen.add(key)
        grids.append(g)
        if len(grids) == n:
            break
    return grids
