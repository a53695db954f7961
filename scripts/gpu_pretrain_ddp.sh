#!/usr/bin/env bash
# One GPU call that pretrains on every GPU of the machine (DDP through torchrun) for the time the call has left,
# after an optional smoke run of the evaluation path, and sends back the exported model in parts.
#
#   CALL_SECONDS=570 SMOKE="--limit 64 --joint-samples 128" bash scripts/gpu_pretrain_ddp.sh
#
# - RE-ARC: joined by scripts/gpu_rearc_join.sh from the parts the calls of scripts/carry_parts.sh stashed,
#   checked against the sha256 in ../shared/data/re-arc/README.md, put where the configs read it.
# - SMOKE (evaluate flags): run first on all GPUs with the shipped model (catches GPU-only bugs, times the stages).
# - Pretraining: CONFIG (configs/pretrain-grid-continue.json) into RUN_DIR (runs/pretrain), its schedule fitted
#   (--fit-minutes) into what is left of CALL_SECONDS; if torchrun fails at once, one GPU takes the time left.
# - $OUT gets model.tar.partNN (< 16 MiB each; `cat model.tar.part* | tar -x`), the run's log.jsonl, loss.png,
#   pretrain.log, and smoke.tar.gz with the smoke run's records and summary.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
CALL_SECONDS=${CALL_SECONDS:-570}
CONFIG=${CONFIG:-configs/pretrain-grid-continue.json}
RUN_DIR=${RUN_DIR:-runs/pretrain}
OUT=${OUT:-/tmp/out}
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
mkdir -p "$OUT" "$RUN_DIR"
source scripts/gpu_wheels.sh || exit 1
export TQDM_MININTERVAL=20
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

bash scripts/gpu_rearc_join.sh || exit 1  # joined and checked as the campaign's first step does
echo "$NGPU GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs)"

if [ -n "${SMOKE:-}" ]; then
    s0=$SECONDS
    # shellcheck disable=SC2086
    timeout 240 torchrun --standalone --nproc-per-node "$NGPU" -m testtime evaluate --tasks arc1/eval --out runs/smoke \
        $SMOKE 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|s/it\]$\|task/s\]$\|s/task\]$" | tail -30
    echo "smoke: $((SECONDS - s0)) s wall"
    tar -czf "$OUT/smoke.tar.gz" runs/smoke/*.json runs/smoke/*.jsonl runs/smoke/joint/*.json runs/smoke/joint/log.jsonl \
        2>/dev/null
fi

left=$((CALL_SECONDS - (SECONDS - START) - 75))  # the export's packing and the return keep 75 s
fit=$(python3 -c "print(round(max(1.0, $left / 60 - 0.4), 2))")  # start-up (imports, data) before the clock
echo "pretraining on $NGPU GPU(s), schedule fitted into $fit minutes"
p0=$SECONDS
torchrun --standalone --nproc-per-node "$NGPU" -m testtime pretrain --config "$CONFIG" --run-dir "$RUN_DIR" \
    --fit-minutes "$fit" --export 2>&1 | tr '\r' '\n' | tee "$RUN_DIR/pretrain.log" | grep -v "it/s\]$\|s/it\]$" | tail -25
if [ ! -f "$RUN_DIR/model/config.json" ] && [ $((SECONDS - p0)) -lt 150 ]; then
    left=$((CALL_SECONDS - (SECONDS - START) - 75))
    fit=$(python3 -c "print(round(max(1.0, $left / 60 - 0.4), 2))")
    echo "torchrun failed early: one GPU, $fit minutes"
    rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR"
    python3 -m testtime pretrain --config "$CONFIG" --run-dir "$RUN_DIR" --fit-minutes "$fit" --export 2>&1 \
        | tr '\r' '\n' | tee "$RUN_DIR/pretrain.log" | grep -v "it/s\]$\|s/it\]$" | tail -25
fi
echo "pretraining: $((SECONDS - p0)) s wall"
if [ -f "$RUN_DIR/model/config.json" ]; then
    tar -cf - -C "$RUN_DIR" model | split -b 15M -d - "$OUT/model.tar.part"
fi
cp "$RUN_DIR/log.jsonl" "$RUN_DIR/loss.png" "$RUN_DIR/pretrain.log" "$OUT/" 2>/dev/null
tail -3 "$RUN_DIR/log.jsonl" 2>/dev/null
ls -la "$OUT"
echo "call: $((SECONDS - START)) s"
