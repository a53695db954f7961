"""Base model: config, save/load round trip with shards, one-line errors, default folder."""

from __future__ import annotations

import pytest
import torch

from testtime.encode import GridCodec
from testtime.model import (
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
    assert (REPO_ROOT / "src" / "testtime" / "model.py").is_file()
    monkeypatch.setenv("TESTTIME_MODEL", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelError, match="elsewhere"):
        load_model()
