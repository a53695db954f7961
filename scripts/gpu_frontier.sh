#!/usr/bin/env bash
# Issue 25's two frontiers (ARC-AGI-1 evaluation, and the mixed stream of benchmarks/mixed_stream.py) on one H200,
# through scripts/gpu_eval.sh (runs in the background across calls, resumed where a machine went back).
#
#   SESSION=A TESTTIME_COMMIT=$(git rev-parse --short HEAD) WAIT=560 bash scripts/gpu_frontier.sh   # after carry_parts.sh --wheels
#
# Call the same line again until it prints ALL RUNS DONE (a call runs at most 10 minutes; the runner goes on
# between calls while the machine stays warm; carry `runs` only where a fresh machine must resume). Then SESSION=B,
# C, D: each session's runs fit in 21-23 of its 30 device-minutes (a start takes one or two). LIST=1 prints the runs
# and their estimates without running anything. NPROC=2 (nvidia-h200-x2, when lent) halves the wall minutes:
# gpu_eval.sh runs torchrun, and two sessions' runs fit in one.
#
# Estimates: GPU-minutes on one H200, from the default's 0.85 s a task there (model v4, 400 tasks in 341.6 s: TTT
# 215, prediction 79, selection 47; results/h200-2026-12-04.md), so a TTT step costs 0.0056 s a task and prediction
# with selection 0.315 s whatever the schedule; no TTT 0.30 s (v3's 0.28). The cheap pass (2 views, a teacher-forced
# check) about 0.09 s (2/8 of v4's no-TTT decoding, 0.076 s, and the check at its CPU share of it, 0.016 s). settle on
# the evaluation tasks about 0.73 s (0.09, then 48 steps on all but the few the base model solves, 48 more on about a
# third, fewer views and candidates where they agree); on the stream 0.51 s (63% of the familiar tasks settle in the
# cheap pass, measured on the CPU: results/cpu-policy-replay-2026-12-05.md). A budget run spends about its budget.
# Each run adds about 0.4 minute of start-up (model load, the pace probe, CUDA graphs). The familiar half is 200
# tasks, the stream and the evaluation set 400.
#
# Order: value per minute. Session A answers the issue's two goals at their budgets (50% of the default's 0.85 s on
# the stream, 60% on the evaluation tasks) with the references they are measured against, the cuts alone on the
# stream, and the check's audit; B draws the cheaper half of both frontiers; C the default's compute spent by budget
# and 16 steps; D the costliest point (192 steps) and the named recipes.
#
# Afterwards, on the unpacked runs (here, on a CPU):
#   python benchmarks/policy_curve.py runs/ev-icl runs/ev-e1 runs/ev-e3 runs/ev-e6 runs/ev-e12 runs/ev-settle \
#       runs/ev-b034 runs/ev-b051 runs/ev-b085 --png eval-frontier.png --md eval-frontier.md --title "arc1/eval"
#   python benchmarks/policy_curve.py runs/fam-icl+runs/ev-icl runs/fam-e1+runs/ev-e1 runs/fam-e3+runs/ev-e3 \
#       runs/fam-e6+runs/ev-e6 runs/fam-e12+runs/ev-e12 runs/mx-settle runs/mx-b030 runs/mx-b043 runs/mx-b085 \
#       --stream runs/stream/stream-labels.json --png stream-frontier.png --md stream-frontier.md --title "stream"
#   python benchmarks/loo_audit.py runs/ev-settle
#   testtime compare runs/ev-e6 runs/ev-b051   # and the others: paired, sign test
set -uo pipefail
EVAL="--tasks arc1/eval"
STREAM="--tasks runs/stream/stream-challenges.json --labels runs/stream/stream-labels.json"
FAMILIAR="--tasks runs/stream/familiar-challenges.json"
STREAM_FILES="py-stream:benchmarks/mixed_stream.py --out runs/stream"  # CPU seconds; again on a fresh machine

# NAME:FLAGS|estimated GPU-minutes (start-up included)
A=(
  "$STREAM_FILES|0.2"
  "mx-settle:$STREAM --policy settle --audit-loo|4.5"   # the stream by the cuts alone; the check's cost and verdicts
  "fam-e6:$FAMILIAR|3.2"                                 # the default on the familiar half: with ev-e6, the reference
  "mx-b043:$STREAM --budget 0.43|3.3"                    # the stream's goal: the default's accuracy at 50% of 0.85 s
  "ev-e6:$EVAL|6.1"                                      # the default itself, this session's timing: the reference
  "ev-b051:$EVAL --budget 0.51|3.8"                      # the evaluation set's goal: 60% of 0.85 s
)
B=(
  "$STREAM_FILES|0.2"
  "ev-settle:$EVAL --policy settle|5.0"
  "fam-icl:$FAMILIAR --no-ttt|1.4"
  "ev-icl:$EVAL --no-ttt|2.4"
  "fam-e3:$FAMILIAR --epochs 3|2.4"                      # 48 steps
  "ev-e3:$EVAL --epochs 3|4.3"
  "mx-b030:$STREAM --budget 0.30|2.4"
  "ev-b034:$EVAL --budget 0.34|2.7"
  "fam-e1:$FAMILIAR --epochs 1|1.8"                      # 16 steps
)
C=(
  "$STREAM_FILES|0.2"
  "ev-e1:$EVAL --epochs 1|3.1"
  "mx-b085:$STREAM --budget 0.85|6.1"                    # the default's compute, spent where the signals say
  "ev-b085:$EVAL --budget 0.85|6.1"
  "fam-e12:$FAMILIAR --epochs 12|5.0"                    # 192 steps
)
D=(
  "ev-e12:$EVAL --epochs 12|9.7"
)
# Each named recipe of api.RECIPES beyond the default (the levers branch's, once merged), on both: RECIPES="max fast".
for r in ${RECIPES:-}; do
  D+=("$STREAM_FILES|0.2" "fam-rec-$r:$FAMILIAR --recipe $r|?" "ev-rec-$r:$EVAL --recipe $r|?")
done

case "${SESSION:-A}" in
  A) RUNS=("${A[@]}") ;;
  B) RUNS=("${B[@]}") ;;
  C) RUNS=("${C[@]}") ;;
  D) RUNS=("${D[@]}") ;;
  *) echo "SESSION is A, B, C or D"; exit 2 ;;
esac
specs=()
total=0
for run in "${RUNS[@]}"; do
  specs+=("${run%|*}")
  est=${run##*|}
  if [ -n "${LIST:-}" ]; then printf '%6s min  %s\n' "$est" "${run%|*}"; fi
  if [[ $est =~ ^[0-9.]+$ ]]; then total=$(awk -v a="$total" -v b="$est" 'BEGIN {print a + b}'); fi
done
echo "session ${SESSION:-A}: ${#specs[@]} runs, about $total GPU-minutes on one H200"
if [ -n "${LIST:-}" ]; then exit 0; fi
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
