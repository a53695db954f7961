#!/usr/bin/env bash
# Wait for the background pretraining (scripts/gpu_pretrain_bg.sh) to export its model, then copy the
# log, loss plot and the model (as testtime-grid-base.tar.N parts under 16 MiB) to $OUT, and the model
# of lowest held-out loss (testtime-grid-base-best.tar.N) where the config holds tasks out.
# Restore here with: cat testtime-grid-base.tar.* | tar -xf - -C models/
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/pretrain}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
while pgrep -f "testtime.cli pretrain" >/dev/null; do sleep 5; done
tail -n 2 "$RUN_DIR/log.jsonl"
tail -n 3 "$RUN_DIR/stdout.log"
for f in log.jsonl loss.png config.json; do cp "$RUN_DIR/$f" "$OUT/" 2>/dev/null; done
if [ -d "$RUN_DIR/best" ]; then  # the lowest held-out loss (configs with holdout > 0)
    tar -cf - -C "$RUN_DIR" --transform 's,^best,testtime-grid-base-best,' best \
        | split -b 15M -d -a 1 - "$OUT/testtime-grid-base-best.tar."
    grep -o '"step": [0-9]*, [^}]*"val_loss": [0-9.]*' "$RUN_DIR/log.jsonl" | tail -n 5
fi
if [ -d "$RUN_DIR/model" ]; then
    tar -cf - -C "$RUN_DIR" --transform 's,^model,testtime-grid-base,' model \
        | split -b 15M -d -a 1 - "$OUT/testtime-grid-base.tar."
    echo "model exported"
else
    echo "no model in $RUN_DIR/model" >&2
    exit 1
fi
