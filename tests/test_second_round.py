"""A second round on confident answers (`stages.second_round`, `--second-round STEPS`): what counts as confident, the
task extended by the model's own answers only, and a run that behaves the same whether the test outputs are there,
stripped or poisoned."""

from __future__ import annotations

import numpy as np
import pytest

import testtime.stages.predict as predict_mod
import testtime.stages.ttt as ttt_mod
from testtime.data.encode import INPUT, OUTPUT, GridCodec
from testtime.data.tasks import Example, Task
from testtime.recipes.grid import solve_tasks
from testtime.stages.engine import Generated
from testtime.stages.second_round import SecondRoundConfig, answer, confident, pooled, pseudo_task, strip
from testtime.stages.selection import Ranked
from testtime.stages.vote import Prediction

G = [np.full((2, 2), k, dtype=np.uint8) for k in range(3)]


def test_confidence_is_a_score_margin_or_else_the_views_agreement():
    cfg = SecondRoundConfig(steps=4, margin=1.0, agreement=0.5)
    views = [Prediction(f"v{k}", g) for k, g in enumerate([G[0], G[0], G[1], None])]
    assert confident([Ranked(G[0], 2, 2, -3.0), Ranked(G[1], 1, 1, -4.5)], views, cfg)  # 1.5 nats ahead
    assert not confident([Ranked(G[0], 2, 2, -3.0), Ranked(G[1], 1, 1, -3.5)], views, cfg)
    assert not confident([Ranked(G[0], 2, 2, -np.inf), Ranked(G[1], 1, 1, -np.inf)], views, cfg)  # fits no view
    # Unscored (no more candidates than attempts): the best one's share of the views, invalid decodes included.
    assert confident([Ranked(G[0], 2, 2), Ranked(G[1], 1, 1)], views, cfg)  # 2 of 4
    assert not confident([Ranked(G[1], 1, 1), Ranked(G[0], 2, 2)], views, cfg)  # 1 of 4
    assert not confident([], [], cfg)


def test_the_extended_task_holds_the_models_answers_and_no_test_output(flip_task):
    task = flip_task(3, tests=3)
    ranked = [[Ranked(G[q], 1, 1)] for q in range(3)]
    ext = pseudo_task(task, [answer(task, 0, ranked[0]), None, answer(task, 2, ranked[2])])
    assert ext.train[:3] == task.train and len(ext.train) == 5
    assert [np.array_equal(e.input, task.test[q].input) for e, q in zip(ext.train[3:], (0, 2), strict=True)] == [True] * 2
    assert all(np.array_equal(e.output, G[q]) for e, q in zip(ext.train[3:], (0, 2), strict=True))
    assert all(e.output is None for e in ext.test) and all(e.output is None for e in strip(task).test)
    assert [np.array_equal(a.input, b.input) for a, b in zip(ext.test, task.test, strict=True)] == [True] * 3
    first, second = [[Prediction("id", G[0])]], [[Prediction("id", G[1]), Prediction("rot90", None)]]
    assert [p.group for p in pooled(first, second)[0]] == ["id", "id#r2", "rot90#r2"]


def _oracle(calls: list[int]):
    """A stand-in for decoding that answers from the prompt alone: its last input grid, each color raised by 0, 1 or
    2 by the prompt's tokens (so views disagree and the product of experts has candidates to score)."""
    codec = GridCodec()

    def generate(model, prompts, max_new, codec_, **kw):
        calls.append(len(prompts))
        out = []
        for p in prompts:
            ids = p.tolist()
            start = len(ids) - 1 - ids[::-1].index(INPUT)
            grid = codec.decode_grid(ids[start + 1: ids.index(OUTPUT, start)] + [next(iter(codec.stop_ids))]).grid
            grid = (grid + int(np.dot(ids, np.arange(len(ids)))) % 3) % 10
            out.append(Generated(codec.answer_piece(np.ascontiguousarray(grid)).tolist(), -1.0))
        return out

    return generate


def _without_outputs(task: Task, poison: bool) -> Task:
    """The task with its test outputs dropped, or (poison) replaced by grids no view could answer."""
    return Task(task.id, task.train, tuple(Example(e.input, np.full((5, 1), 7, dtype=np.uint8) if poison else None)
                                           for e in task.test))


