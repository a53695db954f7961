"""The recall of the right grid among the candidates (each record's `recall`, the summary's `recall`): what limits
any selection, kept per test input and summed like pass@2."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from testtime.core.schema import check_record
from testtime.recipes.grid_records import recall_note
from testtime.report.report import print_summary, summarize
from testtime.stages.selection import Ranked
from testtime.stages.vote import Prediction

G = [np.full((2, 2), k, dtype=np.uint8) for k in range(4)]


def test_a_record_says_how_many_candidates_and_whether_the_right_one_is_among_them():
    first = [Prediction("id", G[0]), Prediction("rot90", G[1]), Prediction("flip_h", G[0]), Prediction("x", None)]
    second = [Prediction("id", G[2]), Prediction("rot90", G[3])]
    # G[3] was decoded but no view group kept it among its top ones: found, yet not ranked.
    ranked = [[Ranked(G[1], 1, 1), Ranked(G[0], 2, 2)], [Ranked(G[2], 1, 1)]]
    note = recall_note([first, second], ranked, [G[0], G[3]])
    assert note == {"candidates": [2, 2], "found": [True, True], "rank": [1, None]}
    missed = recall_note([first, second], ranked, [G[2], G[1]])
    assert missed["found"] == [False, False] and missed["rank"] == [None, None]
    unknown = recall_note([first, second], ranked, [None, G[1]])
    assert unknown == {"candidates": [2, 2], "found": None, "rank": None}


def test_the_summary_sums_recall_like_pass_at_2_and_prints_it():
    recs = [
        {"task_id": "a", "score": 0.5, "correct": [True, False], "recall": {"candidates": [3, 1], "found": [True, True],
                                                                          "rank": [0, 4]}},
        {"task_id": "b", "score": 0.0, "correct": [False], "recall": {"candidates": [2], "found": [False], "rank": [None]}},
        {"task_id": "c", "score": 1.0, "correct": [True]},  # a record from before recall was kept
    ]
    for r in recs:
        check_record(json.loads(json.dumps(r)), "results.jsonl:1")
    s = summarize(recs)
    assert s["recall"] == pytest.approx(1.0) and s["n_recall"] == 2 and s["candidates"] == pytest.approx(2.0)
    out = io.StringIO()
    print_summary(recs, console=Console(file=out, width=200))
    assert "right grid among candidates (recall)" in out.getvalue() and "1 / 2, 2.0 candidates" in out.getvalue()
    assert "recall" not in summarize(recs[2:])  # none to count: no line, no zero


def test_a_bad_recall_note_is_refused_with_its_field():
    with pytest.raises(ValueError, match=r"recall\.candidates\[0\]"):
        check_record({"task_id": "a", "recall": {"candidates": [-1], "found": [True]}}, "r.jsonl:1")
