#!/usr/bin/env bash
# Issue 29 on one H200: what a single query costs, and the cut its warm goal (<= 2 s a task) needs. Each step is a
# run of scripts/gpu_eval.sh (background runner, resumed across calls, every table back in $OUT/runs.tar.gz):
#   1. a cold `solve`, phase by phase, 3 fresh processes (the imports' seconds by package, each process);
#   2. the warm solver over the evaluation tasks for WARM_S (90) s, one at a time, then a TTT step's cost under
#      torch.profiler (--trace: whether a lone task's TTT steps are bound by the host);
#   3. the same with the TTT sequences in a quarter of the steps (configs/eval-ttt-b8.json: 8 sequences a step,
#      lr 1e-3);
#   4. that setting's accuracy on the 400 (pair it with the shipped model's records under the same two-adapter
#      default: v9's are `adapters2` in results/h100-arch-adapters-2026-12-06/runs.tar.xz, in git history since
#      v11 shipped (scripts/results_archive.sh unpacks it); v10's `v10default` in results/h100-campaign-2026-12-07d/runs.tar.xz, in history too;
#      v11's (shipped 2026-12-07) are not yet made, so with v11 in the tree add `LIST=1 bash scripts/gpu_levers.sh
#      default`'s run (11.4 device-minutes) and `testtime compare runs/default runs/b8`;
#      it only replaces the default for one query if it keeps the accuracy);
#   5. the service under 32 clients over the 400, bounded to 5 minutes, against `evaluate` on the tasks it answered;
#   6. (lane-ttt) the GPU lane's test that a TTT step captured as a CUDA graph trains as the eager one;
#   7. (warm-eager) step 2 with the TTT steps run eagerly, as before 2026-12-06 made graphs the default for a run
#      that trains one adapter (`ttt_cfg.cuda_graphs`: None).
#   8. (warm-a2) step 2 with 2 adapters a task, graphs on (measured on 2026-12-07, h100-a2-2026-12-07.md: 2.86 s
#      median; since then the default, whose lone task's two adapters replay as graphs unasked, so step 2 runs the
#      same; kept to rerun that figure by name).
# Steps 1-3 train one task at a time, so their TTT steps replay as CUDA graphs; the 400 of step 4 and the service's
# batches train many together, so theirs run eagerly.
# Estimated device minutes (from results/h200-latency-2026-12-05.md, h200-2026-12-04.md and
# h100-latency-2026-12-06.md, where a warm run with its trace took 2.4 minutes with graphs and 3.9 without, a lane
# test 0.5): 1.5 starting, 2.5, 2.5, 2.5, 4.5, 6, 0.5, 4: about 24 in all; leave out the service (LIST=1 shows the
# runs) when a refused start ate into the session's budget.
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_latency.sh   # wheels: carry_parts.sh --wheels; again till ALL RUNS DONE
#   STEPS="cold warm" ...                                           # only some of them
set -uo pipefail
B8='{"ttt_cfg.batch_size":8,"ttt_cfg.lr":0.001}'  # no spaces: gpu_eval.sh splits a run's flags on them
EAGER='{"ttt_cfg.cuda_graphs":false}'
TWO='{"ensemble_cfg.adapters":2,"ttt_cfg.cuda_graphs":true}'
WARM_S=${WARM_S:-90}  # seconds of each warm run (then its trace's four solves); lower when the budget is short
LAT="benchmarks/bench_latency.py"
declare -A SPEC=(
  [cold]="py-cold:$LAT cold --task arc1/eval/00576224 --device cuda --repeats 3 --out runs/bench-lat-cold.md"
  [warm]="py-warm:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --out runs/bench-lat-warm.md"
  [warm-b8]="py-warm-b8:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --settings $B8"\
" --out runs/bench-lat-warm-b8.md"
  [b8]="b8:--tasks arc1/eval --config configs/eval-ttt-b8.json"
  [lane-ttt]="py-lane-ttt:-m pytest -q -rA -p no:cacheprovider -m gpu tests/test_gpu.py -k cuda_graph_training"
  [warm-eager]="py-warm-eager:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda"\
" --settings $EAGER --out runs/bench-lat-warm-eager.md"
  [warm-a2]="py-warm-a2:$LAT warm --tasks arc1/eval --max-seconds $WARM_S --trace --device cuda --settings $TWO"\
" --out runs/bench-lat-warm-a2.md"
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
