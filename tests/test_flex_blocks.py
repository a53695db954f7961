"""benchmarks/bench_flex_blocks.py's count of the work a document block mask wastes (its GPU timings need a GPU and
are not tested here): hand-counted rows, then the script end to end on the CPU over a packed stream."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_flex_blocks as fb  # noqa: E402


def test_pairs_by_hand():
    # blocks of 4: {0, 1} and {1, padding}; (1, 0) shares document 1, so all three lower pairs are computed
    row = np.array([0, 0, 0, 1, 1, 1, -1, -1])
    assert fb.block_pairs(row, 4) == 3
    assert fb.needed_pairs(row) == 6 + 6  # two documents of 3 tokens; the padding needs nothing
    assert fb.waste(row[None], 4) == 3 * 16 / 12
    one = np.zeros(8, dtype=int)  # one document over two blocks: the diagonal blocks compute their upper halves too
    assert fb.block_pairs(one, 4) == 3 and fb.needed_pairs(one) == 36
    assert fb.waste(one[None], 2) < fb.waste(one[None], 4) < fb.waste(one[None], 8)  # smaller blocks waste less


def test_documents_in_separate_blocks_share_no_pair():
    row = np.array([0] * 4 + [1] * 4)
    assert fb.block_pairs(row, 4) == 2  # (1, 0) holds no common document: skipped
    assert fb.waste(row[None], 4) == 2 * 16 / 20


def test_the_waste_table_on_the_cpu_over_a_packed_stream(tmp_path):
    cfg = json.loads((ROOT / "configs/pretrain-tiny.json").read_text())
    cfg.update(packing=True, datasets=["arc1/train"], holdout=0)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = tmp_path / "flex.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_flex_blocks.py"), "--config",
                           str(tmp_path / "c.json"), "--device", "cpu", "--batches", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = dict(re.findall(r"^\| (\d+) x \d+ \| ([0-9.]+) \|", out.read_text(), re.M))
    assert set(rows) == {"128", "64"} and 1 <= float(rows["64"]) <= float(rows["128"])
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_flex_blocks.py"), "--config",
                          str(ROOT / "configs/pretrain-tiny.json"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert bad.returncode == 1 and "not a packed config" in bad.stderr and "Traceback" not in bad.stderr
