"""Augmented inference and voting: batched decoding equals one-at-a-time decoding, and answers map back."""

import numpy as np
import pytest
import torch

import testtime.stages.engine as engine_mod
import testtime.stages.predict as predict_mod
from testtime.data.encode import GridCodec
from testtime.data.tasks import Example, Task
from testtime.model.lora import Adapters
from testtime.stages.engine import Generated, greedy_generate
from testtime.stages.predict import PredictConfig, make_queries, predict_tasks
from testtime.stages.vote import Prediction, attempts, hierarchical_vote, is_solved


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_llama):
    model = tiny_llama()
    codec = GridCodec()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 14, size=n).astype(np.int64) for n in (5, 17, 9, 30)]
    max_new = [6, 3, 8, 5]
    batched = greedy_generate(model, prompts, max_new, codec, token_budget=10_000)
    for p, m, g in zip(prompts, max_new, batched, strict=True):
        ids = torch.tensor(p)[None]
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=m, do_sample=False,
                             eos_token_id=sorted(codec.stop_ids), pad_token_id=codec.pad_id)
        want = out[0, len(p):].tolist()
        assert g.tokens[: len(want)] == want
        assert all(t == codec.pad_id for t in g.tokens[len(want):])


def test_small_token_budget_gives_the_same_answers(tiny_llama):
    model = tiny_llama()
    codec = GridCodec()
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 14, size=n).astype(np.int64) for n in (4, 8, 12, 16, 20)]
    a = greedy_generate(model, prompts, [5] * 5, codec, token_budget=10_000)
    b = greedy_generate(model, prompts, [5] * 5, codec, token_budget=30)
    assert [x.tokens for x in a] == [x.tokens for x in b]


def test_prepared_mask_decode_equals_hf_masks(monkeypatch, tiny_llama, noisy_lora):
    """The fixed-buffer decode loop (the one CUDA graphs replay) gives the tokens and log-probs of the
    loop where HF builds every mask, with left padding, per-row limits and a different adapter per row."""
    model = tiny_llama()
    lora = noisy_lora(model, 3, std=0.5, seed=4)
    codec = GridCodec()
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 14, size=n).astype(np.int64) for n in (3, 11, 7, 19, 2, 13)]
    max_new = [9, 4, 12, 7, 1, 10]
    which = [0, 1, 2, 0, 1, 2]
    assert engine_mod.mask_layout(model.config) == engine_mod.MaskLayout()
    fixed = greedy_generate(model, prompts, max_new, codec, adapters=Adapters(lora, tuple(which)))
    monkeypatch.setattr(engine_mod, "mask_layout", lambda config: None)  # HF's own loop
    hf = greedy_generate(model, prompts, max_new, codec, adapters=Adapters(lora, tuple(which)))
    assert [g.tokens for g in fixed] == [g.tokens for g in hf]
    assert np.allclose([g.logprob for g in fixed], [g.logprob for g in hf], atol=1e-4)
    assert any(t not in codec.stop_ids and t != codec.pad_id for g in fixed for t in g.tokens)  # it said something


@pytest.mark.parametrize(("arch", "layout"), [("gemma3", (16, ("full_attention", "sliding_attention"))),
                                              ("mistral", (24, None))])
def test_sliding_window_models_decode_over_fixed_buffers_as_hf_does(arch, layout, monkeypatch):
    """Gemma 3 (sliding and full layers) and Mistral (all sliding) take the fixed-buffer loop too, the window
    in the mask: same tokens and log-probs as HF's loop, for prompts and answers longer than the window."""
    from testtime.data.encode import TextCodec
    from testtime.model.tiny_lm import byte_bpe_tokenizer, tiny_causal_lm

    tok = byte_bpe_tokenizer(pad=True)
    model = tiny_causal_lm(arch, tok).eval()
    assert engine_mod.mask_layout(model.config) == engine_mod.MaskLayout(*layout)
    assert not engine_mod.fixed_buffers(engine_mod.mask_layout(model.config), graphs=False)  # a CPU: HF's loop
    monkeypatch.setattr(engine_mod, "fixed_buffers", lambda layout, graphs: layout is not None)  # as on a GPU
    codec = TextCodec(tok)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(3, len(tok), size=n).astype(np.int64) for n in (30, 45, 7, 52)]
    max_new = [20, 35, 12, 28]
    fixed = greedy_generate(model, prompts, max_new, codec)
    monkeypatch.setattr(engine_mod, "mask_layout", lambda config: None)
    hf = greedy_generate(model, prompts, max_new, codec)
    assert [g.tokens for g in fixed] == [g.tokens for g in hf]
    assert np.allclose([g.logprob for g in fixed], [g.logprob for g in hf], atol=1e-4)
    assert sum(t not in codec.stop_ids and t != codec.pad_id for g in fixed for t in g.tokens) > 40


def test_queries_cover_every_view_and_test_input(flip_task):
    task = flip_task(0, "flip0", tests=2)
    queries, problems = make_queries([task], GridCodec(), PredictConfig(views=8, orders=2))
    assert not problems
    assert len(queries) == 8 * 2 * len(task.test)
    assert {q.group for q in queries} == {"id", "rot90", "rot180", "rot270", "transpose", "flip_h",
                                          "anti_transpose", "flip_v"}


