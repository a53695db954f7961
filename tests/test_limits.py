"""Every config value and flag is checked for range and finiteness where it is read, by one mechanism: a field
declares its limits next to itself (`Annotated[int, Range(1, 1024)]`), and JSON, flags and Python all check them."""

import dataclasses
import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Annotated

import pytest
from typer.testing import CliRunner

import testtime
from testtime.cli import app
from testtime.core.config import ConfigError, OneOf, Range, check, check_value, limits_of, typed, with_overrides
from testtime.core.distributed import pick_device
from testtime.data.tasks import save_tasks
from testtime.model.loading import ModelConfig
from testtime.recipes.grid import EvalConfig, config_from_dict, evaluate
from testtime.recipes.pretrain import PretrainConfig
from testtime.text.run import text_config_from_dict

runner = CliRunner()


@dataclass
class Inner:
    k: Annotated[int | None, Range(1, 8)] = None


@dataclass
class Example:
    n: Annotated[int, Range(1, 10)] = 1
    x: Annotated[float, Range(0, 1, lo_open=True)] = 0.5
    pair: Annotated[tuple[float, float], Range(0, 1, hi_open=True)] = (0.1, 0.2)
    mode: Annotated[str, OneOf("a", "b")] = "a"
    free: float = 1.0  # no declared range: still finite
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("obj, message", [
    ({"n": 0}, "cfg: n must be between 1 and 10, got 0"),
    ({"n": 10**30}, "cfg: n must be between 1 and 10, got 1e+30"),
    ({"x": 0}, "cfg: x must be > 0 and <= 1, got 0"),
    ({"x": float("nan")}, "cfg: x must be > 0 and <= 1, got nan"),
    ({"pair": [0.5, 1.0]}, "cfg: pair must be >= 0 and < 1, got 1"),
    ({"mode": "c"}, 'cfg: mode must be one of a, b, got "c"'),
    ({"free": float("inf")}, "cfg: free must be a finite number, got inf"),
    ({"inner": {"k": 9}}, "cfg: inner: k must be between 1 and 8, got 9"),
])
def test_a_declared_limit_is_checked_from_json(obj, message):
    with pytest.raises(ConfigError) as e:
        typed(Example, obj, "cfg")
    assert str(e.value) == message


def test_a_declared_limit_is_checked_on_override_and_in_python():
    cfg = typed(Example, {"inner": {"k": None}}, "cfg")  # None: not set
    assert with_overrides(cfg, {"inner.k": 8}).inner.k == 8
    with pytest.raises(ConfigError, match="^--k must be between 1 and 8, got 0$"):
        with_overrides(cfg, {"inner.k": 0}, names={"inner.k": "--k"})
    with pytest.raises(ConfigError, match="^inner.k must be between 1 and 8, got 0$"):
        with_overrides(cfg, {"inner.k": 0})
    with pytest.raises(ConfigError, match="^config: inner: k must be between 1 and 8, got 0$"):
        check(Example(inner=Inner(k=0)))
    assert check_value("--m", None, Range(0, 1)) is None