def test_the_second_round_never_sees_a_test_output(tiny, small_cfg, flip_task, monkeypatch):
    """Every confident answer joins the demonstrations and the adapters train on them; the run (attempts, losses,
    ranked candidates, what the round did) is the same with the test outputs there, stripped or poisoned, and the
    round's training sequences hold each test input with the model's answer."""
    model, codec = tiny
    tasks = [flip_task(7, "two", tests=2), flip_task(8, "one")]
    calls: list[int] = []
    monkeypatch.setattr(predict_mod, "greedy_generate", _oracle(calls))
    seen: list[tuple[int, list]] = []
    real = ttt_mod.train_adapters
    monkeypatch.setattr(ttt_mod, "train_adapters", lambda model_, params, datasets, cfg, **kw: seen.append(
        (kw.get("round_index", 0), datasets)) or real(model_, params, datasets, cfg, **kw))
    cfg = small_cfg(**{"ensemble_cfg.adapters": 1, "predict_cfg.views": 4, "second_cfg.steps": 3,
                       "second_cfg.margin": 0.0, "second_cfg.agreement": 0.0, "select_cfg.views": 2,
                       "select_cfg.colors": 1})

    def run(ts):
        seen.clear()
        calls.clear()
        records = solve_tasks(ts, cfg, model, codec, show_progress=False).records
        return records, list(seen)

    truth, trained = run(tasks)
    decoded = list(calls)
    keys = ("attempts", "ttt_loss", "ranked", "votes", "second_round", "policy", "greedy")
    for poison in (False, True):
        other, other_trained = run([_without_outputs(t, poison) for t in tasks])
        assert [{k: r[k] for k in keys} for r in other] == [{k: r[k] for k in keys} for r in truth]
        assert [(r, [[s.input_ids.tolist() for s in d] for d in ds]) for r, ds in other_trained] == \
               [(r, [[s.input_ids.tolist() for s in d] for d in ds]) for r, ds in trained]
    two, one = truth
    assert two["second_round"] == {"confident": [True, True], "steps": 3}
    assert one["second_round"] == {"confident": [True], "steps": 3}
    assert len(two["ttt_loss"]) == two["policy"]["ttt_steps"] + 3 and two["compute"]["second"] > 0
    assert any("logprob" in r for per_q in two["ranked"] for r in per_q)  # candidates scored again, by the round's adapter
    second = [ds for r, ds in trained if r > 0]
    assert len(second) == 1 and len(second[0]) == 2  # one round, both tasks' adapters together
    # The sequences of the task of two test inputs: a query of one test input with the answer the model gave
    # (its top candidate of the first round), among the demonstrations' own.
    rows = [s.input_ids.tolist() for s in second[0][0]]
    task = tasks[0]
    for q in range(2):
        query = codec.input_piece(task.test[q].input).tolist() + codec.output_marker().tolist()
        assert any(_contains(r, query) for r in rows)
    # Both rounds decoded every view of every test input of both tasks (3 test inputs, 4 views).
    assert decoded == [12, 12]


def _contains(seq: list[int], part: list[int]) -> bool:
    return any(seq[i: i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def test_a_second_round_only_for_tasks_of_enough_test_inputs(tiny, small_cfg, flip_task, monkeypatch):
    model, codec = tiny
    monkeypatch.setattr(predict_mod, "greedy_generate", _oracle([]))
    cfg = small_cfg(**{"predict_cfg.views": 2, "second_cfg.steps": 2, "second_cfg.margin": 0.0,
                       "second_cfg.agreement": 0.0, "second_cfg.min_tests": 2})
    two, one = solve_tasks([flip_task(7, "two", tests=2), flip_task(8, "one")], cfg, model, codec,
                           show_progress=False).records
    assert two["second_round"]["steps"] == 2 and "second_round" not in one
    assert len(one["ttt_loss"]) == one["policy"]["ttt_steps"] and "second" not in one["compute"]


@pytest.mark.parametrize("bad", [{"second_round": -1}, {"second_cfg.margin": -0.5}, {"second_cfg.agreement": 2.0}])
def test_second_round_settings_are_checked(bad):
    from testtime.api import build_config
    from testtime.core.config import ConfigError

    with pytest.raises(ConfigError, match="must be between"):
        build_config(None, None, settings=bad)
