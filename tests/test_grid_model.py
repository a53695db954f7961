"""The grid-aware model: (grid, row, column) positions, cached decoding equal to a full pass, a standard HF folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.data.encode import (
    BOS,
    END,
    INPUT,
    MAX_GRID_INDEX,
    NEWLINE,
    OUTPUT,
    PAD,
    GridCodec,
    encode_example,
    grid_positions,
    next_grid_position,
    pack_positions,
    unpack_positions,
)
from testtime.data.tasks import Example
from testtime.model.loading import load_model, save_model
from testtime.stages.engine import cache_keyword


def grid(rng, h, w):
    return rng.integers(0, 10, (h, w)).astype(np.uint8)


def test_positions_of_a_known_sequence():
    # <bos> <input> 1 2 \n 3 4 \n <output> 5 \n <end>
    ids = torch.tensor([[BOS, INPUT, 1, 2, NEWLINE, 3, 4, NEWLINE, OUTPUT, 5, NEWLINE, END]])
    g, r, c = (x[0].tolist() for x in unpack_positions(grid_positions(ids)))
    assert list(zip(g, r, c, strict=True)) == [
        (0, 0, 0), (0, 0, 0),  # bos, <input>
        (1, 1, 1), (1, 1, 2), (1, 1, 3),  # 1 2 \n
        (1, 2, 1), (1, 2, 2), (1, 2, 3),  # 3 4 \n
        (1, 3, 1),  # <output> sits under the input grid
        (2, 1, 1), (2, 1, 2),  # 5 \n: the output's cell (1, 1) is the input's (1, 1), one grid on
        (2, 2, 1),  # <end>
    ]


tokens = st.lists(st.sampled_from([*range(10), NEWLINE, INPUT, OUTPUT, END, BOS, PAD]), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(tokens, st.integers(0, 7))
def test_one_step_rule_equals_the_scan_and_left_padding_changes_nothing(seq, pads):
    ids = torch.tensor([seq])
    pos = grid_positions(ids)
    p = torch.zeros(1, 1, dtype=torch.long)
    for t in range(len(seq)):
        # A token sits where the ones before it leave the cursor; a <bos> (only a packed row's later documents have
        # one past the start) sits at the origin, where it leaves the cursor too.
        assert (0 if seq[t] == BOS else int(p)) == int(pos[0, t])
        p = next_grid_position(p, ids[:, t: t + 1])
    padded = torch.cat([torch.full((1, pads), PAD), ids], 1)
    assert torch.equal(grid_positions(padded)[:, pads:], pos)


def test_cached_decoding_equals_a_full_forward_pass(tiny_grid_model):
    from transformers import DynamicCache

    model = tiny_grid_model()
    kw = cache_keyword(model)  # `cache`, or `past_key_values` before transformers 5.2x
    rng = np.random.default_rng(0)
    enc = encode_example(GridCodec(), [Example(grid(rng, 2, 3), grid(rng, 3, 2))], Example(grid(rng, 2, 2), grid(rng, 3, 3)))
    ids = torch.tensor(enc.input_ids)[None]
    with torch.no_grad():
        full = model(ids).logits
        pos = grid_positions(ids)
        p_len = enc.prompt_len
        out = model(input_ids=ids[:, :p_len], position_ids=pos[:, :p_len], **{kw: DynamicCache()}, use_cache=True)
        cache = getattr(out, kw)
        torch.testing.assert_close(out.logits[0, -1], full[0, p_len - 1], atol=1e-4, rtol=1e-4)
        p = next_grid_position(pos[:, p_len - 1: p_len], ids[:, p_len - 1: p_len])
        for t in range(p_len, ids.shape[1]):
            step = model(input_ids=ids[:, t: t + 1], position_ids=p, **{kw: cache}, use_cache=True)
            torch.testing.assert_close(step.logits[0, -1], full[0, t], atol=1e-4, rtol=1e-4)
            p = next_grid_position(p, ids[:, t: t + 1])
    # Positions matter: the same tokens under flat positions give other logits.
    with torch.no_grad():
        flat = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits
    assert not torch.allclose(flat, full, atol=1e-3)


def test_the_decoding_engine_matches_naive_greedy_decoding(tiny_grid_model, naive_greedy):
    from testtime.stages.engine import greedy_generate

    model = tiny_grid_model(1)
    codec = GridCodec()
    rng = np.random.default_rng(1)
    prompts = [encode_example(codec, [Example(grid(rng, 2, 3), grid(rng, 3, 2))], Example(grid(rng, 2, 2))).input_ids,
               encode_example(codec, [Example(grid(rng, 3, 3), grid(rng, 1, 2)), Example(grid(rng, 2, 2), grid(rng, 2, 2))],
                              Example(grid(rng, 4, 2))).input_ids]
    got = greedy_generate(model, prompts, [12, 12], codec)
    seen = set()
    for prompt, gen in zip(prompts, got, strict=True):
        want = naive_greedy(model, prompt, 12, codec.stop_ids)
        assert gen.tokens[: len(want)] == want
        seen |= set(want)
    assert len(seen) > 2  # the check saw varied tokens, not one repeated
    # HF's own generate (as other tools call it) decodes the same tokens.
    for prompt, gen in zip(prompts, got, strict=True):
        out = model.generate(torch.tensor(prompt)[None], max_new_tokens=12, do_sample=False,
                             eos_token_id=sorted(codec.stop_ids), pad_token_id=codec.pad_id)
        hf = out[0, len(prompt):].tolist()
        assert hf == gen.tokens[: len(hf)]


def test_a_grid_model_folder_loads_through_transformers_and_takes_lora(tmp_path, tiny_grid_model):
    from transformers import AutoModelForCausalLM

    from testtime.model.lora import attach_multi_lora

    model = tiny_grid_model()
    save_model(model, None, tmp_path)
    ids = torch.randint(0, 10, (2, 20))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(hf).__name__ == "GridLlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits)
    # The rotary table (not in the checkpoint) is rebuilt however the folder is loaded.
    table = model.model.rotary_emb.table
    with_info, _ = AutoModelForCausalLM.from_pretrained(str(tmp_path), output_loading_info=True)
    assert torch.equal(with_info.model.rotary_emb.table, table)
    assert torch.equal(type(model.model).from_pretrained(str(tmp_path)).rotary_emb.table, table)
    loaded = load_model(tmp_path)
    assert loaded.model.config.model_type == "testtime_grid"
    lora = attach_multi_lora(loaded.model, 2)
    assert lora.parameters()


@pytest.mark.parametrize("from_table", [True, False])
def test_the_rotary_table_gives_each_frequency_its_axis_angle(tiny_grid_model, monkeypatch, from_table):
    # The table replaced computing angles from the positions (which Inductor folded into every layer; the benchmark
    # still times that way): the same products, so the same bits; frequency i turns with axis i % 3 of (row, column,
    # grid), up to the last grid index.
    rotary = tiny_grid_model().model.rotary_emb
    monkeypatch.setattr(type(rotary), "from_table", from_table)
    pos = torch.randint(0, 1 << 16, (3, 40))
    pos[0, 0] = pack_positions(torch.tensor(MAX_GRID_INDEX), torch.tensor(31), torch.tensor(31))
    cos, sin = rotary(torch.zeros(1), pos)
    grid, row, col = unpack_positions(pos)
    coords = torch.stack([row, col, grid], -1).float()
    half = torch.arange(0, rotary.dim, 2, dtype=torch.float)
    freqs = coords[..., torch.arange(rotary.dim // 2) % 3] * (1.0 / (rotary.theta ** (half / rotary.dim)))
    assert torch.equal(cos, torch.cat((freqs, freqs), -1).cos())
    assert torch.equal(sin, torch.cat((freqs, freqs), -1).sin())


def test_continuing_a_cache_without_positions_is_refused(tiny_grid_model):
    from transformers import DynamicCache

    model = tiny_grid_model()
    kw = cache_keyword(model)
    ids = torch.tensor([[BOS, INPUT, 1, 2, NEWLINE, OUTPUT]])
    out = model(input_ids=ids, **{kw: DynamicCache()}, use_cache=True)
    with pytest.raises(ValueError, match="position_ids"):
        model(input_ids=ids[:, :1], **{kw: getattr(out, kw)}, use_cache=True)


def test_import_testtime_registers_the_grid_model_with_transformers():
    """The model card's promise: after `import testtime` alone, plain transformers loads the shipped checkpoint. In a
    fresh interpreter, so that no earlier import of the grid model in this process can hide a failure."""
    import subprocess
    import sys
    from pathlib import Path

    import testtime
    from testtime.model.loading import DEFAULT_MODEL_DIR

    code = ("import testtime\n"
            "from transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(DEFAULT_MODEL_DIR)!r})\n"
            "print(type(m).__name__, m.config.model_type)\n")
    src = str(Path(testtime.__file__).parents[1])  # this checkout's package, not an installed one
    res = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": src}, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["GridLlamaForCausalLM", "testtime_grid"]