def _config_classes():
    """Every config dataclass of the package, found by name (a new one is covered without editing this test);
    transformers' model configs are not ours."""
    from transformers import PretrainedConfig

    found = {}
    for info in pkgutil.walk_packages(testtime.__path__, "testtime."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (name.endswith("Config") and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
                    and not issubclass(obj, PretrainedConfig)):
                found[name] = obj
    return found


def test_every_number_of_every_config_declares_its_range():
    classes = _config_classes()
    assert {"TTTConfig", "PredictConfig", "EvalConfig", "PretrainConfig", "ModelConfig", "TextEvalConfig",
            "TextPredictConfig"} <= set(classes)
    missing = []
    for name, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = typing.get_args(hints[f.name]) or (hints[f.name],)
            inner = [a for arg in args for a in (typing.get_args(arg) or (arg,))]
            numeric = any(a in (int, float) for a in inner)
            if numeric and not any(isinstance(lim, Range) for lim in limits_of(cls)[f.name]):
                missing.append(f"{name}.{f.name}")
    assert not missing, f"numbers without a declared Range: {missing}"


GRID = [  # (config, message): the examples and one of each kind
    ({"ttt_cfg": {"rank": 10**30}}, "ttt_cfg: rank must be between 1 and 1024, got 1e+30"),
    ({"attempts": 10**30}, "attempts must be between 1 and 16, got 1e+30"),
    ({"ttt_cfg": {"epochs": 10**30}}, "ttt_cfg: epochs must be between 1 and 100, got 1e+30"),
    ({"ttt_cfg": {"samples": 10**12}}, "ttt_cfg: samples must be between 1 and 4096, got 1000000000000"),
    ({"ttt_cfg": {"lr": float("inf")}}, "ttt_cfg: lr must be > 0 and <= 1, got inf"),
    ({"ttt_cfg": {"lr": float("nan")}}, "ttt_cfg: lr must be > 0 and <= 1, got nan"),
    ({"ttt_cfg": {"weight_decay": -0.1}}, "ttt_cfg: weight_decay must be between 0 and 1, got -0.1"),
    ({"ttt_cfg": {"grad_clip": -1}}, "ttt_cfg: grad_clip must be between 0 and 10000, got -1"),
    ({"ttt_cfg": {"max_len": -5}}, "ttt_cfg: max_len must be between 16 and 1048576, got -5"),
    ({"ttt_cfg": {"token_budget": -1}}, "ttt_cfg: token_budget must be between 1 and 1073741824, got -1"),
    ({"max_group": -2}, "max_group must be between 1 and 4096, got -2"),
    ({"limit": 0}, "limit must be between 1 and 1000000, got 0"),
    ({"predict_cfg": {"views": 9}}, "predict_cfg: views must be between 1 and 8, got 9"),
    ({"predict_cfg": {"token_budget": 10}}, "predict_cfg: token_budget must be between 1024 and 1073741824, got 10"),
]


@pytest.mark.parametrize("obj, message", GRID)
def test_grid_config_values_are_checked(obj, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(obj, "c.json")
    assert str(e.value) == f"c.json: {message}"


@pytest.mark.parametrize("obj, message", [
    ({"ttt_cfg": {"rank": 0}}, "ttt_cfg: rank must be between 1 and 1024, got 0"),
    ({"predict_cfg": {"method": "vote"}}, 'predict_cfg: method must be one of auto, greedy, rank, got "vote"'),
    ({"predict_cfg": {"max_new_tokens": 0}}, "predict_cfg: max_new_tokens must be between 1 and 4096, got 0"),
    ({"max_group": 0}, "max_group must be between 1 and 4096, got 0"),
])
def test_text_config_values_are_checked(obj, message):
    with pytest.raises(ConfigError) as e:
        text_config_from_dict(obj, "t.json")
    assert str(e.value) == f"t.json: {message}"


@pytest.mark.parametrize("obj, message", [
    ({"model": {"hidden_size": -8}}, "model: hidden_size must be between 1 and 65536, got -8"),
    ({"model": {"num_heads": 0}}, "model: num_heads must be between 1 and 1024, got 0"),
    ({"model": {"hidden_size": 30, "num_heads": 4}}, "model: hidden_size 30 is not a multiple of num_heads 4"),
    ({"pool_size": 10**12}, "pool_size must be between 1 and 65536, got 1000000000000"),
    ({"lr": float("inf")}, "lr must be > 0 and <= 1, got inf"),
    ({"warmup_steps": -1}, "warmup_steps must be between 0 and 1000000000, got -1"),
    ({"weight_decay": -1}, "weight_decay must be between 0 and 1, got -1"),
    ({"grad_clip": -1}, "grad_clip must be > 0 and <= 10000, got -1"),
    ({"min_lr_ratio": -0.5}, "min_lr_ratio must be between 0 and 1, got -0.5"),
    ({"checkpoint_minutes": -3}, "checkpoint_minutes must be > 0 and <= 43200, got -3"),
    ({"max_minutes": float("nan")}, "max_minutes must be > 0 and <= 43200, got nan"),
    ({"token_budget": -1}, "token_budget must be between 1 and 1073741824, got -1"),
    ({"max_len": -1}, "max_len must be between 16 and 1048576, got -1"),
    ({"betas": [0.9, 1.5]}, "betas must be >= 0 and < 1, got 1.5"),
    ({"dataset_weights": [float("nan")]}, "dataset_weights must be between 0 and 1000000, got nan"),
])
def test_pretrain_config_values_are_checked(obj, message):
    with pytest.raises(ConfigError) as e:
        PretrainConfig.from_dict(obj, "p.json")
    assert str(e.value).endswith(message)


def test_configs_built_in_python_are_checked():
    with pytest.raises(ConfigError, match="config: lr must be > 0 and <= 1, got inf"):
        PretrainConfig(lr=float("inf"))
    with pytest.raises(ConfigError, match="model: hidden_size must be between 1 and 65536, got -8"):
        ModelConfig(hidden_size=-8)
    cfg = EvalConfig(tasks="unused")
    cfg.ttt_cfg.rank = 10**6
    with pytest.raises(ConfigError, match="config: ttt_cfg: rank must be between 1 and 1024"):
        evaluate(cfg, "never-written")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, synthetic_tasks):
    folder = tmp_path_factory.mktemp("tasks")
    save_tasks(synthetic_tasks(1), folder)
    return folder


@pytest.mark.parametrize("args, message", [
    (["--rank", "1000000"], "error: --rank must be between 1 and 1024, got 1000000"),
    (["--lr", "inf"], "error: --lr must be > 0 and <= 1, got inf"),
    (["--lr", "nan"], "error: --lr must be > 0 and <= 1, got nan"),
    (["--max-minutes", "nan"], "error: --max-minutes must be > 0 and <= 43200, got nan"),
    (["--samples", "1000000000000"], "error: --samples must be between 1 and 4096, got 1000000000000"),
    (["--epochs", "0"], "error: --epochs must be between 1 and 100, got 0"),
    (["--max-group", "-1"], "error: --max-group must be between 1 and 4096, got -1"),
    (["--token-budget", "5"], "error: --token-budget must be between 1024 and 1073741824, got 5"),
])
def test_evaluate_flags_are_checked(task_dir, tmp_path, args, message, one_line_error):
    res = runner.invoke(app, ["evaluate", "--tasks", str(task_dir), "--out", str(tmp_path / "r"), *args])
    assert one_line_error(res) == message
    assert not (tmp_path / "r").exists()


def test_text_and_solve_and_pretrain_flags_are_checked(tmp_path, one_line_error):
    text = tmp_path / "t.jsonl"
    text.write_text('{"id": "a", "demos": [["1", "2"]], "queries": [["3", "4"]]}\n')
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", str(text), "--rank", "0"]), "--rank must be between 1")
    one_line_error(runner.invoke(app, ["solve", "arc1/eval/00576224", "--epochs", "1000"]), "--epochs must be between 1")
    one_line_error(runner.invoke(app, ["pretrain", "--config", "configs/pretrain-base.json", "--steps", "0"]),
                   "--steps must be between 1 and 1000000000, got 0")
    one_line_error(runner.invoke(app, ["pretrain", "--config", "configs/pretrain-base.json", "--max-minutes", "nan"]),
                   "--max-minutes must be > 0 and <= 43200, got nan")
    one_line_error(runner.invoke(app, ["compare", str(tmp_path), str(tmp_path), "--show", "-1"]), "--show must be")


# ---------------------------------------------------------------- devices: one check, in distributed.pick_device


def test_device_names_are_checked_in_one_place(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == pick_device("auto") == pick_device("cpu") == "cpu"
    for bad in ("tpu", "", "cuda:x", "CPU", " cpu"):
        with pytest.raises(ConfigError, match="unknown"):
            pick_device(bad)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == "cuda:1" and pick_device("auto") == "cuda"
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        pick_device("cuda:2")


@pytest.mark.parametrize("device, message", [("cuda", "no CUDA GPU is available"), ("tpu", "unknown"),
                                             ("", "unknown")])
def test_every_command_refuses_a_bad_device(task_dir, tmp_path, device, message, monkeypatch, one_line_error):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = tmp_path / "t.jsonl"
    text.write_text('{"id": "a", "demos": [["1", "2"]], "queries": [["3", "4"]]}\n')
    for args in (["solve", str(next(task_dir.iterdir())), "--device", device],
                 ["evaluate", "--tasks", str(task_dir), "--device", device, "--out", str(tmp_path / "g")],
                 ["evaluate", "--tasks", str(text), "--device", device, "--out", str(tmp_path / "t")],
                 ["pretrain", "--config", "configs/pretrain-base.json", "--device", device,
                  "--run-dir", str(tmp_path / "p")]):
        one_line_error(runner.invoke(app, args), f"device {device!r}: {message}")
    assert not any((tmp_path / d).exists() for d in "gtp")  # refused before any run folder is made
