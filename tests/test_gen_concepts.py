"""The generator's concepts of periodic patterns (gen_patterns), grids divided into cells (gen_cells) and template
stamping (gen_stamps): each primitive on hand-made grids, the period finder on random patterns, the scenes that fit
each rule, and generate_task drawing them all."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.data.gen_cells import CELL_MAKERS, cell_summary, fill_marked_cells, odd_cell, overlay_cells, split_cells
from testtime.data.gen_grids import draw_inputs, draw_style
from testtime.data.gen_objects import context
from testtime.data.gen_patterns import (
    PATTERN_MAKERS,
    complete_pattern,
    continue_pattern,
    masked_patch,
    motif_side,
    periods,
    rectangles,
    restore,
)
from testtime.data.gen_programs import MAKERS, generate_task
from testtime.data.gen_stamps import stamp

settings.register_profile("gen", max_examples=40, deadline=None)
settings.load_profile("gen")

NEW_STEPS = (
    "complete_pattern",
    "masked_patch",
    "continue_pattern",
    "odd_cell",
    "overlay_cells",
    "cell_summary",
    "fill_marked_cells",
    "stamp",
)


def g(text: str) -> np.ndarray:
    """A grid from rows of digits separated by spaces."""
    return np.array([[int(c) for c in row] for row in text.split()], dtype=np.uint8)


def eq(a: np.ndarray | None, text: str) -> bool:
    return a is not None and a.shape == g(text).shape and bool(np.array_equal(a, g(text)))


# ---------------------------------------------------------------- periodic patterns


CHECKER = "121212 212121 121212 212121 121212 212121"


def test_complete_pattern_restores_the_masked_cells():
    assert eq(complete_pattern(g("121212 212121 120012 210021 121212 212121"), 0), CHECKER)
    # A plain 2 x 3 motif with two holes, one at the border.
    grid = g("123123 456006 123123 450456 123123 456456")
    assert eq(complete_pattern(grid, 0), "123123 456456 123123 456456 123123 456456")
    assert complete_pattern(grid, 7) is None  # nothing in that color: nothing to restore


def test_complete_pattern_declines_what_the_visible_cells_leave_open():
    # Period 2 (1,2 repeating) and period 3 (1,2,1 repeating) both fit "121": they fill the rest differently.
    assert complete_pattern(g("12100012"), 0) is None
    assert complete_pattern(g("111111 111111 110011"), 0) is None  # one color: a flood fill, not a pattern
    assert complete_pattern(g("123456 654321 120056 615243"), 0) is None  # no period at all
    # The pattern in a corner, the rest hidden, is continue_pattern's rule, not a hole in a pattern.
    assert complete_pattern(g("1212 2121 1212 2121 1212 0000"), 0) is None


def test_the_period_may_run_diagonally():
    # Each row is the one above shifted one cell right: the period is the lattice (1, 1, 3).
    grid = g("123123 312312 231231 123003 312002 231231")
    assert (1, 1, 3) in periods(grid, grid != 0)
    assert eq(complete_pattern(grid, 0), "123123 312312 231231 123123 312312 231231")


def test_masked_patch_is_what_the_one_rectangle_hides():
    assert eq(masked_patch(g("121212 212121 120012 210021 121212 212121"), 0), "12 21")
    assert masked_patch(g("001212 002121 121212 212100 121200 212121"), 0) is None  # two rectangles
    assert masked_patch(g("121212 210121 120012 212121 121212 212121"), 0) is None  # not a rectangle


def test_continue_pattern_from_a_corner():
    assert eq(continue_pattern(g("1212 2121 1212 2121 1212 0000"), 0), "1212 2121 1212 2121 1212 2121")
    assert eq(continue_pattern(g("12120 21210 12120 21210"), 0), "12121 21212 12121 21212")
    # Two rows of four shown: the next two could repeat them shifted by a cell (a period of two rows, shifted).
    assert continue_pattern(g("1212 2121 0000 0000"), 0) is None
    assert continue_pattern(g("1212 2021 1212 2121 1212 0000"), 0) is None  # a hole: no corner rectangle
    assert continue_pattern(g("1212 2121 1212 2121 1212 2121"), 0) is None  # nothing to continue


@st.composite
def hidden_patterns(draw):
    """A periodic grid of colors 0-3 (a plain or diagonal lattice that restore looks for), and 1-3 rectangles to
    hide in it."""
    py, px = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh = draw(st.integers(0, px - 1))
    h, w = draw(st.integers(2 * py, 14)), draw(st.integers(2 * px, 14))
    motif = np.array(draw(st.lists(st.integers(0, 3), min_size=py * px, max_size=py * px)), np.uint8).reshape(py, px)
    r, c = np.indices((h, w))
    grid = motif[r % py, (c - sh * (r // py)) % px]
    hidden = np.zeros((h, w), dtype=bool)
    for _ in range(draw(st.integers(1, 3))):
        top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        hidden[top : top + draw(st.integers(1, 7)), left : left + draw(st.integers(1, 7))] = True
    return grid, hidden


@settings(max_examples=300)
@given(hidden_patterns())
def test_restore_gives_back_the_pattern_whenever_it_answers(case):
    grid, hidden = case
    masked = np.where(hidden, np.uint8(9), grid)  # 9: a color the motif lacks
    out = restore(masked, hidden)
    assert out is None or np.array_equal(out, grid)


def test_restore_answers_most_random_patterns():
    """The property above is no tautology: on random cases of it, restore mostly answers (and is then right)."""
    rng = np.random.default_rng(0)
    answered = 0
    for _ in range(200):
        py, px = rng.integers(2, 5, size=2)
        sh = int(rng.integers(0, px))
        h, w = (int(rng.integers(2 * p + 4, 20)) for p in (py, px))
        motif = rng.integers(0, 4, size=(py, px)).astype(np.uint8)
        r, c = np.indices((h, w))
        grid = motif[r % py, (c - sh * (r // py)) % px]
        hidden = np.zeros((h, w), dtype=bool)
        top, left = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        hidden[top : top + 3, left : left + 3] = True
        out = restore(np.where(hidden, np.uint8(9), grid), hidden)
        if out is not None:
            assert np.array_equal(out, grid)
            answered += 1
    assert answered > 150


def test_a_mirrored_motif_has_every_side_whose_period_restore_reads():
    """A mirrored tiling repeats every two motifs: sides 2 and 3 (periods 4 and 6, MAX_PERIOD), 3 once the room holds
    two repeats of 6; a plain motif 2 to 5."""
    rng = np.random.default_rng(0)
    for room, mirrored, sides in ((8, True, {2}), (11, True, {2}), (12, True, {2, 3}), (30, True, {2, 3}),
                                  (8, False, {2, 3, 4}), (30, False, {2, 3, 4, 5})):
        assert {motif_side(rng, room, mirrored) for _ in range(200)} == sides, (room, mirrored)


def test_periodic_inputs_fit_their_layout():
    rng = np.random.default_rng(11)
    seen = collections.Counter()
    for _ in range(30):
        style = draw_style(rng, "periodic")
        for x in draw_inputs(rng, style, 6):
            hidden = x == style.bg
            assert hidden.any() and rectangles(hidden) is not None or style.layout == "partial"
            fn = {"partial": continue_pattern}.get(style.layout, complete_pattern)
            kw = {"bg": style.bg} if style.layout == "partial" else {"mask": style.bg}
            out = fn(x, **kw)
            seen[style.layout, out is not None] += 1
            if out is not None:
                assert not (out == style.bg).any() and set(np.unique(out)) <= set(style.palette)
            if style.layout == "patch":
                assert len(rectangles(hidden)) == 1
    for layout in ("masked", "patch", "partial"):  # the rule is defined on nearly all of a layout's inputs
        assert seen[layout, True] > 4 * seen[layout, False], seen


# ---------------------------------------------------------------- cells


CELLS = "12513 00500 55555 12512 00500"  # 2 x 2 cells of side 2 between lines of 5


def test_split_cells():
    cells = split_cells(g(CELLS), 5)
    assert [[c.tolist() for c in row] for row in cells] == [
        [[[1, 2], [0, 0]], [[1, 3], [0, 0]]],
        [[[1, 2], [0, 0]], [[1, 2], [0, 0]]],
    ]
    assert split_cells(g(CELLS), 0) is None  # no line of that color
    assert split_cells(g("12513 00500 55555 12512 00505"), 5) is None  # the line color inside a cell
    assert split_cells(g("15123 05000 55555 15123"), 5) is None  # cells of unequal width
    assert split_cells(g("55555 12512 00500"), 5) is None  # a line on the border
    assert len(split_cells(g("10501"), 5)[0]) == 2  # one row of two cells


def test_odd_cell():
    assert eq(odd_cell(g(CELLS), 5), "13 00")
    assert odd_cell(g("12513 00500 55555 12513 00500"), 5) is None  # two of each: none is odd
    assert odd_cell(g("12513 00500"), 5) is None  # two cells: each differs from the other
    assert odd_cell(g("12512 00500 55555 12512 00500"), 5) is None  # all alike


def test_overlay_cells():
    grid = g("10511 01500")
    assert eq(overlay_cells(grid, 5, 0, "or", 7), "77 07")
    assert eq(overlay_cells(grid, 5, 0, "and", 7), "70 00")
    assert eq(overlay_cells(grid, 5, 0, "xor", 7), "07 07")
    assert eq(overlay_cells(g("10510510 01501511"), 5, 0, "xor", 7), "00 70")  # xor: set in exactly one cell
    assert overlay_cells(grid, 3, 0, "or", 7) is None


def test_cell_summary():
    grid = g("11522500 10500500")
    assert eq(cell_summary(grid, 5, 0, None, 0), "120")
    assert cell_summary(g("12511 00500"), 5, 0, None, 0) is None  # a tie in a cell
    assert eq(cell_summary(g("14522 11500"), 5, 0, 4, 8), "82")  # a cell holding the marker
    assert eq(cell_summary(g("14522 11500"), 5, 0, None, 8), "12")


def test_fill_marked_cells():
    grid = g("10500 04500 55555 00504 30500")
    assert eq(fill_marked_cells(grid, 5, 4), "44500 44500 55555 00544 30544")
    assert eq(fill_marked_cells(grid, 5, 6), "10500 04500 55555 00504 30500")  # no marker: nothing filled
    assert fill_marked_cells(grid, 9, 4) is None


def test_cells_inputs_fit_their_layout():
    rng = np.random.default_rng(12)
    for _ in range(30):
        style = draw_style(rng, "cells")
        sep, marker = style.palette[0], style.palette[-1]
        for x in draw_inputs(rng, style, 6):
            cells = split_cells(x, sep)
            assert cells is not None and len(cells) * len(cells[0]) >= 2
            assert {c.shape for row in cells for c in row} == {(style.extent[0],) * 2}
            if style.layout == "odd":
                assert odd_cell(x, sep) is not None
            if style.layout == "marked":
                held = [(c == marker).sum() for row in cells for c in row]
                assert max(held) == 1 and sum(held) >= 1  # single marker pixels, in some cell of every input


# ---------------------------------------------------------------- template stamping


SCENE = "0100000 1110000 0100000 0000000 0000000 0000200 0000000"


def test_stamp_centered_and_recolored():
    assert eq(stamp(g(SCENE), 0, True, False), "0100000 1110000 0100000 0000000 0000100 0001110 0000100")
    assert eq(stamp(g(SCENE), 0, True, True), "0100000 1110000 0100000 0000000 0000200 0002220 0000200")


def test_stamp_hangs_from_the_first_cell():
    grid = g("0100000 1110000 0100000 0000200 0000000 0000000 0000000")
    assert eq(stamp(grid, 0, False, False), "0100000 1110000 0100000 0000100 0001110 0000100 0000000")
    # An L: its first cell is its top-left corner; the copy of two colors keeps them.
    grid = g("3000000 3400000 0000000 0000000 0000500 0000000")
    assert eq(stamp(grid, 0, False, False), "3000000 3400000 0000000 0000000 0000300 0000340")


def test_stamp_declines():
    assert stamp(g("0100000 1110000 0100000 0000000 0000000 0000000 0000002"), 0, True, False) is None  # off the grid
    assert stamp(g("0100000 1110000 0100000 0000200 0000000 0000200 0000000"), 0, True, False) is None  # overlap
    assert stamp(g("0100000 1110000 0100000 0000000 0000000 0000011 0000200"), 0, True, False) is None  # 2 shapes
    assert stamp(g("1100000 1100000 0000000 0000000 0000200 0000000 0000000"), 0, True, False) is None  # even sides
    assert stamp(g("0100000 1110000 0100000 0000000 0000000 0000000 0000000"), 0, True, False) is None  # no marker


def test_template_scenes_fit_stamping():
    rng = np.random.default_rng(13)
    defined = total = 0
    for _ in range(40):
        style = draw_style(rng, "objects")
        if style.layout != "template":
            continue
        for x in draw_inputs(rng, style, 6):
            total += 1
            defined += all(stamp(x, style.bg, centered, False) is not None for centered in (True, False))
    assert total > 20 and defined > 0.8 * total


# ---------------------------------------------------------------- makers and generate_task


def test_makers_read_the_scene_and_carry_witnesses():
    rng = np.random.default_rng(14)
    style = draw_style(rng, "periodic")
    while style.layout != "patch":
        style = draw_style(rng, "periodic")
    inputs = draw_inputs(rng, style, 6)
    step = MAKERS["complete_pattern"](rng, context(inputs))
    assert step.fn.keywords["mask"] == style.bg and step.witness(inputs[0]) == {style.bg}
    style = draw_style(rng, "cells")
    while style.layout != "marked":
        style = draw_style(rng, "cells")
    inputs = draw_inputs(rng, style, 6)
    step = MAKERS["fill_marked_cells"](rng, context(inputs))
    assert step.fn.keywords == {"sep": style.palette[0], "marker": style.palette[-1]}
    assert step.witness(inputs[0]) == {style.palette[0], style.palette[-1]}
    # Elsewhere they decline at once: no grid lines in a scene of sprites or a mosaic, no mask in noise.
    for family, makers in (("objects", CELL_MAKERS), ("mosaic", CELL_MAKERS), ("noise", PATTERN_MAKERS)):
        ctx = context(draw_inputs(rng, draw_style(rng, family), 6))
        assert all(make(rng, ctx) is None for make in makers.values()), family


@pytest.fixture(scope="module")
def new_tasks():
    """Tasks of 6 pairs from 600 draws of one seed, those that use a new primitive or a new family."""
    rng = np.random.default_rng(31)
    tasks = [generate_task(rng, 6) for _ in range(600)]
    return [t for t in tasks if t is not None]


def test_generate_task_draws_every_new_family_and_primitive(new_tasks):
    families = collections.Counter(t.name.split("|")[0] for t in new_tasks)
    assert families["periodic"] >= 10 and families["cells"] >= 10
    steps = collections.Counter(s for t in new_tasks for s in t.name.split("|")[1].split(">"))
    for name in NEW_STEPS:
        assert sum(n for s, n in steps.items() if s.startswith(name)) >= 2, name
    share = sum(any(s.startswith(NEW_STEPS) for s in t.name.split("|")[1].split(">")) for t in new_tasks)
    assert 0.08 < share / len(new_tasks) < 0.35


def test_new_tasks_are_deterministic(new_tasks):
    rng = np.random.default_rng(31)
    again = [t for t in (generate_task(rng, 6) for _ in range(600)) if t is not None]
    assert [t.name for t in again] == [t.name for t in new_tasks]
    assert all(a.pairs == b.pairs for a, b in zip(again, new_tasks, strict=True))


PATTERN_STEPS = {
    "complete_pattern": complete_pattern,
    "masked_patch": masked_patch,
    "continue_pattern": continue_pattern,
}


def test_pattern_tasks_are_what_their_names_say(new_tasks):
    """One-step pattern tasks: some one color makes the primitive give every pair's output from its input."""
    checked = 0
    for t in new_tasks:
        fn = PATTERN_STEPS.get(t.name.split("|")[1])
        if fn is None:
            continue
        fits = [c for c in range(10) if all(np.array_equal(fn(np.asarray(e.input), c), e.output) for e in t.pairs)]
        assert fits, t.name
        checked += 1
    assert checked >= 5
