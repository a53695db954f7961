"""Write the pretraining config a GPU job continues with: CONFIG with `packing` set by what bench_pretrain.py
measured on that machine (packed rows where they ran at least as fast as padded batches and gave a result).

    python scripts/pick_pretrain_config.py BENCH.json CONFIG OUT.json
"""

import json
import sys
from pathlib import Path

bench, config, out = sys.argv[1:4]
rows = {r["variant"]: r for r in json.loads(Path(bench).read_text())} if Path(bench).is_file() else {}
packed, padded = rows.get("packed"), rows.get("padded") or rows.get("mask")
cfg = json.loads(Path(config).read_text())
cfg["packing"] = bool(packed and (padded is None or packed["tokens_per_s"] >= padded["tokens_per_s"]))
Path(out).write_text(json.dumps(cfg, indent=2) + "\n")
print(f"{out}: packing={cfg['packing']} (bench: " + ", ".join(f"{k} {v['tokens_per_s']:,} tok/s" for k, v in rows.items()) + ")")
