"""Looped weight-tied blocks (`ModelConfig.loops`): one loop is the model as it was, two apply the stack twice, and a
looped model decodes from its cache, takes LoRA, saves, loads and packs like any other (tiny models, CPU)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from testtime.data.encode import GridCodec, encode_example, grid_positions, next_grid_position
from testtime.data.pretrain_data import collate, first_fit, pack
from testtime.data.sources import TaskSource
from testtime.data.tasks import Example
from testtime.model.attention import document_mask, use_document_attention
from testtime.model.grid_model import flop_params
from testtime.model.loading import DEFAULT_MODEL_DIR, ModelConfig, build_model, load_model, n_params, save_model
from testtime.recipes.pretrain import PretrainConfig, pretrain, read_log
from testtime.recipes.pretrain_step import loss_sum
from testtime.stages.engine import cache_keyword, greedy_generate

CODEC = GridCodec()
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=2048,
                   initializer_range=0.5)


def tiny(loops: int = 1, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(TINY, num_layers=layers, loops=loops)).eval()


def unrolled(looped):
    """A plain model (loops=1) whose layers are the looped model's, repeated once per pass."""
    loops = looped.model.loops
    plain = tiny(1, len(looped.model.layers) * loops)
    state = {k: v for k, v in looped.state_dict().items() if ".layers." not in k and "loop_embed" not in k}
    for p in range(loops):
        for i, layer in enumerate(looped.model.layers):
            for k, v in layer.state_dict().items():
                state[f"model.layers.{p * len(looped.model.layers) + i}.{k}"] = v
    plain.load_state_dict(state)
    return plain


