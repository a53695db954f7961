"""Transforms are exact: every one has an inverse, and D8 composes as a group."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.data.augment import (
    IDENTITY_COLORS,
    Transform,
    d8_compose,
    d8_inverse,
    dihedral,
    dihedral_views,
    random_transform,
)
from testtime.data.tasks import Example, Task, freeze

settings.register_profile("testtime", max_examples=60, deadline=None)
settings.load_profile("testtime")


@st.composite
def grids(draw, max_side: int = 8):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, 9), min_size=h * w, max_size=h * w))
    return freeze(np.array(cells, dtype=np.uint8).reshape(h, w))


d8s = st.integers(0, 7)
color_perms = st.permutations(list(range(10))).map(tuple)


@st.composite
def transforms(draw, n_demos: int | None = None):
    order = tuple(draw(st.permutations(list(range(n_demos))))) if n_demos and draw(st.booleans()) else None
    return Transform(draw(d8s), draw(color_perms), order)


@st.composite
def tasks(draw):
    n = draw(st.integers(1, 4))
    train = tuple(Example(draw(grids()), draw(grids())) for _ in range(n))
    test = tuple(Example(draw(grids()), draw(st.none() | grids())) for _ in range(draw(st.integers(1, 2))))
    return Task("h", train, test)


@given(grids(), transforms())
def test_invert_grid_undoes_apply_grid(grid, t):
    out = t.apply_grid(grid)
    assert out.dtype == np.uint8 and not out.flags.writeable
    assert np.array_equal(t.invert_grid(out), grid)
    assert np.array_equal(t.inverse().apply_grid(out), grid)


@given(tasks(), st.data())
def test_inverse_transform_undoes_task_transform(task, data):
    t = data.draw(transforms(len(task.train)))
    assert t.inverse().apply(t.apply(task)) == task
    assert t.inverse().inverse() == t


@given(tasks(), st.data())
def test_then_equals_sequential_application(task, data):
    a = data.draw(transforms(len(task.train)))
    b = data.draw(transforms(len(task.train)))
    assert a.then(b).apply(task) == b.apply(a.apply(task))
    assert a.then(a.inverse()).apply(task) == task


@given(grids(), transforms(), transforms(), transforms())
def test_then_is_associative(grid, a, b, c):
    left, right = a.then(b).then(c), a.then(b.then(c))
    assert left == right
    assert np.array_equal(left.apply_grid(grid), c.apply_grid(b.apply_grid(a.apply_grid(grid))))


@given(color_perms)
def test_color_permutation_is_a_bijection(colors):
    t = Transform(colors=colors)
    all_colors = freeze(np.arange(10, dtype=np.uint8).reshape(2, 5))
    mapped = t.apply_grid(all_colors)
    assert sorted(mapped.ravel().tolist()) == list(range(10))
    assert mapped.ravel().tolist() == list(colors)
    assert np.array_equal(t.invert_grid(mapped), all_colors)


@given(grids())
def test_identity(grid):
    t = Transform()
    assert t.is_identity and t.name == "id"
    assert np.array_equal(t.apply_grid(grid), grid)
    assert t.inverse() == t
    assert Transform(order=(0, 1, 2)).is_identity and not Transform(order=(1, 0)).is_identity


@given(grids(), d8s)
def test_dihedral_shapes(grid, k):
    out = dihedral(grid, k)
    h, w = grid.shape
    assert out.shape == ((h, w) if k in (0, 2, 5, 7) else (w, h))


def test_d8_group_laws():
    probe = np.arange(12).reshape(3, 4)
    ks = range(8)
    for a, b in itertools.product(ks, ks):
        assert np.array_equal(dihedral(dihedral(probe, a), b), dihedral(probe, d8_compose(a, b)))
    for a, b, c in itertools.product(ks, ks, ks):
        assert d8_compose(d8_compose(a, b), c) == d8_compose(a, d8_compose(b, c))
    for a in ks:
        assert d8_compose(a, 0) == d8_compose(0, a) == a
        assert d8_compose(a, d8_inverse(a)) == d8_compose(d8_inverse(a), a) == 0
    # Every row of the Cayley table is a permutation; rotations form a closed subgroup.
    for a in ks:
        assert sorted(d8_compose(a, b) for b in ks) == list(ks)
    assert {d8_compose(a, b) for a in range(4) for b in range(4)} == set(range(4))
    # Rotations by k quarter turns invert to 4 - k; reflections are their own inverse.
    assert [d8_inverse(k) for k in ks] == [0, 3, 2, 1, 4, 5, 6, 7]
    # D8 is not abelian.
    assert any(d8_compose(a, b) != d8_compose(b, a) for a, b in itertools.product(ks, ks))


def test_dihedral_views_are_distinct():
    views = dihedral_views()
    assert views[0].is_identity and len(views) == 8
    probe = freeze(np.arange(6, dtype=np.uint8).reshape(2, 3))
    images = {(v.apply_grid(probe).shape, v.apply_grid(probe).tobytes()) for v in views}
    assert len(images) == 8


def test_random_transform_is_valid_and_seeded():
    a = random_transform(np.random.default_rng(3), 4)
    b = random_transform(np.random.default_rng(3), 4)
    assert a == b and a.colors[0] == 0 and sorted(a.order) == [0, 1, 2, 3]
    c = random_transform(np.random.default_rng(3), 4, d8=False, colors=False, shuffle=False)
    assert c.is_identity


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"d8": 8}, "outside 0..7"), ({"colors": (0,) * 10}, "not a permutation of 0..9"), ({"order": (0, 0)}, "not a permutation")],
)
def test_invalid_transforms(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Transform(**kwargs)


def test_order_length_must_match():
    g = freeze(np.zeros((1, 1), dtype=np.uint8))
    task = Task("t", (Example(g, g),) * 2, (Example(g),))
    with pytest.raises(ValueError, match="order has 3 entries"):
        Transform(order=(0, 1, 2)).apply(task)
    assert Transform(colors=IDENTITY_COLORS, order=(1, 0)).apply(task).train == task.train
