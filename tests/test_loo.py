"""The leave-one-out self-check by teacher forcing: one scoring pass tells what greedy decoding would answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from testtime.data.encode import END, GridCodec, TooLongError, encode_example
from testtime.data.tasks import Example, Task, grids_equal
from testtime.model.lora import Adapters
from testtime.model.training import pad_right, target_loss
from testtime.recipes.grid import GridKind, GridOps
from testtime.stages.engine import greedy_generate, sequence_scores
from testtime.stages.policy import loo_tasks
from testtime.stages.predict import answered, encode_query, predict_tasks
from testtime.stages.selection import SelectConfig
from testtime.stages.ttt import TTTConfig

CODEC = GridCodec()


def _with_target(prompt, target) -> object:
    """`prompt` (an Encoded) followed by the tokens `target`, which alone carry loss."""
    ids = np.concatenate([prompt.input_ids, np.asarray(target, dtype=np.int64)])
    return dataclasses.replace(prompt, input_ids=ids, loss_mask=np.arange(len(ids)) >= len(prompt))


@pytest.mark.parametrize("grid_model", [True, False])
def test_exact_is_what_greedy_decoding_reproduces(grid_model, tiny_grid_model, tiny_llama, flip_task, noisy_lora):
    """For each prompt, through its own adapter: the greedy answer (to its first stop token) is exact, and any other
    target is exact exactly when it starts that answer (a changed token, a random answer, a prefix)."""
    model = tiny_grid_model(4) if grid_model else tiny_llama(4)
    lora = noisy_lora(model, 2, seed=3)
    prompts = [encode_query(CODEC, t.train, t.test[0].input, 512)[0]
               for t in (flip_task(0), flip_task(1, shape=(2, 5)), flip_task(2, shape=(4, 3)))]
    slots = (0, 1, 1)
    gens = greedy_generate(model, [p.input_ids for p in prompts], [12] * 3, CODEC,
                           adapters=Adapters(lora, slots), token_budget=4096)
    rng = np.random.default_rng(0)
    seqs, greedy = [], []
    for p, g in zip(prompts, gens, strict=True):
        out = g.tokens[: next((n + 1 for n, t in enumerate(g.tokens) if t in CODEC.stop_ids), len(g.tokens))]
        changed = list(out)
        changed[len(out) // 2] = (changed[len(out) // 2] + 1) % 18
        for target in (out, changed, out[:3], rng.integers(0, 18, 6).tolist(), [out[0], (out[0] + 1) % 18]):
            seqs.append(_with_target(p, target))
            greedy.append(list(out[: len(target)]) == list(target))  # decoding stops after `out`
    item_slots = tuple(s for s in slots for _ in range(5))
    exact = [s.exact for s in sequence_scores(model, seqs, CODEC.pad_id, adapters=Adapters(lora, item_slots))]
    assert exact == greedy
    assert exact[::5] == [True] * 3 and not any(exact[1::5])  # by construction: the answer, and one token off
    # Through the other adapter the same targets are other models' answers: the check follows the slot.
    swapped = tuple(1 - s for s in item_slots)
    assert [s.exact for s in sequence_scores(model, seqs, CODEC.pad_id, adapters=Adapters(lora, swapped))] != exact


@pytest.mark.parametrize("grid_model", [True, False])
def test_sequences_read_whole_score_as_through_a_shared_prefix(grid_model, tiny_grid_model, tiny_llama, flip_task,
                                                               noisy_lora):
    """Sequences that share no prefix are read whole (right-padded, one pass); sequences that share one read it once
    and each continuation through its cache. Both ways give each sequence the same log-probability and verdict."""
    model = tiny_grid_model(4) if grid_model else tiny_llama(4)
    lora = noisy_lora(model, 2, seed=5)
    rng = np.random.default_rng(1)
    seqs, slots = [], []
    for k, task in enumerate((flip_task(0), flip_task(1, shape=(2, 5)), flip_task(2, shape=(4, 3)))):
        prompt = encode_query(CODEC, task.train, task.test[0].input, 512)[0]
        for target in (CODEC.answer_piece(task.test[0].output), rng.integers(0, 18, 5).tolist()):
            seqs.append(_with_target(prompt, target))
            slots.append(k % 2)
    shared = sequence_scores(model, seqs, CODEC.pad_id, adapters=Adapters(lora, tuple(slots)), stop_ids=CODEC.stop_ids)
    whole = [sequence_scores(model, [seqs[i]], CODEC.pad_id, adapters=Adapters(lora, (slots[i],)),
                             stop_ids=CODEC.stop_ids)[0] for i in range(len(seqs))]
    together = sequence_scores(model, seqs[::2], CODEC.pad_id, adapters=Adapters(lora, tuple(slots[::2])),
                               stop_ids=CODEC.stop_ids)  # three prompts, one continuation each: one whole batch
    assert [w.exact for w in whole] == [s.exact for s in shared]
    np.testing.assert_allclose([w.logprob for w in whole], [s.logprob for s in shared], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([t.logprob for t in together], [s.logprob for s in shared[::2]], rtol=1e-4, atol=1e-4)
    assert [t.exact for t in together] == [s.exact for s in shared[::2]]


def test_any_stop_token_ends_an_answer(tiny_grid_model, flip_task):
    """Where the target is a stop token, decoding stops on whichever stop token it picks: with the model's own
    pick among `stop_ids`, a target ending in another stop token is still exact."""
    model = tiny_grid_model(4)
    prompt = encode_query(CODEC, flip_task(0).train, flip_task(0).test[0].input, 512)[0]
    picked = greedy_generate(model, [prompt.input_ids], [3], CODEC)[0].tokens
    other = 31 if picked[2] != 31 else 30
    seq = _with_target(prompt, [*picked[:2], other])
    assert not sequence_scores(model, [seq], CODEC.pad_id)[0].exact
    assert sequence_scores(model, [seq], CODEC.pad_id, stop_ids={picked[2], other})[0].exact


def test_the_answered_sequence_is_the_decoding_prompt_and_its_answer(flip_task):
    task = flip_task(0)
    enc, max_new = encode_query(CODEC, task.train, task.test[0].input, 512)
    seq = answered(CODEC, task.train, task.test[0], 512)
    answer = CODEC.answer_piece(task.test[0].output)
    assert np.array_equal(seq.input_ids, np.concatenate([enc.input_ids, answer])) and answer[-1] == END
    assert seq.loss_mask.sum() == len(answer) and seq.loss_mask[-len(answer):].all()  # demos carry no loss
    # Decoding could not give it: the prompt does not fit, or the answer is longer than decoding may go.
    assert answered(CODEC, task.train, task.test[0], 40) is None
    # At every length budget: a sequence exactly where decoding has room for the whole answer (with the demos it
    # keeps there: a tighter budget drops one, and the answer may fit again).
    for max_len in range(40, len(enc) + len(answer) + 3):
        try:
            room = encode_query(CODEC, task.train, task.test[0].input, max_len)[1]
        except TooLongError:
            room = -1
        assert (answered(CODEC, task.train, task.test[0], max_len) is not None) == (room >= len(answer)), max_len
    big = Example(task.test[0].input, np.zeros((6, 6), dtype=np.uint8))
    assert len(CODEC.answer_piece(big.output)) > max_new and answered(CODEC, task.train, big, 512) is None


def _grid_task(tid: str, rng, shapes: list[tuple[int, int]], out_shape=None) -> Task:
    """Mirror demos of these shapes (the last one's output of `out_shape` instead, when given), one test."""
    demos = []
    for n, s in enumerate(shapes):
        g = rng.integers(0, 10, s).astype(np.uint8)
        out = rng.integers(0, 10, out_shape).astype(np.uint8) if out_shape and n == len(shapes) - 1 else g[:, ::-1]
        demos.append(Example(g, np.ascontiguousarray(out)))
    return Task(tid, tuple(demos), (demos[0],))


def _memorize(model, seqs, steps: int = 400, slot: int | None = None, lora=None) -> None:
    """Train the model (or, with `lora`, its adapter `slot`) until it answers `seqs` by heart: every sequence's
    mean target loss under 0.005, at a decaying learning rate (a constant 1e-2 spikes and forgets)."""
    params = lora.parameters() if lora is not None else list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)
    ids, mask = pad_right(seqs, CODEC.pad_id, "cpu")
    model.train()
    for _ in range(steps):
        if lora is not None:
            lora.use(torch.full((len(seqs),), slot))
        loss = target_loss(model, ids, mask, [slice(i, i + 1) for i in range(len(seqs))])
        if float(loss.max()) < 0.005:
            break
        loss.sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    model.eval()
    if lora is not None:
        lora.use(None)


