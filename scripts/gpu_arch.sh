#!/usr/bin/env bash
# The architecture comparison of issue 30 on one H200, over scripts/gpu_eval.sh's runner: the candidates
# (configs/arch-NAME.json: base, wide, looped, taskemb; muon is base trained by Muon beside AdamW) pretrained from
# scratch in turn, each for the same MINUTES (`--fit-minutes`: start-up and compiling included, the schedule
# annealed by the end; the held-out solve counts add seconds of wall clock on top), each exported; then each
# evaluated with the default TTT on the 40 held-out training tasks (`--tasks arc1/train-holdout`, alone on the GPU,
# so its s/task is a timing); then the table (benchmarks/arch_compare.py -> runs/bench-arch.md and .json, which
# runs.tar.gz brings back).
#
# Calls (each a `run` of the device tool; wheels and RE-ARC's four parts as in results/h200-2026-12-04.md):
#   bash scripts/gpu_stash.sh .whl                                            # carry: .whl
#   bash scripts/gpu_stash.sh .carry1                                         # carry: .carry1
#   bash scripts/gpu_stash.sh .carry2                                         # carry: .carry2
#   bash scripts/gpu_stash.sh .carry3                                         # carry: .carry3
#   bash scripts/gpu_stash.sh .carry4 >/dev/null 2>&1; TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_arch.sh
#                                                                             # carry: .carry4
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_arch.sh                  # the same line again: waits on the
#   TESTTIME_COMMIT=<HEAD> WAIT=300 bash scripts/gpu_arch.sh                  # runner, until ALL RUNS DONE
# Then here: tar -xzf runs.tar.gz -C OUT; python benchmarks/arch_compare.py --runs OUT/runs --png arch.png \
#   --out arch.md base wide looped taskemb   (the PNG: held-out solve rate against tokens, per candidate).
#
# Device minutes at MINUTES=3 (the default), estimated from results/h200-2026-12-04.md, not measured:
#   about 1.5 starting the machine and sending wheels and RE-ARC;
#   4 x about 3.4 pretraining (3 fitted, plus the held-out solve counts, the last checkpoint and the export);
#   about 5-6 evaluating: 40 tasks with the default TTT take base and taskemb about 1 minute each (v4: 0.85 s/task,
#   plus loading), wide and looped about 1.5-2 (3x the FLOPs per token);
#   about 20-21 in all. MINUTES=4 makes it about 25; NAMES="base looped" runs two candidates (about 11);
#   NAMES="base muon" MINUTES=3.5 the optimizer against AdamW on the same data stream (about 11). The compiling
#   runs before the candidates add about 1.5 minutes a cold architecture and 0.5 a warm one (2026-12-05's cold
#   compile took 75 s).
# Measured (results/h200-arch-2026-12-04.md, MINUTES=3.5, NAMES="base wide"): pretraining 200 and 212 s of wall clock,
# the held-out evaluations about 60 and 88 s; with the machine's start and four stashing calls, 12.8 device-minutes.
# RE-ARC's parts: each call carries the tracked tree (57.1 MiB with the shipped model on 2026-12-05) and at most
# 64 MiB in all, so the parts are 3.6 MB, 6.8, 6.8 and the rest (5.7), and the 4 MB of wheels travel alone; made by
#   f=../shared/data/re-arc/re_arc.npz.xz; head -c 3600000 $f > .carry1/rearc.part0
#   tail -c +3600001 $f | head -c 6800000 > .carry2/rearc.part1; tail -c +10400001 $f | head -c 6800000 > .carry3/rearc.part2
#   tail -c +17200001 $f > .carry4/rearc.part3
# A refused machine start between two stashing calls loses the stash: the later call says what is missing.
set -uo pipefail
MINUTES=${MINUTES:-3}
NAMES=${NAMES:-base wide looped taskemb}
specs=(script-rearc:scripts/gpu_rearc_join.sh)
# Each candidate's graphs compiled first, in a throwaway run: fit_minutes counts start-up, and candidates of one
# architecture (base, muon) share a compile cache, so the first would pay the cold compile alone (gpu_gen.sh).
for n in $NAMES; do specs+=("pretrain-warm-$n:--config configs/arch-$n.json --steps 40 --fresh"); done
for n in $NAMES; do specs+=("pretrain-arch-$n:--config configs/arch-$n.json --fit-minutes $MINUTES --export"); done
for n in $NAMES; do specs+=("holdout-$n:--tasks arc1/train-holdout --model runs/pretrain-arch-$n/model"); done
# shellcheck disable=SC2086
specs+=("py-arch:benchmarks/arch_compare.py --runs runs --out runs/bench-arch.md --json runs/bench-arch.json $NAMES")
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