def _oracle(rule):
    """A stand-in for the model that reads the query out of the prompt and answers `rule(query)`."""
    codec = GridCodec()

    def generate(model, prompts, max_new, codec_, **kw):
        out = []
        for p in prompts:
            ids = list(p)
            start = len(ids) - 1 - ids[::-1].index(11)  # last <input>
            grid = codec.decode_grid(ids[start + 1: -1] + [13]).grid
            ans = codec.answer_piece(rule(grid)).tolist()
            out.append(Generated(ans, 0.0))
        return out

    return generate


def test_voting_maps_every_view_back(monkeypatch, flip_task):
    """A model that solves each view correctly is voted right only if every answer is mapped back."""
    task = flip_task(0, "flip0", tests=2)
    # The stand-in answers each view with the truth in that view's frame.
    queries, _ = make_queries([task], GridCodec(), PredictConfig(views=8))
    answers = {}
    for q in queries:
        truth = task.test[q.test].output
        answers[q.prompt.tobytes()] = q.view.apply_grid(truth)

    def generate(model, prompts, max_new, codec_, **kw):
        return [Generated(GridCodec().answer_piece(answers[p.tobytes()]).tolist(), 0.0) for p in prompts]

    monkeypatch.setattr(predict_mod, "greedy_generate", generate)
    preds, _ = predict_tasks(None, [task], GridCodec(), PredictConfig(views=8))
    for qi, test in enumerate(task.test):
        plist = preds[0].predictions[qi]
        assert len(plist) == 8
        assert all(np.array_equal(p.grid, test.output) for p in plist)
        cands = hierarchical_vote(plist)
        assert cands[0].votes == 8 and is_solved(attempts(cands), test.output)


def test_a_model_that_always_transposes_is_undone_by_inversion(monkeypatch):
    """On a transpose task, a model answering transpose(query) is right in the identity view;
    after inversion, views where transpose does not commute disagree, and identity still wins."""
    rng = np.random.default_rng(3)

    def ex():
        g = rng.integers(0, 10, size=(3, 4)).astype(np.uint8)
        return Example(g, np.ascontiguousarray(g.T))

    task = Task("transpose", (ex(), ex()), (ex(),))
    monkeypatch.setattr(predict_mod, "greedy_generate", _oracle(lambda g: np.ascontiguousarray(g.T)))
    preds, _ = predict_tasks(None, [task], GridCodec(), PredictConfig(views=8))
    plist = preds[0].predictions[0]
    # transpose commutes with id, rot180, transpose and anti_transpose: those 4 views agree on the truth.
    right = [p.group for p in plist if np.array_equal(p.grid, task.test[0].output)]
    assert sorted(right) == ["anti_transpose", "id", "rot180", "transpose"]
    cands = hierarchical_vote(plist)
    assert np.array_equal(cands[0].grid, task.test[0].output) and cands[0].votes == 4


def test_vote_ties_go_to_identity_and_invalid_is_dropped():
    a = np.zeros((2, 2), dtype=np.uint8)
    b = np.ones((2, 2), dtype=np.uint8)
    preds = [Prediction("rot90", b), Prediction("id", a), Prediction("flip_h", None)]
    cands = hierarchical_vote(preds)
    assert np.array_equal(cands[0].grid, a) and cands[0].in_identity
    assert len(cands) == 2
    assert attempts(cands[:1])[1] is None


def test_within_group_votes_then_across():
    g = [np.full((1, 1), c, dtype=np.uint8) for c in range(5)]
    preds = ([Prediction("A", g[1])] * 3 + [Prediction("A", g[2])] * 2 + [Prediction("A", g[3])] * 2
             + [Prediction("A", g[4])] + [Prediction("B", g[4])] * 2 + [Prediction("C", g[4])])
    cands = hierarchical_vote(preds, per_group=3)
    assert int(cands[0].grid[0, 0]) == 4 and cands[0].votes == 2  # kept by groups B and C, not A (4th in A)
    assert {int(c.grid[0, 0]) for c in cands} == {1, 2, 3, 4}


def test_generation_budget_follows_free_memory_and_cache_size(monkeypatch, tiny_llama):
    model = tiny_llama()  # 2 layers, 2 KV heads of 16 dims, fp32
    assert engine_mod.kv_bytes_per_token(model) == 2 * 2 * 2 * 16 * 4
    monkeypatch.setattr(engine_mod, "available_memory", lambda device: 10 * 512 * 100_000)
    assert engine_mod.auto_token_budget(model) == 100_000  # a tenth of a CPU's available memory
    monkeypatch.setattr(engine_mod, "available_memory", lambda device: 1 << 40)
    assert engine_mod.auto_token_budget(model) == 1 << 20  # never more than 1M tokens a batch
    monkeypatch.setattr(engine_mod, "available_memory", lambda device: 1 << 20)
    assert engine_mod.auto_token_budget(model) == 4096  # nor fewer than 4096
    assert engine_mod.available_memory(torch.device("cpu")) > 0  # reads this machine's /proc/meminfo
