#!/usr/bin/env bash
# Issue 29 on one H200: what a single query costs, and the cut its warm goal (<= 2 s a task) needs. Each step is a
# run of scripts/gpu_eval.sh (background runner, resumed across calls, every table back in $OUT/runs.tar.gz):
#   1. a cold `solve`, phase by phase, 3 fresh processes (the imports' seconds by package, each process);
#   2. the warm solver over the evaluation tasks for 150 s, one at a time, then a TTT step's cost under
#      torch.profiler (--trace: whether a lone task's TTT steps are bound by the host);
#   3. the same with the TTT sequences in a quarter of the steps (configs/eval-ttt-b8.json: 8 sequences a step,
#      lr 1e-3);
#   4. that setting's accuracy on the 400 (pair it with the shipped model's records, v5's in
#      results/h100-campaign-2026-12-06b/runs.tar.xz: `testtime compare rec/v5 runs/b8`; it only replaces the default for one query if it keeps the accuracy);
#   5. the service under 32 clients over the 400, bounded to 5 minutes, against `evaluate` on the tasks it answered;
#   6. (lane-ttt) the GPU lane's test that a TTT step captured as a CUDA graph trains as the eager one, then
#      (warm-graphs, warm-b8-graphs) steps 2 and 3 with each TTT step so captured and replayed (`ttt_cfg.cuda_graphs`:
#      a lone task's step is bound by the host's launches, which a replay skips).
# Estimated device minutes (from results/h200-latency-2026-12-05.md and h200-2026-12-04.md): 1.5 starting, 2.5,
# 4.5, 4.5, 6, 9: about 28 in all; leave out the service (LIST=1 shows the runs) when a refused start ate into the
# session's budget.
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_latency.sh   # carry: .whl; again until ALL RUNS DONE
#   STEPS="cold warm" ...                                           # only some of them
#   STEPS="lane-ttt warm-graphs warm-b8-graphs warm" ...            # the graphs against the default (about 11)
set -uo pipefail
B8='{"ttt_cfg.batch_size":8,"ttt_cfg.lr":0.001}'  # no spaces: gpu_eval.sh splits a run's flags on them
GR='{"ttt_cfg.cuda_graphs":true}'
WARM_S=${WARM_S:-150}  # seconds of each warm run (then its trace's four solves); lower when the budget is short
B8GR='{"ttt_cfg.batch_size":8,"ttt_cfg.lr":0.001,"ttt_cfg.cuda_graphs":true}'
LAT="benchmarks/bench_latency.py"
declare -A SPEC=(
  [cold]="py-cold:$LAT cold --task arc1/eval/00576224 --device cuda --repeats 3 --out runs/bench-lat-cold.md"
  [warm]="py-warm:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --out runs/bench-lat-warm.md"
  [warm-b8]="py-warm-b8:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --settings $B8"\
" --out runs/bench-lat-warm-b8.md"
  [b8]="b8:--tasks arc1/eval --config configs/eval-ttt-b8.json"
  [lane-ttt]="py-lane-ttt:-m pytest -q -rA -p no:cacheprovider -m gpu tests/test_gpu.py -k cuda_graph_training"
  [warm-graphs]="py-warm-graphs:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --settings $GR"\
" --out runs/bench-lat-warm-graphs.md"
  [warm-b8-graphs]="py-warm-b8-graphs:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda"\
" --settings $B8GR --out runs/bench-lat-warm-b8-graphs.md"
  [serve]="py-serve:benchmarks/bench_serve.py --clients 32 --tasks arc1/eval --max-seconds 300 --device cuda"\
" --compare-evaluate --out runs/bench-serve.md"
)
specs=()
for step in ${STEPS:-cold warm warm-b8 b8 serve}; do
  [ -n "${SPEC[$step]:-}" ] || { echo "no step $step; the steps: ${!SPEC[*]}"; exit 2; }
  specs+=("${SPEC[$step]}")
done
if [ -n "${LIST:-}" ]; then printf '%s\n' "${specs[@]}"; exit 0; fi
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
