"""The pretraining campaign's ship rule: a stretch against the shipped model, judged on the shipped model's records.

A stretch ships where it scores more in total than the shipped model on the 400 ARC-AGI-1 evaluation tasks with TTT
(the yardstick), paired, and where neither guard shows it worse: ARC-AGI-2's 120 evaluation tasks with TTT, and the
400 without TTT. A guard holds the ship only where the stretch's losses there are beyond the noise: fewer than
`GUARD_ALPHA` of coin flips over the tasks that changed would lose as many (a one-sided sign test: a guard asks only
whether the stretch is worse, and v9 scores on 4 of ARC-AGI-2's tasks, too few for a two-sided test at 0.1 ever to
hold).
A guard that must merely not be lower rejects better models by chance: on 2026-12-07 the ninth stretch, 211.5
against v9's 202, was held by 2.5 against 3.5 on ARC-AGI-2 (0 won, 2 lost) and 80 against 84.5 without TTT (8 won,
13 lost) (results/h100-campaign-2026-12-07b.md).

    testtime ship SHIPPED STRETCH                                   # the yardstick: better, not-better, partial
    testtime ship SHIPPED STRETCH --guard arc2:A2:B2 --guard no-ttt:A3:B3     # and the decision (`decide`)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from testtime.core.store import Record
from testtime.report.compare import Comparison, adapters_differ, pair

GUARD_ALPHA = 0.1  # holds at 0 won and 4 lost (p = 0.06), 13 won and 22 lost (0.09); not at 0 and 3, 14 and 22


class ShipError(ValueError):
    """Two runs that cannot be paired for the rule: their comparison would judge something besides the weights."""


@dataclass(frozen=True)
class Verdict:
    name: str  # what was compared: "400", or a guard's name
    word: str  # the yardstick: better, not-better, partial; a guard: clear, worse, partial
    line: str  # one line for the runner's log

    @property
    def passes(self) -> bool:
        return self.word in ("better", "clear")


def _paired(shipped: Sequence[Record], stretch: Sequence[Record]) -> Comparison:
    # Two adapters a task win about 10 of the 400 whatever the weights (h100-arch-adapters-2026-12-06.md).
    counts = adapters_differ(shipped, stretch)  # None too where a run has no scored record: `partial` then
    if counts:
        raise ShipError(f"the shipped records train {sorted(counts[0])} adapters a task, the stretch's "
                        f"{sorted(counts[1])}")
    return pair(shipped, stretch)


def losses_p(won: int, lost: int) -> float:
    """One-sided sign test: the chance of at least `lost` losses among `won + lost` changed tasks, were each a coin."""
    n = won + lost
    return sum(math.comb(n, i) for i in range(lost, n + 1)) / 2**n


def _scored(records: Sequence[Record]) -> int:
    return sum(r.get("score") is not None for r in records)


def _said(c: Comparison, p: float) -> str:
    a, b = c.totals
    return f"stretch {b:g} against shipped {a:g} on {len(c.pairs)} tasks ({c.b_won} won, {c.b_lost} lost, p = {p:.3g})"


def _partial(c: Comparison, shipped: Sequence[Record]) -> bool:
    # a subset (an evaluation cut short, --limit, or a reference with nothing scored) says nothing of the whole set
    return not c.pairs or len(c.pairs) < _scored(shipped)


def yardstick(shipped: Sequence[Record], stretch: Sequence[Record]) -> Verdict:
    """`better` where the stretch scored more in total over the tasks the shipped model scored, paired (the line
    gives the two-sided sign test); `partial` where it did not score them all."""
    c = _paired(shipped, stretch)
    a, b = c.totals
    word = "partial" if _partial(c, shipped) else "better" if b > a else "not-better"
    return Verdict("400", word, f"{word}: {_said(c, c.p_value)}")


def guard(name: str, shipped: Sequence[Record], stretch: Sequence[Record], alpha: float = GUARD_ALPHA) -> Verdict:
    """`worse` where the one-sided sign test of the stretch's losses falls below `alpha` (the line gives it),
    `clear` otherwise; `partial` where it did not score all of the shipped model's tasks."""
    c = _paired(shipped, stretch)
    p = losses_p(c.b_won, c.b_lost)
    word = "partial" if _partial(c, shipped) else "worse" if p < alpha else "clear"
    return Verdict(name, word, f"{name} {word}: {_said(c, p)}")


def decide(verdicts: Sequence[Verdict]) -> str:
    """`ship` where every verdict passes, else `hold` and which did not."""
    failed = [v.name for v in verdicts if not v.passes]
    return "ship" if not failed else f"hold ({', '.join(failed)})"
