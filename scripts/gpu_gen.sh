#!/usr/bin/env bash
# Issue 30, item 4 on one H200: do the project's generated tasks keep the base model learning? Two continuations of
# the shipped model (v4) for the same MINUTES over scripts/gpu_eval.sh's runner:
#   data-base: today's data (configs/data-base.json: ARC-AGI-1 training, RE-ARC, clean ARC-AGI-2 training);
#   data-gen:  the same with a quarter of the draws from a generated corpus (configs/data-gen.json, "gen:runs/gen/gen.npz"),
#              made first on the machine's CPUs (`testtime generate`, 20,000 tasks of 24 pairs, seed 0).
# Then, with the default TTT: the 40 held-out training tasks for v4 as shipped and for both continuations; then the
# generated arm on all 400 ARC-AGI-1 evaluation tasks (paired here with v4's records in
# results/h200-2026-12-04/runs.tar.xz); then the table (benchmarks/arch_compare.py; runs are named as its
# candidates are, pretrain-arch-NAME and holdout-NAME).
#
# Calls (each a `run` of the device tool; RE-ARC's parts as in scripts/gpu_arch.sh):
#   bash scripts/gpu_stash.sh .whl .carry1                                    # carry: .whl .carry1
#   bash scripts/gpu_stash.sh .carry2                                         # carry: .carry2
#   bash scripts/gpu_stash.sh .carry3                                         # carry: .carry3
#   bash scripts/gpu_stash.sh .carry4 >/dev/null 2>&1; TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_gen.sh
#                                                                             # carry: .carry4
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_gen.sh                   # again, until ALL RUNS DONE
# Then here: tar -xzf runs.tar.gz -C OUT; python benchmarks/arch_compare.py --runs OUT/runs --png gen.png \
#   --out gen.md v4 data-base data-gen;  testtime compare V4RUN OUT/runs/a1-data-gen
#
# Device minutes at MINUTES=5 (estimates from results/h200-arch-2026-12-04.md): about 2 starting the machine and
# stashing; 1 generating; 2 x 5.3 pretraining; 3 x about 1 the held-out evaluations; about 6 for all 400 tasks;
# about 23 in all. The 400-task run comes last: what the budget leaves of it resumes in the next session.
set -uo pipefail
MINUTES=${MINUTES:-5}
specs=(script-rearc:scripts/gpu_rearc_join.sh
       "py-gen:-m testtime.cli generate --out runs/gen/gen.npz --tasks 20000 --pairs 24 --seed 0")
for n in data-base data-gen; do specs+=("pretrain-arch-$n:--config configs/$n.json --fit-minutes $MINUTES --export"); done
specs+=("holdout-v4:--tasks arc1/train-holdout")
for n in data-base data-gen; do specs+=("holdout-$n:--tasks arc1/train-holdout --model runs/pretrain-arch-$n/model"); done
specs+=("a1-data-gen:--tasks arc1/eval --model runs/pretrain-arch-data-gen/model"
        "py-table:benchmarks/arch_compare.py --runs runs --out runs/bench-gen.md --json runs/bench-gen.json v4 data-base data-gen")
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
