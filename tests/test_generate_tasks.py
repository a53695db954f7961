"""The procedural task generator: inputs look alike within a task, primitives do what their names say, and
generate_task is deterministic, valid and diverse."""

import collections
import time
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import testtime.data.gen_programs as gen_programs
from testtime.data.augment import D8_NAMES, dihedral
from testtime.data.gen_grids import FAMILIES, draw_inputs, draw_style, sprite
from testtime.data.gen_moves import downscale, extract_unique, rigid_gravity, sort_by_size, to_border
from testtime.data.gen_objects import (
    Step,
    boxes,
    colors_in,
    connect,
    context,
    count_bar,
    count_rows,
    drop_border_objects,
    fill_enclosed,
    halo,
    hollow,
    isolated,
    keep_extreme,
    majority,
    rays,
    recolor_holed,
    recolor_rank,
    recolor_size,
    remove_small,
    sizes_beside,
    sizes_in,
)
from testtime.data.gen_programs import (
    MAKERS,
    Program,
    acceptable,
    choose_pairs,
    crop,
    draw_step,
    generate_task,
    gravity,
    keep_half,
    logic,
    recolor,
    shift,
    symmetrize,
    tile,
    upscale,
)
from testtime.data.tasks import validate_grid

settings.register_profile("gen", max_examples=40, deadline=None)
settings.load_profile("gen")


def g(text: str) -> np.ndarray:
    """A grid from rows of digits separated by spaces."""
    return np.array([[int(c) for c in row] for row in text.split()], dtype=np.uint8)


def eq(a: np.ndarray | None, text: str) -> bool:
    return a is not None and a.shape == g(text).shape and bool(np.array_equal(a, g(text)))


@st.composite
def grids(draw, max_side: int = 8, colors: int = 3):
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, colors - 1), min_size=h * w, max_size=h * w))
    return np.array(cells, dtype=np.uint8).reshape(h, w)


@pytest.fixture(scope="module")
def draws():
    """300 draws of 10 pairs from one seed: what the statistics below are measured on."""
    rng = np.random.default_rng(2024)
    return [generate_task(rng, 10) for _ in range(300)]


# ---------------------------------------------------------------- generate_task


@given(st.integers(0, 2**32 - 1), st.integers(2, 6))
def test_same_seed_same_task(seed, n):
    a, b = generate_task(np.random.default_rng(seed), n), generate_task(np.random.default_rng(seed), n)
    assert (a is None) == (b is None)
    if a is not None:
        assert a.name == b.name and a.pairs == b.pairs


@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_every_task_is_valid_and_distinct(seed, n):
    task = generate_task(np.random.default_rng(seed), n)
    if task is None:
        return
    family, program = task.name.split("|")
    assert family in FAMILIES and 1 <= len(program.split(">")) <= 3
    assert len(task.pairs) == n
    for e in task.pairs:
        for grid in (e.input, e.output):
            assert grid.dtype == np.uint8 and not grid.flags.writeable
            validate_grid(grid)  # raises on a bad shape or color
        assert not (e.input.shape == e.output.shape and np.array_equal(e.input, e.output))
    assert len({(e.input.shape, e.input.tobytes()) for e in task.pairs}) == n
    assert n == 1 or len({(e.output.shape, e.output.tobytes()) for e in task.pairs}) > 1


def test_acceptance_and_diversity(draws):
    tasks = [t for t in draws if t is not None]
    assert len(tasks) / len(draws) > 0.3
    names = collections.Counter(t.name for t in tasks)
    assert len(names) > 0.5 * len(tasks)  # most programs are drawn once
    assert {t.name.split("|")[0] for t in tasks} == set(FAMILIES)
    steps = {s for t in tasks for s in t.name.split("|")[1].split(">")}
    assert len(steps) >= 40
    assert {len(t.name.split("|")[1].split(">")) for t in tasks} == {1, 2, 3}


