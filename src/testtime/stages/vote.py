"""Hierarchical voting over predictions made under invertible transformations.

Predictions arrive already mapped back to the original task's frame. Votes are first
counted within each group (one group per transformation, e.g. a D8 element, possibly
seen under several demo orders), the top few of each group go on, and the groups then
vote among themselves for the final attempts. Ties go to what the identity view said,
then to the candidate seen first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from testtime.data.tasks import Grid, freeze


@dataclass(frozen=True)
class Prediction:
    """One decoded answer under one view, already inverted. `grid` is None for an invalid decode."""

    group: str
    grid: Grid | None
    logprob: float = 0.0
    sampled: bool = False  # a less likely answer depth-first sampling added after its view's greedy one


@dataclass(frozen=True)
class Candidate:
    grid: Grid
    votes: int  # groups that kept this grid among their top candidates
    count: int  # raw number of predictions that equal it
    in_identity: bool

    def to_json(self) -> dict:
        return {"grid": self.grid.astype(int).tolist(), "votes": self.votes, "count": self.count}


def _key(grid: Grid) -> tuple:
    return (grid.shape, grid.tobytes())


def hierarchical_vote(
    predictions: Sequence[Prediction], *, per_group: int = 3, identity: str = "id"
) -> list[Candidate]:
    """All surviving candidates, best first; the first two are the two attempts."""
    grids: dict[tuple, Grid] = {}
    first_seen: dict[tuple, int] = {}
    counts: Counter[tuple] = Counter()
    by_group: dict[str, Counter[tuple]] = {}
    for n, p in enumerate(predictions):
        if p.grid is None:
            continue
        k = _key(p.grid)
        grids.setdefault(k, p.grid)
        first_seen.setdefault(k, n)
        counts[k] += 1
        by_group.setdefault(p.group, Counter())[k] += 1

    votes: Counter[tuple] = Counter()
    for counter in by_group.values():
        ranked = sorted(counter, key=lambda k: (-counter[k], first_seen[k]))
        for k in ranked[:per_group]:
            votes[k] += 1
    in_identity = set(by_group.get(identity, Counter()))
    order = sorted(votes, key=lambda k: (-votes[k], -counts[k], k not in in_identity, first_seen[k]))
    return [Candidate(freeze(grids[k]), votes[k], counts[k], k in in_identity) for k in order]


def attempts(candidates: Sequence[Candidate], n: int = 2) -> list[Grid | None]:
    """The first n candidates as attempts, padded with None (an empty attempt)."""
    out: list[Grid | None] = [c.grid for c in candidates[:n]]
    return out + [None] * (n - len(out))


def is_solved(attempt_grids: Sequence[Grid | None], truth: Grid) -> bool:
    return any(a is not None and a.shape == truth.shape and bool(np.array_equal(a, truth)) for a in attempt_grids)
