"""`testtime average`: models of one architecture averaged tensor by tensor (tiny grid models, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from testtime.cli import app
from testtime.model.averaging import average_models, mixing_weights
from testtime.model.loading import ModelConfig, build_model, load_model, save_model
from testtime.model.model_folder import ModelError


def saved(path, seed: int, shard: str = "15MB", dtype=None, **cfg):
    torch.manual_seed(seed)
    return save_model(build_model(ModelConfig(**{**vars(ModelConfig.tiny()), **cfg})), None, path,
                      max_shard_size=shard, dtype=dtype)


def stored(path) -> dict[str, torch.Tensor]:
    """A folder's tensors as written, in their own dtype."""
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_the_mean_is_weighted_in_float32_and_stored_as_the_first_models(tmp_path):
    # the first model in bfloat16 and sharded, the second in float32 in one file: each tensor is read from
    # whichever file of each model holds it, and the mean keeps the first's dtype, shards and index
    a, b = saved(tmp_path / "a", 0, shard="20KB", dtype=torch.bfloat16), saved(tmp_path / "b", 1)
    out = average_models([a, b], tmp_path / "soup", [1, 3])
    wa, wb, mean = stored(a), stored(b), stored(out)
    assert wa.keys() == mean.keys() and len(list(a.glob("*.safetensors"))) > 1
    for key, value in mean.items():
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, (0.25 * wa[key].float() + 0.75 * wb[key].float()).to(torch.bfloat16)), key
    assert not torch.equal(mean["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in a.glob("*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert all(key in load_file(out / name) for key, name in index.items()) and index.keys() == mean.keys()
    assert json.loads((out / "config.json").read_text()) == json.loads((a / "config.json").read_text())
    logits = load_model(out, "cpu", dtype=torch.float32).model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()
    assert not list(tmp_path.glob(".soup.partial-*"))  # the folder written beside, moved into place


def test_equal_weights_by_default_and_the_cli(tmp_path):
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    (a / "README.md").write_text("a's model card")
    (tmp_path / "soup").mkdir()  # an empty folder is written into
    result = CliRunner().invoke(app, ["average", str(a), str(b), "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    wa, wb, mean = stored(a), stored(b), stored(tmp_path / "soup")
    assert all(torch.equal(mean[k], (wa[k] + wb[k]) / 2) for k in mean)
    assert not (tmp_path / "soup/README.md").exists()  # a's card describes a, not the mean


@pytest.mark.parametrize(("weights", "n", "message"), [
    (None, 1, "two models or more"), ([1.0], 2, "1 weights for 2 models"), ([1.0, 0.0], 2, "positive"),
    ([1.0, float("nan")], 2, "finite"), ([1.0, float("inf")], 2, "finite")])
def test_bad_weights_are_refused(weights, n, message):
    with pytest.raises(ModelError, match=message):
        mixing_weights(weights, n)


def test_huge_weights_do_not_overflow_to_zero():
    assert mixing_weights([1e308, 1e308], 2) == [0.5, 0.5]
    assert mixing_weights([1e308, 7.5e307], 2) == pytest.approx([4 / 7, 3 / 7])


def test_what_cannot_be_averaged_is_refused_in_one_line(tmp_path, one_line_error):
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    wide = saved(tmp_path / "wide", 2, hidden_size=64)
    runner = CliRunner()

    def average(*args):
        return runner.invoke(app, ["average", *map(str, args)])

    one_line_error(average(a, wide, "--out", tmp_path / "x"), str(wide), "another architecture", "hidden_size")
    one_line_error(average(a, tmp_path / "none", "--out", tmp_path / "x"), "no such model folder")
    one_line_error(average(a, b, "--out", a), "a model averaged")
    one_line_error(average(a, b, "--out", f"{a}/"), "a model averaged")
    one_line_error(average(a, b, "--out", a / "soup"), "a model averaged")  # inside one
    one_line_error(average(a, b, "--out", tmp_path / "x", "--weights", "1,two"), "not numbers")
    one_line_error(average(a, "--out", tmp_path / "x"), "two models or more")
    (tmp_path / "file").write_text("")
    one_line_error(average(a, b, "--out", tmp_path / "file"), "not a folder")
    assert not (tmp_path / "x").exists()  # nothing written for a refused average
    assert average(a, b, "--out", tmp_path / "x").exit_code == 0
    one_line_error(average(a, b, "--out", tmp_path / "x"), "not empty")


def test_a_tied_head_and_an_untied_one_are_other_architectures(tmp_path):
    a = saved(tmp_path / "a", 0)
    b = saved(tmp_path / "b", 1, tie_embeddings=not json.loads((a / "config.json").read_text())["tie_word_embeddings"])
    with pytest.raises(ModelError, match="tie_word_embeddings"):
        average_models([a, b], tmp_path / "x")


def test_models_of_other_tensors_or_shapes_are_refused(tmp_path):
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    tensors = load_file(b / "model.safetensors")
    key = sorted(tensors)[-1]
    save_file({k: v for k, v in tensors.items() if k != key}, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"{b}: other tensors than .*first {key}"):
        average_models([a, b], tmp_path / "x")
    save_file({**tensors, key: tensors[key][:-1]}, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"tensor {key} is"):
        average_models([a, b], tmp_path / "x")
    # a tensor that is not floating point (a count, a flag) is kept where equal, refused where not
    save_file({**load_file(a / "model.safetensors"), "steps": torch.tensor([1])}, str(a / "model.safetensors"),
              metadata={"format": "pt"})
    save_file({**tensors, "steps": torch.tensor([2])}, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="tensor steps .* differs"):
        average_models([a, b], tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch, one_line_error):
    a, b = saved(tmp_path / "a", 0, shard="20KB"), saved(tmp_path / "b", 1)
    written = []

    def full_disk(tensors, path, metadata=None):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    one_line_error(CliRunner().invoke(app, ["average", str(a), str(b), "--out", str(tmp_path / "x")]),
                   "writing the mean failed", "No space left")
    assert written and not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))
