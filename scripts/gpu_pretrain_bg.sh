#!/usr/bin/env bash
# Start the base-model pretraining in the background (setsid: it outlives this command and runs on
# while the GPU machine is held), with the schedule sized to a wall-clock budget.
#
#   MINUTES=23 bash scripts/gpu_pretrain_bg.sh        # then, in a later command on the same machine:
#   bash scripts/gpu_pretrain_wait.sh                 # waits for the export, copies the model to $OUT
#
# Why a probe: the step rate on a given GPU is unknown until measured, and a cosine schedule must know
# its length. The probe trains for PROBE_MINUTES into the real run dir (inside the warmup, so nothing is
# lost), reads the steady step rate from its log, and the real run resumes with total_steps set so the
# schedule ends MINUTES after the probe started.
# Env: CONFIG, RUN_DIR (runs/pretrain), MINUTES (23), PROBE_MINUTES (1.5).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/pretrain-base.json}
RUN_DIR=${RUN_DIR:-runs/pretrain}
MINUTES=${MINUTES:-23}
PROBE_MINUTES=${PROBE_MINUTES:-3}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
mkdir -p "$RUN_DIR"
t0=$SECONDS
python3 -m testtime.cli pretrain --config "$CONFIG" --run-dir "$RUN_DIR" --steps 1000000 \
    --max-minutes "$PROBE_MINUTES" >"$RUN_DIR/probe.log" 2>&1 || { tail -20 "$RUN_DIR/probe.log"; exit 1; }
probe_s=$((SECONDS - t0))
steps=$(python3 - "$RUN_DIR/log.jsonl" "$MINUTES" "$probe_s" <<'EOF'
import json, sys
import os
recs = [json.loads(l) for l in open(sys.argv[1])] if os.path.exists(sys.argv[1]) else []
if len(recs) < 3:  # too few steps to measure (a cold compile ate the probe): continue probing
    sys.exit("probe too short: no steady step rate yet; run this script again (the compile cache is warm now)")
minutes, probe_s = float(sys.argv[2]), float(sys.argv[3])
a, b = recs[len(recs) // 2], recs[-1]  # skip the compile-heavy first half
rate = (b["step"] - a["step"]) / (b["elapsed"] - a["elapsed"])
# Budget left after the probe, less a minute for restarting (recompile from the warm cache) and export.
left = minutes * 60 - probe_s - 60
print(int(b["step"] + rate * left))
print(f"probe: {b['step']} steps in {probe_s:.0f} s, steady {rate:.2f} steps/s, {b['tokens_per_s']} tok/s, "
      f"mfu {b['mfu']}, loss {b['loss']:.3f} -> total_steps {int(b['step'] + rate * left)}", file=sys.stderr)
EOF
)
echo "$steps" >"$RUN_DIR/total_steps"
setsid nohup python3 -m testtime.cli pretrain --config "$CONFIG" --run-dir "$RUN_DIR" --steps "$steps" \
    --max-minutes "$MINUTES" --export >"$RUN_DIR/stdout.log" 2>&1 </dev/null &
echo "pretraining in the background to step $steps (pid $!); log $RUN_DIR/log.jsonl"