def _loo_sequences(task: Task, which) -> list:
    return [encode_example(CODEC, lt.train, lt.test[0], loss_on_demos=False)
            for n, lt in enumerate(loo_tasks(task)) if n in which]


def _decoded_loo(model, codec, tasks, pcfg, adapters=None) -> list[float | None]:
    """The check as it was: each held-out demo greedily decoded under the identity view."""
    out = []
    for i, task in enumerate(tasks):
        held = loo_tasks(task)
        if not held:
            out.append(None)
            continue
        preds, _ = predict_tasks(model, held, codec, dataclasses.replace(pcfg, views=1, orders=1),
                                 adapters=None if adapters is None else adapters.take([i] * len(held)))
        got = [p.predictions[0][0].grid if p.predictions[0] else None for p in preds]
        out.append(float(np.mean([grids_equal(g, lt.test[0].output) for g, lt in zip(got, held, strict=True)])))
    return out


def _ops(model, group, small_cfg, max_len: int = 320, lora=None) -> GridOps:
    cfg = small_cfg(**{"predict_cfg.max_len": max_len})
    kind = GridKind(cfg, model, CODEC)
    kind.lora = lora
    return GridOps(kind, group, cfg.predict_cfg, TTTConfig(), SelectConfig())


@pytest.fixture(scope="module")
def learned(tiny_grid_model):
    """A tiny model that learned some held-out demos by heart: all of task a's, two of b's, none of c's, and d's
    third, whose answer is larger than any grid its prompt shows (decoding stops before it ends)."""
    rng = np.random.default_rng(5)
    group = [_grid_task("a", rng, [(3, 3)] * 3), _grid_task("b", rng, [(2, 4)] * 3),
             _grid_task("c", rng, [(3, 2)] * 3), _grid_task("d", rng, [(2, 2)] * 3, out_shape=(4, 4)),
             _grid_task("e", rng, [(2, 3)])]
    model = tiny_grid_model(6)
    _memorize(model, _loo_sequences(group[0], {0, 1, 2}) + _loo_sequences(group[1], {0, 2})
              + _loo_sequences(group[3], {2}))
    return model, group


