"""`testtime quantize` and int8 model folders: written, read back by every loader, refused in one line when wrong
(tiny models, CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from testtime.cli import app
from testtime.model.int8 import CONFIG_KEY, SCALE_SUFFIX, dequantize_tensor, quantize_model, quantize_tensor
from testtime.model.loading import ModelConfig, build_model, load_model, save_model
from testtime.model.model_folder import ModelError


def saved(path, seed: int = 0, shard: str = "15MB", dtype=None, grid: bool = False, tied: bool = True):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**vars(ModelConfig.tiny()), "grid_positions": grid, "tie_embeddings": tied})
    return save_model(build_model(cfg), None, path, max_shard_size=shard, dtype=dtype)


def stored(path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 9)),
              elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)))
def test_each_weight_comes_back_within_half_a_step_of_its_row(w):
    w = torch.from_numpy(w)
    values, scale = quantize_tensor(w)
    assert values.dtype == torch.int8 and values.abs().max() <= 127 and scale.shape == (w.shape[0], 1)
    back = dequantize_tensor(values, scale)
    assert torch.all((back - w).abs() <= scale / 2 * (1 + 1e-5) + 1e-30)
    assert torch.equal(back[w == 0], w[w == 0])  # symmetric: zero stays zero, and so does a row of zeros


@pytest.mark.parametrize(("grid", "shard", "dtype", "tied"), [(False, "20KB", torch.bfloat16, True),
                                                             (True, "15MB", None, True), (True, "15MB", None, False)])
def test_a_quantized_folder_loads_as_the_round_trip_of_its_weights(tmp_path, grid, shard, dtype, tied):
    src = saved(tmp_path / "src", grid=grid, shard=shard, dtype=dtype, tied=tied)
    (src / "README.md").write_text("the bf16 model's card")
    (src / "loss.png").write_bytes(b"png")
    out = quantize_model(src, tmp_path / "int8")
    weights, q = stored(src), stored(out)
    assert json.loads((out / "config.json").read_text())[CONFIG_KEY]["scheme"] == "absmax-per-row"
    assert (out / "tokenizer.json").exists() and not (out / "README.md").exists() and not (out / "loss.png").exists()
    for key, w in weights.items():
        if w.ndim == 2:
            assert q[key].dtype == torch.int8 and q[key + SCALE_SUFFIX].dtype == torch.float32, key
        else:
            assert torch.equal(q[key], w), key  # norms as they were
    if shard == "20KB":  # sharded as the source, with an index naming the scales too
        index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        assert index.keys() == q.keys() and len(set(index.values())) > 1
        assert all(key in load_file(out / name) for key, name in index.items())
    nbytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert nbytes < 0.7 * sum(f.stat().st_size for f in src.glob("*.safetensors"))
    original = load_model(src, dtype=torch.float32).model
    back = load_model(out, dtype=torch.float32).model
    assert type(back) is type(original)
    for (name, p), r in zip(original.named_parameters(), back.parameters(), strict=True):
        want = dequantize_tensor(*quantize_tensor(p.detach())) if p.ndim == 2 else p
        assert torch.equal(r, want), name
    head, embed = back.get_output_embeddings().weight, back.get_input_embeddings().weight
    assert (head is embed) == tied and ("lm_head.weight" + SCALE_SUFFIX in q) == (not tied)
    # in bf16, as a GPU loads it: the buffers (rotary frequencies, the grid model's table) as from_pretrained makes
    # them, float32 where it keeps them so, not rounded to the weights' dtype
    want = dict(load_model(src, dtype=torch.bfloat16).model.named_buffers())
    got = dict(load_model(out, dtype=torch.bfloat16).model.named_buffers())
    assert want.keys() == got.keys() and want
    for name, buf in want.items():
        assert got[name].dtype == buf.dtype and torch.equal(got[name], buf), name
    ids = torch.tensor([[1, 4, 5, 6, 2, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, original(ids).logits, atol=0.05, rtol=0)
    # read back it is an ordinary model: saved again, a plain folder transformers reads itself
    plain = save_model(back, None, tmp_path / "plain")
    assert CONFIG_KEY not in json.loads((plain / "config.json").read_text())
    assert all(v.dtype != torch.int8 for v in stored(plain).values())


def test_the_cli_writes_one_and_refuses_what_it_cannot_in_one_line(tmp_path, one_line_error):
    src = saved(tmp_path / "src")
    runner = CliRunner()

    def quantize(*args):
        return runner.invoke(app, ["quantize", *map(str, args)])

    one_line_error(quantize(tmp_path / "none", "--out", tmp_path / "x"), "no such model folder")
    one_line_error(quantize(src, "--out", src / "int8"), "inside", "the model quantized")
    (tmp_path / "file").write_text("")
    one_line_error(quantize(src, "--out", tmp_path / "file"), "not a folder")
    assert not (tmp_path / "x").exists()
    got = quantize(src, "--out", tmp_path / "x")
    assert got.exit_code == 0 and got.output.startswith(f"wrote {tmp_path / 'x'}: weights "), got.output
    one_line_error(quantize(src, "--out", tmp_path / "x"), "not empty")
    one_line_error(quantize(tmp_path / "x", "--out", tmp_path / "y"), "already int8")
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".*.partial-*"))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   SafetensorError("Error while serializing: No space left on device")])
def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch, one_line_error, error):
    src = saved(tmp_path / "src", shard="20KB")
    written = []

    def full_disk(tensors, path, metadata=None):
        if written:
            raise error
        written.append(path)
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    one_line_error(CliRunner().invoke(app, ["quantize", str(src), "--out", str(tmp_path / "x")]),
                   "writing the int8 model failed", "No space left")
    assert written and not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))


def corrupt(folder, change) -> None:
    """Rewrite the folder's one weight file with `change` applied to its tensors."""
    (f,) = folder.glob("*.safetensors")
    tensors = load_file(f)
    change(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


@pytest.mark.parametrize(("damage", "message"), [
    (lambda t: t.pop(next(k for k in t if k.endswith(SCALE_SUFFIX))), "without a scale for each of its"),
    (lambda t: t.pop(next(k for k in t if t[k].dtype == torch.int8)), "without their weights"),
    (lambda t: t.update({k: v[:-1] for k, v in t.items() if k.endswith(SCALE_SUFFIX)}), "without a scale"),
    (lambda t: t.update({k: v.float() for k, v in t.items() if v.dtype == torch.int8}), "but is torch.float32"),
    (lambda t: t.update({"model.extra.weight": torch.zeros(2, 2, dtype=torch.int8),
                         "model.extra.weight" + SCALE_SUFFIX: torch.ones(2, 1)}), "do not fit its config"),
])
def test_a_damaged_int8_folder_is_a_one_line_error_naming_it(tmp_path, damage, message):
    out = quantize_model(saved(tmp_path / "src"), tmp_path / "int8")
    corrupt(out, damage)
    with pytest.raises(ModelError, match=message) as err:
        load_model(out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)


def test_a_model_whose_tensors_its_config_does_not_name_is_not_written(tmp_path, one_line_error):
    src = saved(tmp_path / "src")
    corrupt(src, lambda t: t.update({"model.extra.weight": torch.ones(2, 2)}))  # transformers would drop it at load
    one_line_error(CliRunner().invoke(app, ["quantize", str(src), "--out", str(tmp_path / "x")]),
                   "cannot be stored as int8", "do not fit its config")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))


def test_the_folder_is_readable_as_the_umask_allows(tmp_path):
    out = quantize_model(saved(tmp_path / "src"), tmp_path / "int8")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_an_unknown_int8_scheme_is_refused(tmp_path):
    out = quantize_model(saved(tmp_path / "src"), tmp_path / "int8")
    cfg = json.loads((out / "config.json").read_text())
    cfg[CONFIG_KEY]["scheme"] = "int4-groups"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unknown scheme 'int4-groups'"):
        load_model(out)
