"""An ensemble of adapters per task (`stages.ensemble`, `--adapters K`): members trained together in the bank equal
each trained alone, one member is the run without an ensemble, candidates are pooled, and the product of experts
scores every candidate through every member."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from testtime.api import build_config
from testtime.core.config import ConfigError
from testtime.data.encode import GridCodec
from testtime.model.lora import Adapters
from testtime.recipes.grid import GridKind, GridOps, solve_tasks
from testtime.stages.ensemble import (
    EnsembleConfig,
    MemberRows,
    group_member,
    member_adapters,
    member_datasets,
    member_group,
    member_keys,
    pool,
)
from testtime.stages.predict import TaskPredictions
from testtime.stages.selection import SelectConfig, product_of_experts, rank_candidates
from testtime.stages.ttt import TTTConfig, build_dataset, fresh_adapters, train_group
from testtime.stages.vote import Candidate, Prediction


def test_an_ensemble_trained_together_equals_each_member_trained_alone(tiny_llama, flip_task):
    """Three members of two tasks, each its own seed, data draw and learning rate, in one bank: each member equals
    the task trained alone under the member's name and at the member's learning rate."""
    codec = GridCodec()
    tasks = [flip_task(s, f"t{s}", shape=(2 + s, 3)) for s in range(2)]  # unequal lengths: padding differs too
    tcfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8, grad_clip=0.05)
    ecfg = EnsembleConfig(adapters=3, lr=[1.0, 0.5, 2.0])
    data = {k: v for t in tasks for k, v in member_datasets(t, codec, tcfg, ecfg).items()}
    ids = [t.id for t in tasks]
    model = tiny_llama()
    lora = fresh_adapters(model, None, member_keys(ids, ecfg), tcfg)
    rows = MemberRows.of(ids, [0, 1], len(tasks), ecfg)
    assert rows.slots == [0, 1, 2, 3, 4, 5] and rows.keys == ["t0", "t1", "t0#m1", "t1#m1", "t0#m2", "t1#m2"]
    together = train_group(model, lora, [data[k] for k in rows.keys], tcfg, pad_id=codec.pad_id,
                           task_ids=rows.keys, slots=rows.slots, lr_scales=rows.lr_scales)
    states = []
    for r, (key, scale) in enumerate(zip(rows.keys, rows.lr_scales, strict=True)):
        task = tasks[r % 2]
        alone_cfg = dataclasses.replace(tcfg, lr=tcfg.lr * scale)
        alone_data = build_dataset(dataclasses.replace(task, id=key), codec, tcfg)
        assert [s.input_ids.tolist() for s in alone_data] == [s.input_ids.tolist() for s in data[key]]
        alone_model = tiny_llama()
        alone = fresh_adapters(alone_model, None, [key], alone_cfg)
        res = train_group(alone_model, alone, [alone_data], alone_cfg, pad_id=codec.pad_id, task_ids=[key])
        np.testing.assert_allclose(together.losses[r], res.losses[0], rtol=1e-4, atol=1e-5)
        want, got = lora.state(rows.slots[r]), alone.state(0)
        for name in want:
            # Adam divides by tiny second moments, so float sums in another order move a weight by ~1e-5.
            torch.testing.assert_close(want[name], got[name], rtol=1e-3, atol=1e-4)
        states.append(want)
    # The members are not copies of each other: each drew its own data and start, and learned something else.
    assert [s.input_ids.tolist() for s in data["t0"]] != [s.input_ids.tolist() for s in data["t0#m1"]]
    for a, b in ((0, 2), (2, 4)):
        assert max(float((states[a][n] - states[b][n]).abs().max()) for n in states[a]) > 1e-3


def test_members_share_data_without_draws_of_their_own(flip_task):
    codec, tcfg = GridCodec(), TTTConfig(samples=4)
    same = member_datasets(flip_task(), codec, tcfg, EnsembleConfig(adapters=2, data=False))
    assert same["t"] is same["t#m1"]
    assert list(member_datasets(flip_task(), codec, tcfg, EnsembleConfig(adapters=1))) == ["t"]  # one: the task itself


def test_an_item_loss_is_its_members_mean_and_pools_keep_member_zero_first():
    rows = MemberRows.of(["a", "b", "c"], [2, 0], 3, EnsembleConfig(adapters=2))
    assert rows.slots == [2, 0, 5, 3] and rows.keys == ["c", "a", "c#m1", "a#m1"]
    assert rows.per_item([[1.0, 2.0], [3.0, 4.0], [3.0, 6.0], [5.0, 0.0]]) == [[2.0, 4.0], [4.0, 2.0]]
    g = np.zeros((1, 1), dtype=np.uint8)
    preds = [TaskPredictions([[Prediction("id", g, -1.0)], [Prediction("id", None)]], k, 10 * k) for k in range(4)]
    pooled = pool(preds, 2)  # items 0 and 1 of member 0, then of member 1
    assert [p.group for p in pooled[1].predictions[0]] == ["id", "id#m1"]
    assert pooled[1].invalid == 1 + 3 and pooled[1].generated_tokens == 10 + 30


def test_the_product_of_experts_over_members_is_the_mean_over_every_adapter(tiny_grid_model, flip_task, noisy_lora):
    """Every candidate is scored under every view through every member: the score is the mean of each member's own
    score (every candidate fits every view), and a member is not its first member twice."""
    model = tiny_grid_model(3)
    lora = noisy_lora(model, 4, seed=5)  # two tasks, two members each
    codec = GridCodec()
    tasks = [flip_task(s, tid=f"t{s}") for s in range(2)]
    cands = [[[t.test[0].output, t.test[0].input]] for t in tasks]
    cfg = SelectConfig(views=2, colors=1)
    members = member_adapters(lora, 2, TTTConfig(), EnsembleConfig(adapters=2))
    assert [m.slots for m in members] == [(0, 1), (2, 3)]
    both = product_of_experts(model, tasks, cands, codec, cfg, adapters=members)
    each = [product_of_experts(model, tasks, cands, codec, cfg, adapters=m) for m in members]
    np.testing.assert_allclose(np.ravel(both), (np.ravel(each[0]) + np.ravel(each[1])) / 2, rtol=1e-5)
    assert not np.allclose(np.ravel(each[0]), np.ravel(each[1]))
    one = product_of_experts(model, tasks, cands, codec, cfg, adapters=[Adapters(lora, (0, 1))])
    np.testing.assert_allclose(np.ravel(one), np.ravel(each[0]))
    by = product_of_experts(model, tasks, cands, codec, cfg, adapters=members, by_member=True)
    np.testing.assert_allclose(np.array(by)[..., 0], np.array(each[0]), rtol=1e-6)  # [task][test][cand][member]
    np.testing.assert_allclose(np.array(by)[..., 1], np.array(each[1]), rtol=1e-6)
    votes = [[[Candidate(g, 2 - k, 2 - k, True) for k, g in enumerate(per_q)] for per_q in per_t] for per_t in cands]
    ranked = rank_candidates(model, tasks, votes, codec, cfg, adapters=members)
    for i, per_task in enumerate(ranked):  # each candidate keeps both members' scores, their mean its own
        for got in per_task[0]:
            k = next(k for k, g in enumerate(cands[i][0]) if g is got.grid)
            assert got.members == pytest.approx(by[i][0][k]) and got.logprob == pytest.approx(np.mean(by[i][0][k]))
            assert got.to_json()["members"] == [round(x, 4) for x in got.members]


def test_a_run_with_an_ensemble_predicts_through_every_member(tiny, small_cfg, synthetic_tasks, monkeypatch):
    """Through the run: the bank holds K slots a task, TTT trains every member (each item's loss their mean), every
    member decodes every view (K times the tokens), and the record says how many adapters the task had, and of each
    recorded candidate, each member's score and how many of its views decoded it."""
    model, codec = tiny
    tasks = synthetic_tasks(3)
    trained = []
    real = GridOps.train
    monkeypatch.setattr(GridOps, "train", lambda self, *a, **k: trained.append(self.ecfg.adapters) or real(self, *a, **k))
    one = solve_tasks(tasks, small_cfg(**{"ensemble_cfg.adapters": 1}), model, codec, show_progress=False).records
    three = solve_tasks(tasks, small_cfg(**{"ensemble_cfg.adapters": 3}), model, codec, show_progress=False).records
    assert trained == [1, 3]
    for a, b in zip(one, three, strict=True):
        assert "adapters" not in a and b["adapters"] == 3
        assert b["tokens"]["generated"] == 3 * a["tokens"]["generated"]
        assert b["tokens"]["ttt"] > 2 * a["tokens"]["ttt"]  # members draw their own sequences, of other lengths
        assert b["invalid"] == 3 * a["invalid"]
        assert all("members" not in c and "by_member" not in c for per_q in a["ranked"] for c in per_q)
        for per_q in b["ranked"]:
            for c in per_q:
                assert len(c["members"]) == 3 and len(c["by_member"]) == 3 and sum(c["by_member"]) == c["count"]


def test_group_member_inverts_member_group():
    for group in ("id", "rot90", "t#x", "a#m"):
        assert [group_member(member_group(group, m)) for m in range(4)] == [0, 1, 2, 3]


def test_ensemble_settings_are_checked(tiny):
    assert build_config(None, None, settings={"adapters": 4}).ensemble_cfg.adapters == 4
    with pytest.raises(ConfigError, match="adapters must be between 1 and 16"):
        build_config(None, None, settings={"adapters": 0})
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build_config(None, None, settings={"ensemble_cfg.lr": [1.0, -1.0]})
    cfg = build_config(None, None, settings={"adapters": 2, "shared": True, "policy": "always"})
    with pytest.raises(ConfigError, match="shared-adapter ablation .* takes no ensemble"):
        GridKind(cfg)
