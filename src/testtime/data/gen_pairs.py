"""The pairs a generated task keeps: n of its candidates where every item a step relies on (`Step.witness`, and
the colors an output gains) is shown by at least MIN_WITNESSES of them, so no pair's rule rests on what no other
pair shows. Items are opaque here: a pair is the frozenset of what it shows (`gen_programs.evidence`).
"""

from __future__ import annotations

from collections import Counter

MIN_WITNESSES = 2  # chosen pairs that must show each item


def _counts(items: list[frozenset], idx: list[int]) -> Counter:
    return Counter(x for i in idx for x in items[i])


def _rare(items: frozenset, counts: Counter, least: int = MIN_WITNESSES) -> bool:
    return any(counts[x] < least for x in items)


def _repair(items: list[frozenset], chosen: list[int], spare: list[int]) -> bool:
    """One repair of a chosen pair L that shows an item too few chosen pairs show, in place; False when none
    applies. Either a spare pair that shows L's rare items and nothing new comes in for a chosen pair that every
    item can spare (rare content is kept), or a spare pair that shows nothing new takes L's place."""
    counts = _counts(items, chosen)
    lonely = next(i for i in chosen if _rare(items[i], counts))
    rare = {x for x in items[lonely] if counts[x] < MIN_WITNESSES}
    for p in spare:
        if rare <= items[p] and all(counts[x] for x in items[p]):
            after = counts + Counter(items[p])
            out = next((r for r in chosen if r != lonely and not _rare(items[r], after, MIN_WITNESSES + 1)), None)
            if out is not None:
                chosen[chosen.index(out)], spare[spare.index(p)] = p, out
                return True
    without = counts - Counter(items[lonely])
    for p in spare:
        if all(without[x] for x in items[p]):
            chosen[chosen.index(lonely)], spare[spare.index(p)] = p, lonely
            return True
    return False


def choose_pairs(items: list[frozenset], n: int) -> list[int] | None:
    """n candidate pairs (indices, ascending) where every item a pair shows (`evidence`) is shown by at least
    MIN_WITNESSES of them, so each pair's rule is learnable from the others; None when greedy choice fails.

    Candidates with an item too rare among all candidates go first (until none is left), then the first n are
    repaired one lonely pair at a time (`_repair`)."""
    keep = list(range(len(items)))
    while True:
        counts = _counts(items, keep)
        kept = [i for i in keep if not _rare(items[i], counts)]
        if len(kept) == len(keep):
            break
        keep = kept
    if len(keep) < n:
        return None
    chosen, spare = keep[:n], keep[n:]
    for _ in range(2 * n):
        counts = _counts(items, chosen)
        if not any(_rare(items[i], counts) for i in chosen):
            return sorted(chosen)
        if not _repair(items, chosen, spare):
            return None
    return None
