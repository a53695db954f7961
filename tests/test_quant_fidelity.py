"""benchmarks/quant_fidelity.py: the int8 round trip of a model's 2-D weights (a scale per row), on a tiny model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as a benchmark runs: beside its sibling provenance
spec = importlib.util.spec_from_file_location("quant_fidelity", ROOT / "benchmarks" / "quant_fidelity.py")
qf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qf)


def test_int8_roundtrip_moves_each_weight_under_half_a_step_and_leaves_the_model_alone(tiny_grid_model):
    model = tiny_grid_model(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    quant, stored = qf.int8_roundtrip(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])  # the original is untouched
    n_rows = n_int8 = n_rest = 0
    for (n, p), q in zip(model.named_parameters(), quant.parameters(), strict=True):
        if p.ndim != 2:
            assert torch.equal(p, q), n  # norms and biases as they are
            n_rest += p.numel()
            continue
        step = p.abs().amax(dim=1, keepdim=True) / 127
        assert torch.all((p - q).abs() <= step / 2 + 1e-6 * step), n
        assert torch.unique(torch.round(q / step.clamp(min=1e-12)), dim=None).numel() <= 255
        assert not torch.equal(p, q), n  # random weights are not already on the grid
        n_rows += p.shape[0]
        n_int8 += p.numel()
    assert stored == n_int8 + 4 * n_rows + 2 * n_rest


def test_the_benchmark_scores_both_and_saves_the_int8_folder_evaluate_reads(tmp_path, flip_task):
    from testtime.data.tasks import save_tasks
    from testtime.model.loading import ModelConfig, build_model, load_model, save_model

    save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    save_tasks([flip_task(seed=s, tid=f"t{s}") for s in range(2)], tmp_path / "tasks")
    md, out = tmp_path / "q.md", tmp_path / "int8"
    assert qf.main(["--model", str(tmp_path / "model"), "--tasks", str(tmp_path / "tasks"), "--limit", "2",
                    "--device", "cpu", "--md", str(md), "--save", str(out)]) == 0
    text = md.read_text()
    assert text.startswith("2 test inputs of the first 2 tasks") and "| int8 a row, read back |" in text
    saved = load_model(out).model  # an int8 folder, read back
    for p, q in zip(qf.int8_roundtrip(load_model(tmp_path / "model").model)[0].parameters(), saved.parameters(),
                    strict=True):
        assert torch.equal(p, q)  # the very weights the benchmark scored
    again = ["--model", str(tmp_path / "model"), "--tasks", str(tmp_path / "tasks"), "--limit", "1", "--device", "cpu",
             "--md", str(md), "--save", str(out)]
    assert qf.main(again) == 0 and load_model(out).model is not None  # its own earlier folder is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("not a model")
    assert qf.main([*again[:-1], str(tmp_path / "mine")]) == 1  # any other folder is left alone
    assert (tmp_path / "mine/notes.txt").read_text() == "not a model"
    assert qf.main(["--model", str(tmp_path / "nowhere"), "--device", "cpu"]) == 1