@pytest.mark.parametrize("max_len", [320, 50])
def test_leave_one_out_agrees_with_decoding_each_held_out_demo(learned, small_cfg, max_len):
    """What the model learned it solves, what it did not it fails, a demo too large for decoding's room fails, a
    task of one demo has no check; and where prompts do not fit (max_len 50) they fail, all as decoding says."""
    model, group = learned
    ops = _ops(model, group, small_cfg, max_len)
    got = ops.leave_one_out(range(len(group)), adapted=False)
    assert got == _decoded_loo(model, CODEC, group, ops.pcfg)
    if max_len == 320:
        assert got == [1.0, pytest.approx(2 / 3), 0.0, 0.0, None]
        assert ops.leave_one_out([3, 1], adapted=False) == [got[3], got[1]]
    else:
        assert 0 < sum(answered(CODEC, lt.train, lt.test[0], 50) is None for t in group for lt in loo_tasks(t)) < 12


def test_items_through_adapters_use_their_own(tiny_grid_model, small_cfg, noisy_lora):
    """Adapter slot 1 learned task b's held-out demos, slot 0 is a no-op: b solves them through its adapter only,
    whichever items are asked together, and decoding agrees."""
    rng = np.random.default_rng(7)
    group = [_grid_task("a", rng, [(3, 3)] * 3), _grid_task("b", rng, [(2, 4)] * 3)]
    model = tiny_grid_model(8)
    lora = noisy_lora(model, 2, std=0.0)
    _memorize(model, _loo_sequences(group[1], {0, 1, 2}), slot=1, lora=lora, steps=150)
    ops = _ops(model, group, small_cfg, lora=lora)
    adapted = ops.leave_one_out([0, 1], adapted=True)
    assert adapted == _decoded_loo(model, CODEC, group, ops.pcfg, ops._adapters([0, 1]))
    assert adapted == [0.0, 1.0]
    assert ops.leave_one_out([1], adapted=True) == [1.0]
    assert ops.leave_one_out([0, 1], adapted=False) == _decoded_loo(model, CODEC, group, ops.pcfg) == [0.0, 0.0]
