"""The generator's lines from single pixels and moves to the largest object (gen_lines): each primitive on hand-made
grids and where it declines, the beacons scenes that fit them, and generate_task drawing each one."""

import collections

import numpy as np
import pytest

from testtime.data.gen_grids import draw_inputs, draw_style
from testtime.data.gen_lines import LINE_MAKERS, attract, cross_lines, extend_to_contact
from testtime.data.gen_objects import context
from testtime.data.gen_programs import generate_task


def g(text: str) -> np.ndarray:
    """A grid from rows of digits separated by spaces."""
    return np.array([[int(c) for c in row] for row in text.split()], dtype=np.uint8)


def eq(a: np.ndarray | None, text: str) -> bool:
    return a is not None and a.shape == g(text).shape and bool(np.array_equal(a, g(text)))


# ---------------------------------------------------------------- cross_lines


def test_cross_lines_run_behind_objects_to_the_border():
    grid = g("00000 02000 00000 00033 00033")
    assert eq(cross_lines(grid, 0, "row"), "00000 22222 00000 00033 00033")
    assert eq(cross_lines(grid, 0, "col"), "02000 02000 02000 02033 02033")
    assert eq(cross_lines(grid, 0, "both"), "02000 22222 02000 02033 02033")
    # Two pixels of one color: their lines may cross and share a row.
    assert eq(cross_lines(g("20000 00000 00002"), 0, "both"), "22222 20002 22222")
    assert eq(cross_lines(g("000 202 000"), 0, "row"), "000 222 000")


def test_cross_lines_declines_clashes_and_grids_without_pixels():
    assert cross_lines(g("20000 00000 00005"), 0, "both") is None  # a 2-line crosses a 5-line
    assert cross_lines(g("20005 00000 00000"), 0, "row") is None  # two colors share a row
    assert cross_lines(g("20005 00000 00000"), 0, "col") is not None  # their columns are apart
    assert cross_lines(g("0000 0330 0330 0000"), 0, "both") is None  # no single pixel


# ---------------------------------------------------------------- attract


def test_attract_moves_each_object_until_it_touches_the_largest():
    grid = g("000000000 100011100 000011101 000000000")
    assert eq(attract(grid, 0, False), "000000000 000111100 000011110 000000000")
    assert eq(attract(grid.T.copy(), 0, True).T, "000000000 000111100 000011110 000000000")
    # It stops at the first touch, here above a cell of the largest, whatever lies further along its row.
    assert eq(attract(g("1000002 0002222 0000222"), 0, False), "0001002 0002222 0000222")
    # A two-cell object keeps its shape; colors travel with their cells.
    assert eq(attract(g("000000 340222 000222"), 0, False), "000000 034222 000222")


def test_attract_declines():
    grid = g("000000000 100011100 000011101 000000000")
    assert attract(grid, 0, True) is None  # along columns the pixels share no column with the largest
    assert attract(g("1000 0000 0022 0022"), 0, False) is None  # no shared row
    assert attract(g("0000000 1010222 0000222"), 0, False) is None  # the far one would stop at the near one
    assert attract(g("220 000 022"), 0, False) is None  # a tie for the largest
    assert attract(g("0000 0220 0220 0000"), 0, False) is None  # one object only


# ---------------------------------------------------------------- extend_to_contact


def test_extend_to_contact_shoots_and_paints():
    grid = g("00000 02000 00000 00000 03300")
    assert eq(extend_to_contact(grid, 0, 0), "00000 02000 02000 02000 02200")
    # Rays to the left; two rays of one color paint one object.
    assert eq(extend_to_contact(g("3000 3002 3000 3002"), 0, 3), "2000 2222 2000 2222")
    assert eq(extend_to_contact(g("440 000 050"), 0, 2), "550 050 050")


def test_extend_to_contact_declines():
    grid = g("00000 02000 00000 00000 03300")
    assert extend_to_contact(grid, 0, 1) is None  # the ray right hits nothing
    assert extend_to_contact(g("0200 0000 3300 0000 0004"), 0, 0) is None  # 4's ray down leaves the grid
    assert extend_to_contact(g("020 000 030 000 444"), 0, 0) is None  # 2's ray hits the pixel 3, which shoots too
    assert extend_to_contact(g("2003 0000 4444"), 0, 0) is None  # a 2-ray and a 3-ray hit one object
    assert extend_to_contact(g("0000 0330 0330"), 0, 0) is None  # no single pixel


# ---------------------------------------------------------------- scenes and tasks


def test_beacons_scenes_fit_every_line_maker():
    rng = np.random.default_rng(5)
    for _ in range(6):
        style = draw_style(rng, "objects")
        while style.layout != "beacons":
            style = draw_style(rng, "objects")
        inputs = draw_inputs(rng, style, 12)
        ctx = context(inputs)
        for name, make in LINE_MAKERS.items():
            step = make(rng, ctx)
            assert step is not None, name
            assert sum(step.fn(x) is not None for x in inputs) >= len(inputs) // 2, step.name


@pytest.fixture(scope="module")
def tasks():
    rng = np.random.default_rng(17)
    return [t for t in (generate_task(rng, 6) for _ in range(500)) if t is not None]


def test_generate_task_draws_each_line_primitive(tasks):
    steps = collections.Counter(s for t in tasks for s in t.name.split("|")[1].split(">"))
    for name in LINE_MAKERS:
        assert sum(n for s, n in steps.items() if s.startswith(name)) >= 1, name


def test_one_step_line_tasks_are_what_their_names_say(tasks):
    fns = {"cross_lines": cross_lines, "attract": attract, "extend_to_contact": extend_to_contact}
    checked = 0
    for t in tasks:
        step = t.name.split("|")[1]
        name = next((n for n in fns if step.startswith(n)), None)
        if name is None or ">" in step:
            continue
        arg = step[len(name) + 1 :]
        if name == "cross_lines":
            kw = {"axes": arg}
        elif name == "attract":
            kw = {"vertical": arg == "cols"}
        else:
            kw = {"turns": ("down", "right", "up", "left").index(arg)}
        bg = int(np.bincount(np.concatenate([np.asarray(p.input).ravel() for p in t.pairs])).argmax())
        for e in t.pairs:
            assert np.array_equal(fns[name](np.asarray(e.input), bg, **kw), e.output), t.name
        checked += 1
    assert checked >= 3
