"""benchmarks/sweep_text.py on a tiny model (CPU): one run folder and one table row per setting, one axis moved at a
time from the first values, plus the in-context baseline; a second call resumes every run instead of redoing it."""

import json
import subprocess
import sys
from pathlib import Path

from testtime.model.tiny_lm import byte_bpe_tokenizer, save_tiny, tiny_causal_lm

REPO = Path(__file__).resolve().parents[1]


def test_sweep_writes_a_row_per_setting_and_resumes(tmp_path):
    tok = byte_bpe_tokenizer()
    model = save_tiny(tiny_causal_lm("qwen3", tok), tok, tmp_path / "m")
    cmd = [sys.executable, str(REPO / "benchmarks" / "sweep_text.py"), "--model", str(model), "--tasks",
           str(REPO / "data" / "text" / "sample.jsonl"), "--ids", "synthetic_dyck_languages",
           "synthetic_boolean_expressions", "--max-queries", "2", "--samples", "2", "--lr", "1e-3", "3e-2",
           "--rank", "2", "--epochs", "1", "--loss", "all", "last", "--data", "shuffled", "loo", "--device", "cpu",
           "--out", str(tmp_path / "sweep"), "--table", str(tmp_path / "t.md"), "--best-config", str(tmp_path / "b.json")]
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO / 'benchmarks'}", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    names = ["lr0.001-r2-e1-all-shuffled", "lr0.03-r2-e1-all-shuffled", "lr0.001-r2-e1-last-shuffled",
             "lr0.001-r2-e1-all-loo"]
    folders = {p.name for p in (tmp_path / "sweep").iterdir()}
    assert folders >= {"icl", *names} and len(folders) <= len(names) + 2  # + every axis's best together, if new
    for name in ["icl", *names]:
        assert (tmp_path / "sweep" / name / "results.jsonl").read_text().count("\n") == 2
    table = (tmp_path / "t.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 0.")]
    assert len(rows) >= 4 and "2 tasks x <= 2 queries" in table and "In-context baseline" in table
    assert {(r.split(" | ")[3], r.split(" | ")[4]) for r in rows} >= {("all", "shuffled"), ("last", "shuffled"),
                                                                       ("all", "loo")}
    # The best setting as a config a run takes (--config), the sweep's own values in it.
    best = json.loads((tmp_path / "b.json").read_text())
    assert best["ttt_data"] in ("shuffled", "loo") and best["ttt_cfg"]["rank"] == 2 and best["ttt_cfg"]["samples"] == 2
    assert best["ttt_cfg"]["lr"] in (1e-3, 3e-2) and f"best: lr{best['ttt_cfg']['lr']:g}-r2-e1-" in res.stdout
    # A run done again would time itself again: its records' seconds would change.
    stamps = {name: (tmp_path / "sweep" / name / "results.jsonl").read_text() for name in folders}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {n: (tmp_path / "sweep" / n / "results.jsonl").read_text() for n in folders} == stamps  # resumed
