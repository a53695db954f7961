#!/usr/bin/env bash
# Issue 24's measurements on the GPU: today's default, each lever alone, the recipes on the 400 ARC-AGI-1 evaluation
# tasks, then the three recipes on the 120 ARC-AGI-2 evaluation tasks, then the TTT sweep; every run over
# scripts/gpu_eval.sh (background runner, resumed across calls, everything back in $OUT/runs.tar.gz).
#
#   bash scripts/gpu_levers.sh plan                   # the runs, in order, with their estimated GPU-minutes
#   WAIT=560 bash scripts/gpu_levers.sh default second dfs      # on the GPU (wheels: carry_parts.sh --wheels); again to wait on it
#   NPROC=4 WAIT=560 bash scripts/gpu_levers.sh max   # on nvidia-h200-x4: 4 processes, a quarter of the wall time
#   LIST=1 bash scripts/gpu_levers.sh adapters2       # the runs' specs only, for another job's runner
#   bash scripts/gpu_levers.sh table                  # here, after `tar -xzf runs.tar.gz`: results/levers tables
#   EVAL_FLAGS="--limit 1" WAIT=5 bash scripts/gpu_levers.sh default second dfs   # a dry run here, on the CPU
#
# GPU-minutes on one H100 or H200: measured where a run has been made (the default, two adapters a task since
# 2026-12-07: 11.4 for the 400, 6.5 for ARC-AGI-2; one adapter 6.1 and 3.3; fast 3.5: results/h100-arch-adapters-
# 2026-12-06.md, h100-a2-2026-12-07.md, h100-campaign-2026-12-06i.md), else ESTIMATES from them:
#   - an ensemble of K adapters trains, decodes and scores K times over (two cost 1.8x one);
#   - depth-first sampling decodes without CUDA graphs (about 3x a greedy step) and forks (about 1.5x the rows):
#     prediction about 5x;
#   - a second round of 32 steps trains a third of the steps again, then decodes and scores again, on the tasks with
#     a confident answer (guessed: 60%);
#   - max: all of them at once (4 adapters, sampling, 16 candidates scored through 4 adapters, a second round):
#     about 10.5 s/task on ARC-AGI-1, about 27 on ARC-AGI-2 (its tasks cost 2.6x), within the issue's 30.
# `second`, `dfs` and `adapters2c16` add their lever to today's default, two adapters; `adapters1` is one adapter,
# the default until 2026-12-07. `int8-model` then `int8`: the shipped model stored as int8 (a scale per row, the
# folder `testtime quantize` writes; results/cpu-2026-12-07-int8.md), scored against bf16 on the 400's answers and
# then read back and evaluated at one adapter a task,
# paired with the shipped model's one-adapter records (results/shipped.env's SHIPPED_RUN): whether two checkpoints
# can ship in the room of one.
# Order: by value per GPU-minute. The reference first (every other row pairs with it, and it is the first run to keep
# the recall of the right grid); then the cheap levers the anchors rate highest; the recipes; ARC-AGI-2 (reported,
# never tuned on); the sweep last (its lr axis may move the default, so it comes before the expensive axes).
set -uo pipefail

