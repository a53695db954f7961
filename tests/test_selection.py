"""Choosing the attempts: scoring candidates under augmented views (product of experts) against the vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from testtime.data.encode import GridCodec, encode_example
from testtime.data.tasks import Example
from testtime.model.lora import Adapters
from testtime.model.training import pad_right, target_loss
from testtime.stages.engine import sequence_logprobs
from testtime.stages.selection import SelectConfig, expert_views, product_of_experts, rank_candidates
from testtime.stages.vote import Candidate, Prediction, hierarchical_vote


def _full_pass_logprob(model, enc) -> float:
    ids = torch.tensor(enc.input_ids)[None]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    return float(lp[torch.arange(len(enc) - 1), ids[0, 1:]][torch.tensor(enc.loss_mask[1:])].sum())


def test_grid_model_scores_shared_prefixes_as_full_passes(tiny_grid_model, flip_task, noisy_lora):
    """Candidates of one prompt read it once, and the continuations' (grid, row, column) positions follow it: each
    score equals a forward pass over prompt + candidate, with an adapter per sequence and any batch size."""
    model = tiny_grid_model(2)
    lora = noisy_lora(model, 2, seed=1)
    codec = GridCodec()
    rng = np.random.default_rng(0)
    seqs, slots = [], []
    for k, task in enumerate([flip_task(0), flip_task(1, shape=(2, 5))]):
        for cand in [task.test[0].output, rng.integers(0, 10, (3, 3)).astype(np.uint8), task.test[0].input]:
            seqs.append(encode_example(GridCodec(), task.train[: 1 + k], Example(task.test[0].input, cand),
                                       loss_on_demos=False))
            slots.append(k)
    got = sequence_logprobs(model, seqs, codec.pad_id, adapters=Adapters(lora, tuple(slots)), token_budget=10_000)
    small = sequence_logprobs(model, seqs, codec.pad_id, adapters=Adapters(lora, tuple(slots)), token_budget=1)
    np.testing.assert_allclose(got, small, rtol=1e-4)
    for enc, slot, value in zip(seqs, slots, got, strict=True):
        lora.use(torch.tensor([slot]))
        assert value == pytest.approx(_full_pass_logprob(model, enc), rel=1e-4, abs=1e-4)
    lora.use(None)


def _votes(grids_and_counts) -> list[Candidate]:
    """The vote's candidates for predictions where grid g was decoded by `n` views."""
    preds, view = [], 0
    for g, n in grids_and_counts:
        for _ in range(n):
            preds.append(Prediction(f"v{view}", g))
            view += 1
    return hierarchical_vote(preds, per_group=3)


def test_product_of_experts_picks_what_the_model_prefers_over_most_views(tiny_grid_model, flip_task):
    """The vote favours a wrong candidate (more views decoded it); the model, made to prefer the right one under
    most of the scoring views (and the wrong one under the rest), ranks the right one first: the experts' sum
    decides, not the votes, and not any single view."""
    task = flip_task(3)
    right, wrong = task.test[0].output, task.test[0].input
    cfg = SelectConfig(views=8, colors=2)
    views = expert_views(task, cfg)
    codec = GridCodec()
    seqs = []
    for n, view in enumerate(views):
        vt = view.apply(task)
        target = right if n < 12 else wrong
        seqs.append(encode_example(codec, vt.train, Example(vt.test[0].input, view.apply_grid(target)),
                                   loss_on_demos=False))
    model = tiny_grid_model(3).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids, mask = pad_right(seqs, codec.pad_id, "cpu")
    for _ in range(80):
        loss = target_loss(model, ids, mask, [slice(i, i + 1) for i in range(len(seqs))]).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    # Under the views where the wrong answer was learned, it is the likelier one: one view alone would mislead.
    late = [sequence_logprobs(model, [s], codec.pad_id)[0] for s in seqs[12:13]]
    vt = views[12].apply(task)
    other = encode_example(codec, vt.train, Example(vt.test[0].input, views[12].apply_grid(right)), loss_on_demos=False)
    assert late[0] > sequence_logprobs(model, [other], codec.pad_id)[0]

    votes = [[_votes([(wrong, 5), (right, 3)])]]
    assert np.array_equal(votes[0][0][0].grid, wrong)
    by_vote = rank_candidates(model, [task], votes, codec, SelectConfig(method="vote"))[0][0]
    assert np.array_equal(by_vote[0].grid, wrong) and by_vote[0].logprob is None
    by_poe = rank_candidates(model, [task], votes, codec, cfg)[0][0]
    assert np.array_equal(by_poe[0].grid, right) and np.array_equal(by_poe[1].grid, wrong)
    assert by_poe[0].logprob > by_poe[1].logprob


