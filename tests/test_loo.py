"""The leave-one-out self-check by teacher forcing: one scoring pass tells what greedy decoding would answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from testtime.encode import END, GridCodec
from testtime.engine import greedy_generate, sequence_scores
from testtime.lora import Adapters
from testtime.predict import answered, encode_query
from testtime.tasks import Example

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
    big = Example(task.test[0].input, np.zeros((6, 6), dtype=np.uint8))
    assert len(CODEC.answer_piece(big.output)) > max_new and answered(CODEC, task.train, big, 512) is None
