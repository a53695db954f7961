"""`--dtype`: a model loaded in bfloat16 on the CPU trains its adapters and solves as in float32 (the GPU's runs are
bf16 weights with float32 adapters; a CPU with native bf16 runs the main job faster so, results/cpu-2026-12-07-bf16.md),
and a dtype that is not one is a one-line error before any model loads."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import testtime
from testtime.cli import app
from testtime.model.loading import DTYPES, load_model


def test_bfloat16_on_the_cpu_trains_the_adapters_as_float32_does(small_cfg):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        solver = testtime.load(device="cpu", dtype=dtype)
        assert {p.dtype for p in solver.model.parameters()} == {getattr(torch, dtype)}
        got = solver.solve("arc1/eval/66e6c45b", recipe=small_cfg(), samples=8, epochs=2, max_seconds=None,
                           show_progress=False)
        assert got.record["error"] is None and got.correct == [True]
        losses[dtype] = got.record["ttt_loss"]
    # the adapters learn in bf16 (their float32 weights take the bf16 activations' gradients), step for step as in
    # float32 up to bf16's rounding
    assert losses["bfloat16"][-1] < losses["bfloat16"][0] / 10
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.3, abs=2e-3)


@pytest.mark.parametrize("command", [["solve", "arc1/eval/66e6c45b", "--no-ttt"], ["serve", "--port", "0"]])
def test_a_dtype_that_is_not_one_is_a_one_line_error(command, one_line_error):
    one_line_error(CliRunner().invoke(app, [*command, "--device", "cpu", "--dtype", "int4"]),
                   "dtype 'int4': one of " + ", ".join(DTYPES))
    with pytest.raises(testtime.ConfigError, match="dtype 'float8'"):
        load_model(device="cpu", dtype="float8")


def test_several_models_load_in_the_dtype_named(tmp_path):
    import shutil

    from testtime.model.loading import DEFAULT_MODEL_DIR

    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "copy")
    both = testtime.load_checkpoints([DEFAULT_MODEL_DIR, tmp_path / "copy"], device="cpu", dtype=torch.bfloat16)
    assert [{p.dtype for p in s.model.parameters()} for s in both.solvers] == [{torch.bfloat16}] * 2
    with pytest.raises(testtime.ConfigError, match="dtype 'int8'"):
        testtime.load(device="cpu", dtype=torch.int8)
