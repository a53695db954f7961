#!/usr/bin/env bash
# A quick GPU check of the evaluation path on MODEL (default: a randomly initialized base-size model):
# catches GPU-only bugs and gives a first per-task timing before real runs.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null || exit 1
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
MODEL=${MODEL:-/tmp/rand}
[ "$MODEL" = /tmp/rand ] && { python3 -c "
from testtime.model import ModelConfig, build_model, save_model
from testtime.encode import build_grid_tokenizer
save_model(build_model(ModelConfig()), build_grid_tokenizer(), '/tmp/rand')
" || exit 1; }
for mode in no-ttt ttt; do
  start=$SECONDS
  python3 -m testtime.cli evaluate --model $MODEL --limit ${LIMIT:-48} --max-minutes ${SMOKE_MINUTES:-3} --$mode \
    --out /tmp/smoke-$mode 2>&1 | grep -v "it/s\]$" | tail -12
  echo "$mode: $((SECONDS - start)) s wall"
done
