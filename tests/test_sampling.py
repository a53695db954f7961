"""Depth-first sampling (`stages.sampling`, `--dfs P`): exactly the completions at least P likely, checked against
brute-force enumeration on a tiny vocabulary; the greedy one kept on request; batches, budgets, adapters and a grid
model's positions change nothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import testtime.stages.sampling as sampling_mod
from testtime.api import build_config
from testtime.core.config import ConfigError
from testtime.data.encode import Encoded, GridCodec
from testtime.model.lora import Adapters
from testtime.stages.engine import greedy_generate, sequence_logprobs
from testtime.stages.predict import PredictConfig, make_queries, predict_tasks
from testtime.stages.sampling import sample_above

VOCAB = 6
STOP = 5
CODEC = SimpleNamespace(pad_id=0, stop_ids=frozenset({STOP}))
PROMPTS = [np.array([1, 2, 3, 4, 1]), np.array([2, 2, 1]), np.array([3, 1, 4, 1, 5, 2, 2])]
MAX_NEW = [4, 3, 4]


@pytest.fixture(scope="module")
def small_vocab_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.5)
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def every_completion(model, prompt: np.ndarray, max_new: int) -> dict[tuple[int, ...], float]:
    """Brute force: every completion (a stop token or max_new tokens ends it) with its log-probability, each token's
    distribution from a forward pass over the whole sequence (no cache)."""
    out: dict[tuple[int, ...], float] = {}

    def grow(tokens: tuple[int, ...], logprob: float) -> None:
        ids = torch.tensor([[*prompt.tolist(), *tokens]])
        lp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1).tolist()
        for t in range(VOCAB):
            seq = (*tokens, t)
            if t == STOP or len(seq) >= max_new:
                out[seq] = logprob + lp[t]
            else:
                grow(seq, logprob + lp[t])

    grow((), 0.0)
    return out


def _path(tokens: list[int]) -> tuple[int, ...]:
    """Greedy decoding's tokens up to its stop (it pads after)."""
    return tuple(tokens[: tokens.index(STOP) + 1] if STOP in tokens else tokens)


@pytest.mark.parametrize("min_prob", [0.1, 0.02])
def test_exactly_the_completions_above_the_threshold(small_vocab_model, min_prob):
    brute = [every_completion(small_vocab_model, p, m) for p, m in zip(PROMPTS, MAX_NEW, strict=True)]
    floor = math.log(min_prob)
    # No completion sits on the threshold, where float sums in another order could fall either side.
    assert all(abs(v - floor) > 1e-3 for b in brute for v in b.values())
    assert all(abs(sum(math.exp(v) for v in b.values()) - 1) < 1e-4 for b in brute)  # the enumeration is whole
    got = sample_above(small_vocab_model, PROMPTS, MAX_NEW, CODEC, min_prob=min_prob, keep_greedy=False)
    greedy = [_path(g.tokens) for g in greedy_generate(small_vocab_model, PROMPTS, MAX_NEW, CODEC)]
    for b, completions, path in zip(brute, got, greedy, strict=True):
        want = {seq for seq, v in b.items() if v >= floor}
        assert {tuple(g.tokens) for g in completions} == want
        assert len(completions) == len(want) <= 1 / min_prob
        for g in completions:
            assert g.logprob == pytest.approx(b[tuple(g.tokens)], abs=1e-4)
        # The greedy completion first where it is there (a view's first answer is greedy decoding's), then likeliest.
        rest = completions[1:] if path in want else completions
        assert path not in want or tuple(completions[0].tokens) == path
        assert [g.logprob for g in rest] == sorted((g.logprob for g in rest), reverse=True)
    assert max(len(c) for c in got) > 1  # some prompt has several: the search forks


def test_the_greedy_completion_is_kept_however_unlikely(small_vocab_model):
    min_prob = 0.2
    greedy = greedy_generate(small_vocab_model, PROMPTS, MAX_NEW, CODEC)
    above = sample_above(small_vocab_model, PROMPTS, MAX_NEW, CODEC, min_prob=min_prob, keep_greedy=False)
    kept = sample_above(small_vocab_model, PROMPTS, MAX_NEW, CODEC, min_prob=min_prob)
    missing = 0
    for g, a, k in zip(greedy, above, kept, strict=True):
        path = _path(g.tokens)
        missing += path not in {tuple(x.tokens) for x in a}
        assert {tuple(x.tokens) for x in k} == {tuple(x.tokens) for x in a} | {path}
        assert tuple(k[0].tokens) == path
    assert missing > 0  # the threshold drops some prompt's greedy completion, which keep_greedy brings back


