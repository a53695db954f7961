"""Base model: config, save/load round trip with shards, one-line errors, default folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from testtime.data.encode import GridCodec
from testtime.model.loading import (
    DEFAULT_MODEL_DIR,
    REPO_ROOT,
    ModelConfig,
    ModelError,
    build_model,
    default_model_dir,
    load_model,
    n_params,
    save_model,
)


def test_base_config_shape():
    cfg = ModelConfig().llama_config()
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (32, 512, 8, 8)
    assert cfg.model_type == "testtime_grid"
    assert cfg.hidden_size // cfg.num_attention_heads == 64 and cfg.tie_word_embeddings
    with torch.device("meta"):
        n = n_params(build_model())
    assert 25e6 < n < 27e6  # the cap is 30M


def test_save_load_round_trip_with_shards(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128))
    save_model(model, None, tmp_path, max_shard_size="100KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size < 100_000 * 1.5 for p in shards)
    loaded = load_model(tmp_path)
    assert isinstance(loaded.codec, GridCodec) and loaded.path == tmp_path
    ids = torch.tensor([[14, 11, 1, 2, 10, 12, 3, 4, 10, 13]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded.model(ids).logits)


def test_bf16_export_loads_as_fp32_on_cpu(tmp_path):
    model = build_model(ModelConfig.tiny())
    save_model(model, None, tmp_path, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    loaded = load_model(tmp_path)
    assert next(loaded.model.parameters()).dtype == torch.float32
    p = dict(model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    q = dict(loaded.model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(p.to(torch.bfloat16).float(), q)


def test_missing_path_is_one_line_model_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match="nope: no such model folder") as e:
        load_model(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        load_model(tmp_path / "empty")
    # The command line reports it as a user error: one line, exit code 2, no traceback.
    from typer.testing import CliRunner

    from testtime.cli import EXIT_USER_ERROR, app

    res = CliRunner().invoke(app, ["solve", "arc1/eval/00576224", "--model", str(missing), "--device", "cpu"])
    assert res.exit_code == EXIT_USER_ERROR and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"error: {missing}: no such model folder")


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TESTTIME_MODEL", raising=False)
    assert default_model_dir() == DEFAULT_MODEL_DIR == REPO_ROOT / "models" / "testtime-grid-base"
    assert (REPO_ROOT / "src" / "testtime" / "model" / "loading.py").is_file()
    monkeypatch.setenv("TESTTIME_MODEL", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelError, match="elsewhere"):
        load_model()


# ---------------------------------------------------------------- one loader, every failure one line


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model(ModelConfig.tiny()), None, tmp_path_factory.mktemp("m") / "good")


def _break(folder: Path, how: str) -> None:
    weights, cfg = folder / "model.safetensors", folder / "config.json"
    obj = json.loads(cfg.read_text())
    if how == "no weights":
        weights.unlink()
    elif how == "empty weights":
        weights.write_bytes(b"")
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "pickle weights":
        torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
        weights.unlink()
    elif how == "config a list":
        cfg.write_text("[1, 2]")
    elif how == "config deep":
        cfg.write_text("[" * 50_000)
    elif how == "bad model_type":
        cfg.write_text(json.dumps({**obj, "model_type": "nonsense"}))
    else:  # a bad size: "key=value"
        key, value = how.split("=")
        cfg.write_text(json.dumps({**obj, key: json.loads(value)}))


BROKEN = {
    "no weights": "no weights (expected model.safetensors",
    "empty weights": "model.safetensors: corrupt checkpoint",
    "truncated weights": "model.safetensors: corrupt checkpoint",
    "pickle weights": "holds pickle weights (pytorch_model.bin), refused: only safetensors",
    "config a list": "config.json: expected an object, got list",
    "config deep": "config.json: JSON nested deeper than 100 levels",
    "bad model_type": "cannot load model",
    "num_attention_heads=0": "config.json: num_attention_heads must be between 1 and 4096, got 0",
    "hidden_size=-1": "config.json: hidden_size must be between 1 and 262144, got -1",
    'hidden_size="abc"': 'config.json: hidden_size must be an integer, got "abc"',
    "vocab_size=0": "config.json: vocab_size must be between 1 and 4194304, got 0",
    "num_key_value_heads=3": "num_attention_heads 2 is not a multiple of num_key_value_heads 3",
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_every_broken_folder_is_one_model_error(good_model, tmp_path, how):
    folder = Path(shutil.copytree(good_model, tmp_path / "m"))
    _break(folder, how)
    with pytest.raises(ModelError) as e:
        load_model(folder)
    assert str(e.value).startswith(str(folder)) and BROKEN[how] in str(e.value) and "\n" not in str(e.value)


def test_every_path_loads_through_the_one_loader(good_model, tmp_path, flip_task, one_line_error):
    """solve, grid evaluate, text evaluate and pretraining's init_from: the same one-line error."""
    from typer.testing import CliRunner

    from testtime.cli import app
    from testtime.data.tasks import save_task

    folder = Path(shutil.copytree(good_model, tmp_path / "m"))
    _break(folder, "truncated weights")
    task = save_task(flip_task(), tmp_path / "t.json")
    text = tmp_path / "t.jsonl"
    text.write_text('{"id": "a", "demos": [["1", "2"]], "queries": [["3", "4"]]}\n')
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"init_from": str(folder), "datasets": [str(task)], "max_len": 512,
                                "token_budget": 2048, "device": "cpu", "compile": False}))
    runner = CliRunner()
    for args in (["solve", str(task), "--model", str(folder), "--device", "cpu"],
                 ["evaluate", "--tasks", str(task), "--model", str(folder), "--device", "cpu",
                  "--out", str(tmp_path / "g")],
                 ["evaluate", "--tasks", str(text), "--model", str(folder), "--device", "cpu",
                  "--out", str(tmp_path / "x")],
                 ["pretrain", "--config", str(init), "--run-dir", str(tmp_path / "p")]):
        one_line_error(runner.invoke(app, args), f"{folder / 'model.safetensors'}: corrupt checkpoint")


def test_load_model_checks_the_device(good_model):
    with pytest.raises(ValueError, match="device 'tpu': unknown"):
        load_model(good_model, device="tpu")
