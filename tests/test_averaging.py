"""`testtime average`: models of one architecture averaged tensor by tensor (tiny grid models, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.model.averaging import average_models, mixing_weights
from testtime.model.loading import ModelConfig, build_model, load_model, save_model
from testtime.model.model_folder import ModelError


def saved(path, seed: int, shard: str = "15MB", **cfg):
    torch.manual_seed(seed)
    return save_model(build_model(ModelConfig(**{**vars(ModelConfig.tiny()), **cfg})), None, path,
                      max_shard_size=shard)


def weights_of(path):
    return dict(load_model(path, "cpu", dtype=torch.float32).model.state_dict())


def test_the_mean_is_weighted_tensor_by_tensor_and_loads(tmp_path):
    # two shardings: each tensor is read from whichever shard of each model holds it
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1, shard="20KB")
    out = average_models([a, b], tmp_path / "soup", [1, 3])
    wa, wb, mean = weights_of(a), weights_of(b), weights_of(out)
    assert wa.keys() == mean.keys()
    for key, value in mean.items():
        assert torch.allclose(value, 0.25 * wa[key] + 0.75 * wb[key], atol=1e-6), key
    assert not torch.equal(mean["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])
    # the first model's sharding and files beside the weights
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in a.glob("*.safetensors"))
    assert json.loads((out / "config.json").read_text()) == json.loads((a / "config.json").read_text())


def test_equal_weights_by_default_and_the_cli(tmp_path):
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    result = CliRunner().invoke(app, ["average", str(a), str(b), "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    wa, wb, mean = weights_of(a), weights_of(b), weights_of(tmp_path / "soup")
    assert all(torch.allclose(mean[k], (wa[k] + wb[k]) / 2, atol=1e-6) for k in mean)


@pytest.mark.parametrize(("weights", "n", "message"), [
    (None, 1, "two models or more"), ([1.0], 2, "1 weights for 2 models"), ([1.0, 0.0], 2, "positive"),
    ([1.0, float("nan")], 2, "finite")])
def test_bad_weights_are_refused(weights, n, message):
    with pytest.raises(ModelError, match=message):
        mixing_weights(weights, n)


def test_what_cannot_be_averaged_is_refused_in_one_line(tmp_path, one_line_error):
    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    wide = saved(tmp_path / "wide", 2, hidden_size=64)
    runner = CliRunner()

    def average(*args):
        return runner.invoke(app, ["average", *map(str, args)])

    one_line_error(average(a, wide, "--out", tmp_path / "x"), str(wide), "another architecture", "hidden_size")
    one_line_error(average(a, tmp_path / "none", "--out", tmp_path / "x"), "no such model folder")
    one_line_error(average(a, b, "--out", a), "is one of the models averaged")
    one_line_error(average(a, b, "--out", tmp_path / "x", "--weights", "1,two"), "not numbers")
    one_line_error(average(a, "--out", tmp_path / "x"), "two models or more")
    assert not (tmp_path / "x").exists()  # nothing written for a refused average
    assert average(a, b, "--out", tmp_path / "x").exit_code == 0
    one_line_error(average(a, b, "--out", tmp_path / "x"), "not empty")


def test_models_of_other_tensors_or_shapes_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    a, b = saved(tmp_path / "a", 0), saved(tmp_path / "b", 1)
    tensors = load_file(b / "model.safetensors")
    key = sorted(tensors)[-1]
    save_file({k: v for k, v in tensors.items() if k != key}, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"{b}: other tensors than .*first {key}"):
        average_models([a, b], tmp_path / "x")
    save_file({**tensors, key: tensors[key][:-1]}, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"tensor {key} is"):
        average_models([a, b], tmp_path / "x")
    assert not (tmp_path / "x").exists()