def test_a_small_budget_resumes_branches_and_finds_the_same(small_vocab_model, monkeypatch):
    """A budget of a row or two: forks wait in the queue and are prefilled again from their tokens so far."""
    prefills = []
    real = sampling_mod.left_pad
    monkeypatch.setattr(sampling_mod, "left_pad", lambda seqs, *a: prefills.append(len(seqs)) or real(seqs, *a))
    big = sample_above(small_vocab_model, PROMPTS, MAX_NEW, CODEC, min_prob=0.02)
    batches = len(prefills)
    small = sample_above(small_vocab_model, PROMPTS, MAX_NEW, CODEC, min_prob=0.02, token_budget=16)
    assert len(prefills) - batches > len(PROMPTS)  # branches were resumed, not only prompts started
    assert [[g.tokens for g in c] for c in small] == [[g.tokens for g in c] for c in big]
    np.testing.assert_allclose([g.logprob for c in small for g in c], [g.logprob for c in big for g in c], atol=1e-4)


def test_grid_model_positions_and_adapters_follow_each_branch(tiny_grid_model, flip_task, noisy_lora):
    """On the grid model (positions from every token) with an adapter per prompt: above 1/2 the only completion is
    the greedy one; at a low threshold, each completion's log-probability is its teacher-forced score."""
    model = tiny_grid_model(1)
    lora = noisy_lora(model, 2, std=0.5, seed=3)
    codec = GridCodec()
    tasks = [flip_task(0, "a"), flip_task(1, "b", shape=(2, 5))]
    queries, _ = make_queries(tasks, codec, PredictConfig(views=2, max_len=320))
    prompts, max_new = [q.prompt for q in queries], [min(q.max_new, 12) for q in queries]
    adapters = Adapters(lora, tuple(q.task for q in queries))
    greedy = greedy_generate(model, prompts, max_new, codec, adapters=adapters)
    sure = sample_above(model, prompts, max_new, codec, min_prob=0.6, adapters=adapters)
    for g, s in zip(greedy, sure, strict=True):
        stop = next((n + 1 for n, t in enumerate(g.tokens) if t in codec.stop_ids), len(g.tokens))
        assert [x.tokens for x in s] == [g.tokens[:stop]]
    wide = sample_above(model, prompts, max_new, codec, min_prob=0.01, keep_greedy=False, adapters=adapters)
    assert max(len(c) for c in wide) > 1
    seqs, slots, values = [], [], []
    for q, (p, completions) in enumerate(zip(prompts, wide, strict=True)):
        for g in completions:
            ids = np.concatenate([p, np.asarray(g.tokens)])
            seqs.append(Encoded(ids, np.arange(len(ids)) >= len(p), len(p), ()))
            slots.append(queries[q].task)
            values.append(g.logprob)
    scores = sequence_logprobs(model, seqs, codec.pad_id, adapters=Adapters(lora, tuple(slots)))
    np.testing.assert_allclose(values, scores, rtol=1e-4, atol=1e-4)
    assert all(v >= math.log(0.01) - 1e-4 for v in values)


def test_each_view_answers_with_its_greedy_answer_among_others(tiny_grid_model, flip_task, noisy_lora):
    model = tiny_grid_model(1)
    lora = noisy_lora(model, 1, std=0.5, seed=3)
    codec = GridCodec()
    tasks = [flip_task(2, "a", tests=2)]
    cfg = PredictConfig(views=4, max_len=320)
    greedy, _ = predict_tasks(model, tasks, codec, cfg, adapters=Adapters(lora, (0,)))
    sampled, _ = predict_tasks(model, tasks, codec, PredictConfig(views=4, max_len=320, dfs=0.05),
                               adapters=Adapters(lora, (0,)))

    def key(p):
        return p.group, None if p.grid is None else p.grid.tobytes(), round(p.logprob, 3)

    for g, s in zip(greedy[0].predictions, sampled[0].predictions, strict=True):
        assert {key(p) for p in g} <= {key(p) for p in s}
        assert len(s) > len(g)
        # Each view's first answer is its greedy one: the record's `greedy` and the vote's ties read it so.
        firsts = {p.group: key(p) for p in reversed(s)}
        assert firsts == {key(p)[0]: key(p) for p in g}
    assert sampled[0].generated_tokens > greedy[0].generated_tokens


def test_the_threshold_is_checked():
    assert build_config(None, None, settings={"dfs": 0.1}).predict_cfg.dfs == 0.1
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="dfs must be > 0 and <= 1"):
            build_config(None, None, settings={"dfs": bad})
    with pytest.raises(ValueError, match="min_prob"):
        sample_above(None, [], [], CODEC, min_prob=0.0)