def test_scores_do_not_depend_on_the_batch(tiny_grid_model, flip_task, noisy_lora):
    """A task's scores are the same alone or beside other tasks, in large or tiny scoring batches, and through its
    adapter slot wherever the slot sits."""
    model = tiny_grid_model(4)
    lora = noisy_lora(model, 3, seed=2)
    codec = GridCodec()
    tasks = [flip_task(s, tid=f"t{s}") for s in range(3)]
    cands = [[[t.test[0].output, t.test[0].input]] for t in tasks]
    cfg = SelectConfig(views=2, colors=2)
    together = product_of_experts(model, tasks, cands, codec, cfg, adapters=Adapters(lora, (0, 1, 2)))
    tiny = product_of_experts(model, tasks, cands, codec, SelectConfig(views=2, colors=2, token_budget=1),
                              adapters=Adapters(lora, (0, 1, 2)))
    alone = product_of_experts(model, tasks[2:], cands[2:], codec, cfg, adapters=Adapters(lora, (2,)))
    np.testing.assert_allclose(np.ravel(together), np.ravel(tiny), rtol=1e-4)
    np.testing.assert_allclose(together[2][0], alone[0][0], rtol=1e-4)
    assert all(np.isfinite(np.ravel(together))) and together[0][0][0] != together[1][0][0]


def test_a_candidate_too_long_for_every_view_ranks_last(tiny_grid_model):
    """A candidate that fits no view has no score (-inf) and goes after the scored ones, whatever its votes; the
    candidates past `candidates` keep their vote order, unscored."""
    from testtime.data.tasks import Task

    g = np.zeros((2, 2), dtype=np.uint8)
    task = Task("t", (Example(g, g), Example(g, g)), (Example(g, g),))
    big = np.ones((30, 30), dtype=np.uint8)
    votes = [[_votes([(big, 3), (g, 2), (g + 1, 1)])]]
    ranked = rank_candidates(tiny_grid_model(), [task], votes, GridCodec(),
                             SelectConfig(views=2, colors=1, candidates=2), max_len=64)[0][0]
    assert [r.votes for r in ranked] == [2, 3, 1]  # g scored, big fits no view (-inf), g+1 beyond `candidates`
    assert np.isfinite(ranked[0].logprob) and ranked[1].logprob == -np.inf and ranked[2].logprob is None
    assert ranked[1].to_json()["logprob"] is None


def test_test_inputs_with_no_more_candidates_than_attempts_are_not_scored(tiny_grid_model, flip_task, monkeypatch):
    """Two candidates and two attempts: both are attempts in any order, so no view is scored for that test input;
    the other test input of the same task, with three candidates, is."""
    import testtime.stages.selection as selection_mod

    task = flip_task(5, tests=2)
    grids = [np.full((3, 4), k, dtype=np.uint8) for k in range(3)]
    votes = [[_votes([(grids[0], 3), (grids[1], 1)]), _votes([(g, 1) for g in grids])]]
    scored = []
    real = selection_mod.sequence_logprobs
    monkeypatch.setattr(selection_mod, "sequence_logprobs", lambda m, seqs, *a, **k: scored.append(len(seqs)) or
                        real(m, seqs, *a, **k))
    ranked = rank_candidates(tiny_grid_model(), [task], votes, GridCodec(), SelectConfig(views=2, colors=1),
                             attempts=2)[0]
    assert scored == [3 * 2]  # three candidates under two views, all from the second test input
    assert [r.logprob for r in ranked[0]] == [None, None] and np.array_equal(ranked[0][0].grid, grids[0])
    assert all(r.logprob is not None for r in ranked[1])
