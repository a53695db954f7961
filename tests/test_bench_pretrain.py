"""benchmarks/bench_pretrain.py's profile (issue 30, item 1: where a pretraining step's time goes): the kernels'
kinds, the breakdown's arithmetic, and one tiny profiled run on the CPU. The seconds themselves are the benchmark's
to measure, on the GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_pretrain", ROOT / "benchmarks" / "bench_pretrain.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


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
    assert bench.kind_of(name) == kind


def test_breakdown_sums_per_step_and_busy():
    events = [("gemm_a", 0.06), ("gemm_a", 0.02), ("triton_poi_fused_x", 0.04), ("triton_tem_fused_0", 0.06),
              ("ncclKernel", 0.02)]
    b = bench.breakdown(events, steps=2, wall_s=0.25, top=2)
    assert b["wall_ms"] == 125.0
    assert b["busy"] == pytest.approx(0.8)
    assert b["by_kind"]["matmul"] == {"ms": 40.0, "share": 0.4}
    assert b["by_kind"]["attention"]["ms"] == 30.0
    assert sum(v["share"] for v in b["by_kind"].values()) == pytest.approx(1.0)
    assert list(b["by_kind"])[0] == "matmul"  # costliest first
    assert [t["name"] for t in b["top"]] == ["gemm_a", "triton_tem_fused_0"]  # one row per name, summed
    assert bench.breakdown([], steps=1, wall_s=0.0)["busy"] is None


def test_profiled_tiny_run_on_cpu(tmp_path):
    out = tmp_path / "bench.md"
    js = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pretrain.py"), "--config", str(ROOT / "configs" / "pretrain-tiny.json"),
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