def by_hand(model, ids, passes: int, vectors=None):
    """The decoder, written out: embeddings, the stack `passes` times (a vector added before each pass), norm, head."""
    m = model.model
    pos = grid_positions(ids)
    h = m.embed_tokens(ids)
    pe = m.rotary_emb(h, pos)
    for p in range(passes):
        if vectors is not None:
            h = h + vectors[p]
        for layer in m.layers:
            h = layer(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
    return model.lm_head(m.norm(h))


def _ids(seed: int = 0):
    rng = np.random.default_rng(seed)
    g = lambda h, w: rng.integers(0, 10, (h, w)).astype(np.uint8)  # noqa: E731
    enc = encode_example(CODEC, [Example(g(2, 3), g(3, 2)), Example(g(3, 3), g(2, 2))], Example(g(2, 2), g(3, 3)))
    return torch.tensor(enc.input_ids)[None], enc


def test_one_loop_is_the_model_as_it_was():
    """loops=1 writes no new config key and holds no new weight (the shipped folder loads as before), and the forward
    pass is the stack applied once."""
    cfg = ModelConfig().llama_config().to_dict()
    assert "loops" not in cfg and "task_names" not in cfg and cfg["num_hidden_layers"] == 8
    shipped = load_model(DEFAULT_MODEL_DIR).model
    index = json.loads((DEFAULT_MODEL_DIR / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(shipped.state_dict()) - {"lm_head.weight"} == set(index)  # no loop or task weights appear
    assert shipped.model.loops == 1 and shipped.model.loop_embed is None and shipped.model.task_embedding is None
    model = tiny()
    ids, _ = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, by_hand(model, ids, 1), rtol=0, atol=0)
        assert not torch.allclose(model(ids).logits, by_hand(model, ids, 2), atol=1e-3)
    assert flop_params(model) == n_params(model)


def test_two_loops_apply_the_stack_twice():
    looped = tiny(loops=2)
    assert len(looped.model.layers) == 2 and looped.config.num_hidden_layers == 4
    assert float(looped.model.loop_embed.detach().abs().sum()) == 0  # a fresh looped model is plain weight tying
    ids, _ = _ids()
    with torch.no_grad():
        torch.testing.assert_close(looped(ids).logits, unrolled(looped)(ids).logits, rtol=1e-5, atol=1e-5)
        looped.model.loop_embed.normal_(0, 1.0)
        torch.testing.assert_close(looped(ids).logits, by_hand(looped, ids, 2, looped.model.loop_embed),
                                   rtol=1e-5, atol=1e-5)
        assert not torch.allclose(looped(ids).logits, unrolled(looped)(ids).logits, atol=1e-3)
    layer = sum(p.numel() for p in looped.model.layers.parameters())
    assert flop_params(looped) == n_params(looped) + layer  # the stack's matmuls count once a pass


def test_looped_cached_decoding_equals_a_full_forward_pass(naive_greedy):
    from transformers import DynamicCache

    model = tiny(loops=3, seed=1)
    with torch.no_grad():
        model.model.loop_embed.normal_(0, 0.5)
    kw = cache_keyword(model)
    ids, enc = _ids(1)
    with torch.no_grad():
        full = model(ids).logits
        pos = grid_positions(ids)
        n = enc.prompt_len
        out = model(input_ids=ids[:, :n], position_ids=pos[:, :n], **{kw: DynamicCache(config=model.config)},
                    use_cache=True)
        cache = getattr(out, kw)
        assert len(cache.layers) == 6  # an entry per layer per pass
        p = next_grid_position(pos[:, n - 1: n], ids[:, n - 1: n])
        for t in range(n, ids.shape[1]):
            step = model(input_ids=ids[:, t: t + 1], position_ids=p, **{kw: cache}, use_cache=True)
            torch.testing.assert_close(step.logits[0, -1], full[0, t], atol=1e-4, rtol=1e-4)
            p = next_grid_position(p, ids[:, t: t + 1])
    # The engine (a static cache sized from the config, prompts batched and left-padded) decodes what naive greedy
    # decoding over whole sequences gives.
    prompts = [encode_example(CODEC, [Example(np.eye(3, dtype=np.uint8), np.ones((2, 2), np.uint8))],
                              Example(np.eye(2, dtype=np.uint8))).input_ids, ids[0, :n].numpy()]
    got = greedy_generate(model, prompts, [10, 10], CODEC)
    for prompt, gen in zip(prompts, got, strict=True):
        want = naive_greedy(model, prompt, 10, CODEC.stop_ids)
        assert gen.tokens[: len(want)] == want


def test_lora_on_a_looped_model_is_applied_in_every_pass(noisy_lora):
    """Adapters attach to the unique layers, so each is applied once a pass: the looped model with its adapters
    equals the unrolled model with each adapter copied into every pass's copy of its layer."""
    looped = tiny(loops=2, seed=2)
    plain = unrolled(looped)
    a = noisy_lora(looped, 2)
    b = noisy_lora(plain, 2)
    assert len(b.layers) == 2 * len(a.layers) == 2 * 7 * 2
    with torch.no_grad():
        for name, layer in b.layers.items():
            i = int(name.split(".layers.")[1].split(".")[0])
            src = a.layers[name.replace(f".layers.{i}.", f".layers.{i % 2}.")]
            layer.lora_A.copy_(src.lora_A)
            layer.lora_B.copy_(src.lora_B)
    ids = torch.cat([_ids(0)[0][:, :30], _ids(1)[0][:, :30]])
    for lora in (a, b):
        lora.use(torch.tensor([0, 1]))
    with torch.no_grad():
        adapted = looped(ids).logits
        torch.testing.assert_close(adapted, plain(ids).logits, rtol=1e-4, atol=1e-4)
        a.use(None)
        assert not torch.allclose(adapted, looped(ids).logits, atol=1e-3)


def test_a_looped_model_saves_and_loads_through_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny(loops=2, seed=3)
    with torch.no_grad():
        model.model.loop_embed.normal_(0, 0.5)
    save_model(model, None, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["loops"], cfg["num_hidden_layers"]) == (2, 4)
    ids, _ = _ids()
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    loaded = load_model(tmp_path).model
    with torch.no_grad():
        for m in (hf, loaded):
            assert len(m.model.layers) == 2
            torch.testing.assert_close(m(ids).logits, model(ids).logits)


def test_a_looped_model_packs_and_pretrains(tmp_path, flip_task):
    seqs = [encode_example(CODEC, list(t.train)[:2], t.train[2])
            for t in (flip_task(i, f"t{i}", s) for i, s in enumerate([(3, 4), (5, 5), (2, 2), (4, 4)]))]
    padded, packed = collate(seqs, 16), pack(first_fit(seqs, 256), 256)
    model = tiny(loops=2, seed=4)
    with torch.no_grad(), use_document_attention(model):
        a = loss_sum(model, padded.input_ids, padded.labels)
        b = loss_sum(model, packed.input_ids, packed.labels, document_mask(packed.doc_ids))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    cfg = PretrainConfig(model=dataclasses.replace(TINY, loops=2, initializer_range=0.02), packing=True, max_len=512,
                         token_budget=2048, pool_size=24, pad_multiple=64, lr=3e-3, warmup_steps=1, total_steps=4,
                         log_every=1, device="cpu", checkpoint_minutes=100)
    res = pretrain(cfg, tmp_path / "run", progress=False, sources=[TaskSource([flip_task(i, f"t{i}") for i in range(6)])])
    log = read_log(tmp_path / "run")
    assert res.finished and log[-1]["loss"] < log[0]["loss"]
    assert load_model(res.model_dir).model.model.loops == 2


@pytest.mark.parametrize("bad", [dict(loops=2, grid_positions=False), dict(task_embedding=True, grid_positions=False)])
def test_looping_and_task_vectors_need_the_grid_model(bad):
    from testtime.core.config import ConfigError

    with pytest.raises(ConfigError, match="grid model"):
        ModelConfig(**bad)
