"""Where a pretraining step's time goes (`testtime.recipes.step_profile`, issue 30, item 1): the kernels' kinds, the
breakdown's arithmetic, the hook inside a tiny pretraining run, `pretrain --profile-steps` and
`benchmarks/bench_pretrain.py --profile`, all on the CPU. The seconds themselves are measured on the GPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import _tiny_pretrain_config
from testtime.model.loading import ModelConfig
from testtime.recipes import step_profile
from testtime.recipes.pretrain import PretrainConfig, pretrain
from testtime.recipes.step_profile import StepProfile, breakdown, kind_of

ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw) -> PretrainConfig:
    grid = dataclasses.replace(ModelConfig.tiny(), grid_positions=True, rope_theta=100.0)
    return _tiny_pretrain_config(**{"model": grid, "max_len": 512, "token_budget": 2048, **kw})


@pytest.mark.parametrize(("name", "kind"), [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "matmul"),
    ("triton_tem_fused_flex_attention_0", "attention"),
    ("triton_tem_fused_0", "attention"),
    ("flash_fwd_kernel", "attention"),
    ("triton_poi_fused_add_mul_rsqrt_3", "elementwise"),
    ("triton_red_fused__to_copy_mean_pow_1", "elementwise"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
    ("Memcpy HtoD (Pageable -> Device)", "copy"),
    ("aten::addmm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::mul", "elementwise"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
    ("some_unknown_kernel", "other"),
])
def test_kernel_kinds(name, kind):
    assert kind_of(name) == kind


def test_breakdown_sums_per_step_and_busy():
    events = [("gemm_a", 0.06), ("gemm_a", 0.02), ("triton_poi_fused_x", 0.04), ("triton_tem_fused_0", 0.06),
              ("ncclKernel", 0.02)]
    b = breakdown(events, steps=2, wall_s=0.25, top=2)
    assert b["wall_ms"] == 125.0
    assert b["busy"] == pytest.approx(0.8)
    assert b["by_kind"]["matmul"] == {"ms": 40.0, "share": 0.4}
    assert b["by_kind"]["attention"]["ms"] == 30.0
    assert sum(v["share"] for v in b["by_kind"].values()) == pytest.approx(1.0)
    assert list(b["by_kind"])[0] == "matmul"  # costliest first
    assert [t["name"] for t in b["top"]] == ["gemm_a", "triton_tem_fused_0"]  # one row per name, summed
    assert breakdown([], steps=1, wall_s=0.0)["busy"] is None


def test_hook_profiles_the_steps_after_a_calls_first_ones(tmp_path):
    with StepProfile(5, tmp_path / "short.json", cuda=False, after=1, report=lambda _: None) as short:
        pretrain(tiny(), tmp_path / "run", progress=False, stop_at=3, on_step=short)
        assert short.prof is not None  # the call ended inside the window, the profiler still on
    assert short.prof is None and short.result is None  # closed on leaving the block, nothing written
    assert not (tmp_path / "short.json").exists()

    said = []
    hook = StepProfile(2, tmp_path / "p" / "profile.json", cuda=False, after=1, report=said.append)
    pretrain(tiny(), tmp_path / "run", progress=False, on_step=hook)  # resumed: steps 4-6 in this call
    prof = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert prof["first_step"] == 5 and prof["steps"] == 2  # counted from where this call began
    assert {"matmul", "attention"} <= set(prof["by_kind"])  # a transformer step does both, on the CPU as anywhere
    assert sum(v["share"] for v in prof["by_kind"].values()) == pytest.approx(1.0, abs=1e-3)
    assert hook.result["top"] and len(said) == 1 and said[0].startswith("profile of steps 5-6:")


def test_a_failing_profiler_never_stops_training(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("CUPTI not found")

    monkeypatch.setattr(torch.profiler, "profile", broken)
    said = []
    hook = StepProfile(2, tmp_path / "profile.json", cuda=False, after=1, report=said.append)
    res = pretrain(tiny(total_steps=3), tmp_path / "run", progress=False, on_step=hook)
    assert res.finished and res.step == 3
    assert said == ["profile: gave up at step 1 (RuntimeError: CUPTI not found); training goes on"]
    assert not (tmp_path / "profile.json").exists()


def test_a_profile_without_kernels_is_reported_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(step_profile, "profiled_events", lambda prof, cuda: [])
    said = []
    hook = StepProfile(1, tmp_path / "profile.json", cuda=False, after=1, report=said.append)
    assert pretrain(tiny(total_steps=3), tmp_path / "run", progress=False, on_step=hook).finished
    assert said == ["profile: gave up at step 2 (RuntimeError: no kernels recorded (on a GPU: is CUPTI installed?)); "
                    "training goes on"]
    assert hook.result is None and hook.prof is None and not (tmp_path / "profile.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_the_device_is_the_callers_word_not_the_batchs(tmp_path):
    # The hook sees the prefetcher's CPU batches even on a GPU run: told cuda, it syncs the GPU (which fails here,
    # and is reported), where reading the batch would have profiled CPU time only and called it kernel time.
    said = []
    hook = StepProfile(1, tmp_path / "profile.json", cuda=True, after=1, report=said.append)
    assert pretrain(tiny(total_steps=2), tmp_path / "run", progress=False, on_step=hook).finished
    assert len(said) == 1 and said[0].startswith("profile: gave up at step 1")


def test_user_annotations_and_syncs_are_not_counted_as_kernels():
    from torch.autograd import DeviceType

    class Evt:
        def __init__(self, key, us, annotation=False):
            self.key, self.self_device_time_total, self.is_user_annotation = key, us, annotation
            self.device_type = DeviceType.CUDA

    class Prof:
        def key_averages(self):
            return [Evt("sm90_xmma_gemm", 300.0), Evt("Optimizer.step#AdamW.step", 500.0, annotation=True),
                    Evt("## Call CompiledFxGraph ##", 900.0, annotation=True), Evt("Context Sync", 50.0),
                    Evt("multi_tensor_apply_kernel", 100.0)]

    kept = step_profile.profiled_events(Prof(), cuda=True)
    assert kept == [("sm90_xmma_gemm", 3e-4), ("multi_tensor_apply_kernel", 1e-4)]


@pytest.mark.parametrize(("warmup", "log_every", "after"), [(100, 25, 151), (10, 3, 100), (200, 7, 214)])
def test_profile_starts_after_the_fit_and_off_a_log_step(warmup, log_every, after):
    # fitted at the first log step past warmup (at most warmup + log_every); the start step's bookkeeping lands
    # in the window, so it is not a log step
    assert step_profile.after_for(warmup, log_every) == after
    assert after >= warmup + log_every and after % log_every


def test_for_run_takes_the_configs_device_and_nothing_for_zero_steps(tmp_path):
    with step_profile.for_run(tiny(), 0, tmp_path) as none:
        assert none is None
    with step_profile.for_run(tiny(warmup_steps=2, log_every=1), 3, tmp_path) as hook:
        assert hook.cuda is False and hook.steps == 3 and hook.out == tmp_path / "profile.json"


@pytest.mark.parametrize(("steps", "after"), [(0, 5), (2, 0)])
def test_hook_refuses_empty_windows(steps, after):
    with pytest.raises(ValueError, match="profile"):
        StepProfile(steps, "x.json", cuda=False, after=after)


def test_pretrain_cli_profile_steps(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from testtime import cli

    monkeypatch.setattr(step_profile, "AFTER", 2)
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(tiny(total_steps=7).to_dict()))  # warmup 2, log_every 1: steps 6-7 profiled
    res = CliRunner().invoke(cli.app, ["pretrain", "--config", str(path), "--run-dir", str(tmp_path / "run"),
                                       "--profile-steps", "2"])
    assert res.exit_code == 0, res.output
    assert "profile of steps 6-7:" in res.output
    assert json.loads((tmp_path / "run" / "profile.json").read_text())["steps"] == 2
    bad = CliRunner().invoke(cli.app, ["pretrain", "--config", str(path), "--profile-steps", "-1"])
    assert bad.exit_code == 2


def test_markdown_names_every_kind():
    prof = breakdown([("gemm", 0.3), ("triton_poi_fused_x", 0.1)], steps=1, wall_s=0.5)
    text = "\n".join(step_profile.lines(prof, "packed", cuda=True))
    assert "packed: where a step goes" in text and "kernel time 80% of the wall clock" in text
    assert "| matmul | 300.0 | 75.0% |" in text and "| elementwise | 100.0 | 25.0% |" in text


def test_profiled_tiny_run_on_cpu(tmp_path):
    out = tmp_path / "bench.md"
    js = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pretrain.py"),
         "--config", str(ROOT / "configs" / "pretrain-tiny.json"),
         "--device", "cpu", "--variants", "packed", "--warmup", "1", "--steps", "1", "--profile", "1",
         "--out", str(out), "--json", str(js)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(js.read_text())
    prof = row["profile"]
    assert prof["steps"] == 1 and prof["wall_ms"] > 0
    assert {"matmul", "attention"} <= set(prof["by_kind"])  # a transformer step does both, on the CPU as anywhere
    assert sum(v["share"] for v in prof["by_kind"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "packed: where a step goes" in out.read_text()


def test_the_host_syncs_once_a_line_of_several_steps(tmp_path):
    """Training syncs the host with the device once a log line (25 steps): the benchmark logs every
    gcd(warmup, steps) steps, and its config must accept that."""
    out = tmp_path / "bench.md"
    js = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pretrain.py"),
         "--config", str(ROOT / "configs" / "pretrain-tiny.json"),
         "--device", "cpu", "--variants", "packed", "--warmup", "2", "--steps", "4", "--out", str(out), "--json", str(js)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(js.read_text())
    assert row["loss"] > 0 and row["step_s"] > 0
    assert "the host synced every 2 steps" in out.read_text()
