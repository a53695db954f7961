"""Invertible transformations of tasks: the dihedral group D8, color permutations, demo orders.

A `Transform` acts on every grid of a task the same way, so the transformed task is the
same puzzle in other clothes. `invert_grid` maps a prediction made on the transformed
task back to the original one exactly; voting relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from testtime.data.tasks import N_COLORS, Example, Grid, Task, freeze

IDENTITY_COLORS = tuple(range(N_COLORS))
D8_NAMES = ("id", "rot90", "rot180", "rot270", "transpose", "flip_h", "anti_transpose", "flip_v")


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Element k of D8: k % 4 quarter turns counter-clockwise, then a transpose if k >= 4."""
    g = np.rot90(grid, k % 4)
    return g.T if k >= 4 else g


@cache
def _d8_tables() -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    # Derive inverse and composition from the action on a grid with no symmetry.
    probe = np.arange(6).reshape(2, 3)
    images = [dihedral(probe, k) for k in range(8)]

    def which(g: np.ndarray) -> int:
        return next(k for k, im in enumerate(images) if im.shape == g.shape and np.array_equal(im, g))

    inverse = tuple(next(j for j in range(8) if np.array_equal(dihedral(images[k], j), probe)) for k in range(8))
    compose = tuple(tuple(which(dihedral(images[a], b)) for b in range(8)) for a in range(8))
    return inverse, compose


def d8_inverse(k: int) -> int:
    return _d8_tables()[0][k]


def d8_compose(a: int, b: int) -> int:
    """The element that equals applying `a` first, then `b`."""
    return _d8_tables()[1][a][b]


@dataclass(frozen=True)
class Transform:
    """Apply D8 element `d8`, map color c to `colors[c]`, and reorder train demos by `order`."""

    d8: int = 0
    colors: tuple[int, ...] = IDENTITY_COLORS
    order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.d8 < 8:
            raise ValueError(f"d8 index {self.d8} outside 0..7")
        if sorted(self.colors) != list(IDENTITY_COLORS):
            raise ValueError(f"colors {self.colors} is not a permutation of 0..9")
        if self.order is not None and sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"order {self.order} is not a permutation")

    @property
    def is_identity(self) -> bool:
        return self.d8 == 0 and self.colors == IDENTITY_COLORS and (self.order is None or self.order == tuple(sorted(self.order)))

    @property
    def name(self) -> str:
        parts = [D8_NAMES[self.d8]]
        if self.colors != IDENTITY_COLORS:
            parts.append("c" + "".join(map(str, self.colors)))
        if self.order is not None:
            parts.append("o" + ".".join(map(str, self.order)))
        return "+".join(parts)

    def apply_grid(self, grid: Grid) -> Grid:
        lut = np.asarray(self.colors, dtype=np.uint8)
        return freeze(lut[dihedral(grid, self.d8)])

    def invert_grid(self, grid: Grid) -> Grid:
        inv = np.argsort(np.asarray(self.colors)).astype(np.uint8)
        return freeze(dihedral(inv[grid], d8_inverse(self.d8)))

    def apply(self, task: Task) -> Task:
        def ex(e: Example) -> Example:
            return Example(self.apply_grid(e.input), None if e.output is None else self.apply_grid(e.output))

        train = tuple(ex(e) for e in task.train)
        if self.order is not None:
            if len(self.order) != len(train):
                raise ValueError(f"order has {len(self.order)} entries, task {task.id} has {len(train)} demos")
            train = tuple(train[i] for i in self.order)
        return replace(task, train=train, test=tuple(ex(e) for e in task.test))

    def inverse(self) -> Transform:
        inv_colors = tuple(int(i) for i in np.argsort(np.asarray(self.colors)))
        inv_order = None if self.order is None else tuple(int(i) for i in np.argsort(np.asarray(self.order)))
        return Transform(d8_inverse(self.d8), inv_colors, inv_order)

    def then(self, other: Transform) -> Transform:
        """The transform that applies `self` first, then `other`."""
        colors = tuple(other.colors[c] for c in self.colors)
        if self.order is None or other.order is None:
            order = other.order if self.order is None else self.order
        else:
            order = tuple(self.order[i] for i in other.order)
        return Transform(d8_compose(self.d8, other.d8), colors, order)


def random_colors(rng: np.random.Generator, keep_background: bool = True) -> tuple[int, ...]:
    if keep_background:
        return (0, *(int(c) for c in rng.permutation(np.arange(1, N_COLORS))))
    return tuple(int(c) for c in rng.permutation(N_COLORS))


def random_transform(
    rng: np.random.Generator,
    n_demos: int | None = None,
    *,
    d8: bool = True,
    colors: bool = True,
    keep_background: bool = True,
    shuffle: bool = True,
) -> Transform:
    return Transform(
        d8=int(rng.integers(8)) if d8 else 0,
        colors=random_colors(rng, keep_background) if colors else IDENTITY_COLORS,
        order=tuple(int(i) for i in rng.permutation(n_demos)) if shuffle and n_demos else None,
    )


def dihedral_views() -> list[Transform]:
    """The 8 spatial views used by augmented inference, identity first (it wins ties)."""
    return [Transform(d8=k) for k in range(8)]