A1="--tasks arc1/eval"
A2="--tasks arc2/eval"
# NAME|GPU-minutes on one H200 (estimate)|what gpu_eval.sh runs (NAME:FLAGS; py-* runs a python script)
RUNS=(
  "default|11.4|default:$A1"
  "second|15|second:$A1 --second-round 32"
  "dfs|22|dfs:$A1 --dfs 0.1"
  "adapters1|6.1|adapters1:$A1 --adapters 1"
  "fast|3.5|fast:$A1 --recipe fast"
  "sweep-lr|34|py-sweep-lr:benchmarks/sweep_ttt.py --out runs --prefix sw- --default-run runs/default --axes lr --md runs/bench-sweep-lr.md"
  "adapters4|22.7|adapters4:$A1 --adapters 4"
  "adapters2c16|12.5|adapters2c16:$A1 --config configs/eval-adapters2-c16.json"
  "int8-model|0.5|py-int8-model:benchmarks/quant_fidelity.py --limit 400 --md runs/bench-int8.md --save runs/int8-model"
  "int8|6.5|int8:$A1 --adapters 1 --model runs/int8-model"
  "max|70|max:$A1 --recipe max"
  "a2-default|6.5|a2-default:$A2"
  "a2-fast|2.3|a2-fast:$A2 --recipe fast"
  "a2-adapters1|3.3|a2-adapters1:$A2 --adapters 1"
  "a2-max|54|a2-max:$A2 --recipe max"
  "sweep-targets|30|py-sweep-targets:benchmarks/sweep_ttt.py --out runs --prefix sw- --default-run runs/default --axes targets --md runs/bench-sweep-targets.md"
  "sweep-rank|48|py-sweep-rank:benchmarks/sweep_ttt.py --out runs --prefix sw- --default-run runs/default --axes rank --md runs/bench-sweep-rank.md"
  "sweep-full|122|py-sweep-full:benchmarks/sweep_ttt.py --out runs --prefix sw- --default-run runs/default --axes full --md runs/bench-sweep-full.md"
)
# Sessions of 30 device-minutes (about 3 of them starting the machine and carrying the tree); measured with v9 by
# 2026-12-07: adapters1 (seed9), adapters2 (the default), fast, a2-adapters1 (v9a2), a2-default; with v10 (shipped
# 2026-12-07): adapters1 (seed12), a2-adapters1 (v10a2) and default (v10default: 210.5, h100-campaign-2026-12-07d.md,
# 697 s in the runner); with v11 (shipped 2026-12-07 evening, h100-campaign-2026-12-07e.md): adapters1 (seed14) and
# a2-adapters1 (v11a2). Next, by value (each lever pairs with the default's run of the same model, owed for v11):
#   default (11.4) adapters2c16 (12.5) second (15)    dfs (22)    sweep-lr (34)    adapters4 (22.7)
# The sweeps' settings each run the default, two adapters a task (full weights too, as the default run they pair
# with): twice their one-adapter estimates (`--base adapters=1` in a sweep's flags halves them, paired then with a
# one-adapter default).
#   5: max with NPROC=4 on nvidia-h200-x4 (70 GPU-min, about 18 wall)    6: a2-max with NPROC=4 (54, about 14 wall)
#   7-9: sweep-targets, sweep-rank, sweep-full (the sweeps run in one process: one GPU each)

field() { echo "$1" | cut -d'|' -f"$2"; }

case "${1:-}" in
  ""|-h|--help)
    sed -n '2,10p' "$0"; exit 0 ;;
  plan)
    total=0
    for r in "${RUNS[@]}"; do
      printf "%-14s %6s GPU-min  %s\n" "$(field "$r" 1)" "$(field "$r" 2)" "$(field "$r" 3)"
      total=$(awk -v a="$total" -v b="$(field "$r" 2)" 'BEGIN { print a + b }')
    done
    echo "total          $total GPU-min (one H100 or H200; measured where run, else estimates)"
    exit 0 ;;
  table)
    mkdir -p results/levers
    python3 benchmarks/levers_table.py --reference runs/default runs/default runs/second runs/dfs runs/adapters1 \
      runs/adapters2c16 runs/adapters4 runs/fast runs/max --md results/levers/arc1.md --json results/levers/arc1.json
    python3 benchmarks/levers_table.py --reference runs/a2-default runs/a2-default runs/a2-fast runs/a2-adapters1 \
      runs/a2-max \
      --md results/levers/arc2.md --json results/levers/arc2.json
    sweeps=(runs/sw-*/)
    if [ -d "${sweeps[0]}" ]; then
      python3 benchmarks/levers_table.py --reference runs/default runs/default "${sweeps[@]%/}" \
        --md results/levers/sweep.md --json results/levers/sweep.json
    fi
    exit 0 ;;
esac

specs=()
for name in "$@"; do
  spec=""
  for r in "${RUNS[@]}"; do [ "$(field "$r" 1)" = "$name" ] && spec=$(field "$r" 3); done
  [ -n "$spec" ] || { echo "unknown run $name; see: bash $0 plan" >&2; exit 2; }
  specs+=("$spec")
done
# LIST=1: the runs, without running them (to join another job's runs in one runner: results/README.md's plan)
if [ -n "${LIST:-}" ]; then printf '%s\n' "${specs[@]}"; exit 0; fi
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