def test_a_task_is_what_its_name_says(draws):
    """Single-step tasks of a rotation/flip or a crop: every output is that step of its input."""
    checked = 0
    for t in draws:
        if t is None:
            continue
        step = t.name.split("|")[1]
        for e in t.pairs:
            if step in D8_NAMES:
                assert np.array_equal(e.output, dihedral(e.input, D8_NAMES.index(step)))
                checked += 1
            elif step == "crop":
                assert np.array_equal(e.output, crop(e.input, context([p.input for p in t.pairs]).bg))
                checked += 1
    assert checked > 0


def test_throughput_smoke(capsys):
    """Runs the generator for a moment and reports its rate (no timing assert: machines differ)."""
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    made = sum(generate_task(rng, 10) is not None for _ in range(60))
    rate = made / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\ngenerate_task: {made}/60 accepted, {rate:.0f} tasks of 10 pairs/s")
    assert made > 0


def test_acceptable_rejects_what_the_filters_name():
    a, b, c = g("12 00"), g("21 00"), g("00 12")
    assert acceptable([[a, b], [c, a]])
    assert acceptable([[a, b]])  # one pair: nothing to be identical to
    assert not acceptable([[a, b], [c, c]])  # an output equal to its input
    assert not acceptable([[a, b], [c, b]])  # every output the same
    assert not acceptable([[a, b], [a, c]])  # one input twice
    assert not acceptable([[a, a, b], [c, c, a]])  # a step that changes no pair


def test_a_maker_never_follows_itself():
    rng = np.random.default_rng(3)
    style = draw_style(rng, "objects")
    paths = [[x] for x in draw_inputs(rng, style, 6)]
    for _ in range(30):
        drawn = draw_step(rng, paths, 3, "d8")
        assert drawn is None or drawn[0] != "d8"


def test_colormap_maps_only_present_colors():
    rng = np.random.default_rng(0)
    ctx = context([g("0011 0022"), g("0001 0000")])
    for _ in range(50):
        step = MAKERS["colormap"](rng, ctx)
        changed = {c for c in range(10) if step.fn(np.array([[c]], np.uint8))[0, 0] != c}
        assert changed and changed <= {0, 1, 2}


# ---------------------------------------------------------------- input families


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_share_their_style(family):
    rng = np.random.default_rng(FAMILIES.index(family))
    for _ in range(5):
        style = draw_style(rng, family)
        inputs = draw_inputs(rng, style, 8)
        assert inputs and len({(x.shape, x.tobytes()) for x in inputs}) == len(inputs)
        allowed = set(style.palette) | ({style.bg} if family != "mosaic" else set())
        lo, hi = style.sides
        for x in inputs:
            validate_grid(x)
            assert set(np.unique(x).tolist()) <= allowed
            if family != "halves":
                assert lo <= min(x.shape) and max(x.shape) <= hi
            if style.square and family != "halves":
                assert x.shape[0] == x.shape[1]


@pytest.mark.parametrize("family", ["objects", "rects", "frames", "points"])
def test_placed_objects_never_touch(family):
    """Each placed shape is its own 8-connected component: a sprite count equals an object count."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        style = draw_style(rng, family)
        style = type(style)(**{**style.__dict__, "speckle": 0.0, "multicolor": False})
        for x in draw_inputs(rng, style, 4):
            per_color = sum(ndimage.label(x == c, structure=np.ones((3, 3)))[1] for c in style.palette)
            assert per_color == ndimage.label(x != style.bg, structure=np.ones((3, 3)))[1]


@given(st.integers(1, 6), st.integers(1, 6), st.floats(0.05, 1.0), st.integers(0, 1000))
def test_a_sprite_is_one_4_connected_shape(h, w, density, seed):
    mask = sprite(np.random.default_rng(seed), h, w, density)
    assert mask.shape[0] <= h and mask.shape[1] <= w
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()  # cropped
    assert ndimage.label(mask)[1] == 1


# ---------------------------------------------------------------- primitives on hand-made grids


def test_gravity_each_side():
    grid = g("100 020 003 000")
    assert eq(gravity(grid, 0, 0), "000 000 000 123")  # down
    assert eq(gravity(grid, 0, 1), "001 002 003 000")  # right
    assert eq(gravity(grid, 0, 2), "123 000 000 000")  # up
    assert eq(gravity(grid, 0, 3), "100 200 300 000")  # left
    assert eq(gravity(g("1 0 2 0"), 0, 0), "0 0 1 2")  # order kept


@given(grids())
def test_gravity_keeps_each_column_and_settles(grid):
    out = gravity(grid, 0, 0)
    for c in range(grid.shape[1]):
        assert sorted(out[:, c]) == sorted(grid[:, c])
    assert np.array_equal(gravity(out, 0, 0), out)


def test_fill_enclosed_fills_only_closed_background():
    grid = g("11111 10001 11111 00000 22200 20200 20000")
    assert eq(fill_enclosed(grid, 0, 5), "11111 15551 11111 00000 22200 20200 20000")
    assert eq(fill_enclosed(g("111 101 111"), 0, 4), "111 141 111")
    assert eq(fill_enclosed(g("010 101 010"), 0, 4), "010 141 010")  # closed across its four sides


def test_keep_largest_and_smallest():
    grid = g("1100 1100 0002 0000 3300")
    assert eq(keep_extreme(grid, 0, True), "1100 1100 0000 0000 0000")
    assert eq(keep_extreme(grid, 0, False), "0000 0000 0002 0000 0000")
    assert keep_extreme(g("1001 0000 2000"), 0, True) is None  # a tie
    assert keep_extreme(g("11 00"), 0, True) is None  # one object: nothing to choose


def test_crop():
    assert eq(crop(g("0000 0120 0030 0000"), 0), "12 03")
    assert crop(g("000 000"), 0) is None
    assert eq(crop(g("5555 5255"), 5), "2")


def test_tile_plain_and_mirrored():
    grid = g("12 34")
    assert eq(tile(grid, 1, 2, False), "1212 3434")
    assert eq(tile(grid, 2, 2, True), "1221 3443 3443 1221")
    assert eq(upscale(g("12"), 2, 2), "1122 1122")


def test_rays_and_their_clash():
    assert eq(rays(g("000 010 000 022"), 0, ((-1, 0),)), "010 010 000 022")
    assert eq(rays(g("0000 1000 0002"), 0, ((0, 1),)), "0000 1111 0002")
    assert eq(rays(g("00000 02000"), 0, ((0, 1), (0, -1))), "00000 22222")
    assert rays(g("010 000 200"), 0, ((1, 0), (0, 1))) is None  # a 1-ray crosses a 2-ray


def test_connect_joins_facing_cells():
    assert eq(connect(g("10001 00000 20002"), 0), "11111 00000 22222")
    assert eq(connect(g("100 000 100"), 0), "100 100 100")
    assert eq(connect(g("102"), 0), "102")  # different colors stay apart
    assert connect(g("00100 00000 30003 00000 00100"), 0) is None  # lines of two colors would cross
    # Shapes are not joined: the inside of a hollow square stays as it is, so does the gap between two bars.
    assert eq(connect(g("1111 1001 1111"), 0), "1111 1001 1111")
    assert eq(connect(g("11011 00000 10001"), 0), "11011 00000 11111")


def test_counts():
    grid = g("10101 00000 22000")
    assert eq(count_bar(grid, 0, False), "111")
    assert eq(count_bar(grid, 0, True), "1 1 1")
    assert eq(count_rows(grid, 0), "111 200")
    assert count_rows(g("12"), 0) is None  # a tie in the order
    assert eq(majority(grid, 0, 2), "11 11")


def test_logic_of_two_halves():
    grid = g("1100 1010 2222 3030 0330")  # halves around a separator row
    assert eq(logic(grid, 0, False, "xor", 5), "0550 5500")
    assert eq(logic(grid, 0, False, "and", 5), "5000 0050")
    assert eq(logic(g("1001"), 0, True, "or", 4), "44")  # an even side splits without a separator
    assert logic(g("102 030 405"), 0, True, "or", 4) is None  # the middle column is not one color
    assert eq(keep_half(grid, False, True), "3030 0330")


def test_outline_and_boxes():
    block = g("00000 01110 01110 01110 00000")
    assert eq(hollow(block, 0), "00000 01110 01010 01110 00000")
    assert eq(halo(g("000 010 000"), 0, 2, False), "020 212 020")
    assert eq(halo(g("000 010 000"), 0, 2, True), "222 212 222")
    assert eq(boxes(g("0000 0100 0010 0000"), 0, 3, False), "0000 0130 0310 0000")
    assert eq(boxes(g("000 010 000"), 0, 3, True), "333 313 333")


def test_object_filters_and_recolors():
    grid = g("1000 0022 0022 0000 3000")
    assert eq(remove_small(grid, 0, 2), "0000 0022 0022 0000 0000")
    assert eq(drop_border_objects(g("1000 0020 0000"), 0), "0000 0020 0000")
    assert eq(recolor_holed(g("111 101 111 000 020"), 0, 7), "777 707 777 000 020")
    assert eq(recolor_rank(grid, 0, (5,)), "1000 0055 0055 0000 3000")
    assert recolor_rank(grid, 0, (5, 6)) is None  # second place is a tie
    assert eq(recolor_size(grid, 0, {1: 8}, None, 0), "8000 0022 0022 0000 8000")
    assert eq(recolor_size(grid, 0, {}, 2, 9), "1000 0099 0099 0000 3000")
    assert isolated(g("100 000 011"), 0).tolist() == [[True, False, False], [False] * 3, [False] * 3]


def test_shift_and_symmetrize():
    assert eq(shift(g("12 34"), 0, 1, 0, False), "00 12")
    assert eq(shift(g("12 34"), 0, 0, -1, True), "21 43")
    assert eq(symmetrize(g("100 020"), 0, "h"), "101 020")
    assert eq(symmetrize(g("100 000"), 0, "hv"), "101 101")


# ---------------------------------------------------------------- well-posed on the chosen pairs


def _new_colors(e) -> frozenset:
    return frozenset(set(np.unique(e.output).tolist()) - set(np.unique(e.input).tolist()))


def test_every_new_output_color_is_shown_by_two_pairs(draws):
    """A color an output gains is a parameter of the rule: another pair must show it (checked on the grids alone)."""
    for t in draws:
        if t is None:
            continue
        counts = collections.Counter(c for e in t.pairs for c in _new_colors(e))
        assert min(counts.values(), default=2) >= 2, t.name


def test_colormap_entries_are_shown_by_two_pairs():
    """One-step color maps: each color the map changes in a pair is changed in another pair too."""
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(600):  # (about a draw in 70 is a one-step color map since the pattern and cells families came)
        t = generate_task(rng, 8)
        if t is None or not t.name.split("|")[1].startswith(("colormap", "swap_colors")) or ">" in t.name:
            continue
        counts = collections.Counter(c for e in t.pairs for c in np.unique(e.input[e.input != e.output]).tolist())
        assert min(counts.values()) >= 2, t.name
        checked += 1
    assert checked > 5


def test_choose_pairs_shows_every_item_twice():
    a, b, c = frozenset("a"), frozenset("b"), frozenset("c")
    e = frozenset()
    items = [a, b, c, e, a, b, e, e]
    idx = choose_pairs(items, 4)
    assert idx is not None and len(idx) == 4 and idx == sorted(idx)
    counts = collections.Counter(x for i in idx for x in items[i])
    assert min(counts.values(), default=2) >= 2
    assert 2 not in idx  # "c" is shown by one candidate only
    assert choose_pairs([a, b, c, e], 2) is None  # only one pair shows nothing rare
    assert choose_pairs([e, e, e], 3) == [0, 1, 2]
    # The partner move: the first 3 hold "a" once; a spare pair showing "a" comes in for a pair that shows nothing.
    assert choose_pairs([a, e, e, a | b, b, a], 3) in ([0, 5, 1], [0, 1, 5], [0, 5, 2], [0, 2, 5], [0, 1, 2])


def test_generate_task_chooses_well_posed_pairs(monkeypatch):
    """A program whose first candidates show a mapped color once: the task keeps pairs that show it twice."""
    table = np.arange(10, dtype=np.uint8)
    table[[1, 2]] = [5, 6]
    step = Step("colormap2", partial(recolor, table=table), partial(colors_in, among=frozenset({1, 2})))
    inputs = [g("10 00"), g("20 00"), g("01 00"), g("00 10"), g("00 01"), g("11 00")]
    paths = [[x, table[x]] for x in inputs]
    monkeypatch.setattr(gen_programs, "draw_program", lambda rng, n: Program("objects", [step], paths))
    t = generate_task(np.random.default_rng(0), 3)
    assert t is not None
    shown = collections.Counter(c for e in t.pairs for c in np.unique(e.input).tolist() if c in (1, 2))
    assert set(shown) == {1} and shown[1] == 3  # color 2 is shown by one candidate only: that pair is left out


def test_witnesses_of_size_rules():
    grid = g("1000 0022 0022 0000 3030")
    assert sizes_in(grid, 0) == {1, 4}
    assert sizes_beside(grid, 0, 3) == {("<", 1), (">=", 4)}
    assert sizes_beside(g("11 00"), 0, 3) == {("<", 2)}
    assert colors_in(grid, frozenset({2, 7})) == {2}


# ---------------------------------------------------------------- moves, order, pick, shrink (gen_moves)


def test_rigid_gravity_moves_objects_whole():
    # The L falls past the 2 (another column) to the floor, keeping its shape; plain gravity would break it.
    assert eq(rigid_gravity(g("110 010 000 000 002"), 0, 0), "000 000 000 110 012")
    assert eq(rigid_gravity(g("110 000 000 010 000"), 0, 0), "000 000 000 110 010")  # lands on the 1 below
    assert eq(rigid_gravity(g("100 000 111"), 0, 0), "000 100 111")  # lands on the object below
    assert eq(rigid_gravity(g("011 000 000"), 0, 3), "110 000 000")  # left
    assert eq(rigid_gravity(g("000 001 000"), 0, 2), "001 000 000")  # up
    assert eq(rigid_gravity(g("100 000 010"), 0, 1), "001 000 001")  # right


def test_to_border_and_its_overlap():
    assert eq(to_border(g("000 110 000 002"), 0, 0), "000 000 000 112")
    assert eq(to_border(g("010 000"), 0, 1), "001 000")
    assert to_border(g("10 00 10 00"), 0, 0) is None  # two objects in one column would land on one cell


def test_sort_by_size():
    grid = g("11100 00000 20000 00033 00033")
    assert eq(sort_by_size(grid, 0, False), "20111033 00000033")
    assert eq(sort_by_size(grid, 0, True), "200 000 111 000 330 330")
    assert sort_by_size(g("101"), 0, False) is None  # a tie in size
    assert sort_by_size(g("110"), 0, False) is None  # one object


def test_extract_unique():
    assert eq(extract_unique(g("10102 00000 10000"), 0, "color"), "2")
    assert eq(extract_unique(g("11000 00011 00000 10000"), 0, "shape"), "1")
    assert extract_unique(g("101"), 0, "color") is None  # two objects: nothing stands out
    assert extract_unique(g("10203"), 0, "color") is None  # every color unique


def test_downscale():
    assert eq(downscale(g("1100 1100 0022 0002"), 0, 2, False), "10 02")
    assert eq(downscale(g("1000 0000 0020 0000"), 0, 2, True), "10 02")
    assert downscale(g("1000 0000 0020 0000"), 0, 2, False) is not None
    assert downscale(g("1100 0000"), 0, 2, False) is None  # a 2-2 tie in a block
    assert downscale(g("100 000"), 0, 2, True) is None  # a side not a multiple of 2


def test_new_primitives_are_drawn():
    rng = np.random.default_rng(8)
    names = set()
    for _ in range(600):
        t = generate_task(rng, 6)
        if t is not None:
            names |= set(t.name.split("|")[1].split(">"))
    # (extract_unique is left out: random scenes rarely have exactly one object that stands out in most inputs)
    for prefix in ("rigid_gravity_", "to_border_", "sort_", "downscale"):
        assert any(n.startswith(prefix) for n in names), prefix
