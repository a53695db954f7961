#!/usr/bin/env bash
# The architecture comparison of issue 30 on one H200, over scripts/gpu_eval.sh's runner: the candidates
# (configs/arch-NAME.json: base, wide, looped, taskemb; muon is base trained by Muon beside AdamW) pretrained from
# scratch in turn, each for the same MINUTES (`--fit-minutes`: start-up and compiling included, the schedule
# annealed by the end; the held-out solve counts add seconds of wall clock on top), each exported; then each
# evaluated with the default TTT on the 40 held-out training tasks (`--tasks arc1/train-holdout`, alone on the GPU,
# so its s/task is a timing); then the table (benchmarks/arch_compare.py -> runs/bench-arch.md and .json, which
# runs.tar.gz brings back).
#
# Calls: the stashing calls of scripts/gpu_stash.sh's header, the last one ending in
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_arch.sh
# then the same line alone, which waits on the runner, until ALL RUNS DONE. The candidates pretrain from scratch, so
# the calls need not carry the shipped model: `bash scripts/campaign_from.sh --none` before carry_parts.sh makes
# the stashing one call instead of five, and `bash scripts/campaign_from.sh --restore` after the last call.
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
#   runs before the candidates add about 1.5 minutes an architecture (2026-12-05's cold compile took 75 s); muon
#   shares base's.
# Measured (results/h200-arch-2026-12-04.md, MINUTES=3.5, NAMES="base wide"): pretraining 200 and 212 s of wall clock,
# the held-out evaluations about 60 and 88 s; with the machine's start and four stashing calls, 12.8 device-minutes.
set -uo pipefail
MINUTES=${MINUTES:-3}
NAMES=${NAMES:-base wide looped taskemb}
specs=()  # gpu_eval.sh joins RE-ARC before the first pretraining run
# With muon a candidate, its optimizer step alone first (seconds): torch's loop against GroupedMuon's stacks
# (measured on one H100 on 2026-12-07, h100-a2-2026-12-07.md; MUON_STEP=0 leaves it out). A fresh model of
# the candidate's shape, since this job carries no weights (campaign_from.sh --none).
case " $NAMES " in *" muon "*)
  step="benchmarks/muon_step.py --config configs/arch-muon.json --device cuda --out runs/bench-muon-step.md"
  [ "${MUON_STEP:-1}" != 0 ] && specs+=("py-muon-step:$step") ;;
esac
# Each candidate's graphs compiled first, in a throwaway run: fit_minutes counts start-up, and candidates of one
# architecture (base, muon) share a compile cache, so the first would pay the cold compile alone (gpu_gen.sh).
# muon is base's architecture and compiles only the loss (its optimizer runs eagerly), so with base a candidate
# too it needs no warm run of its own.
for n in $NAMES; do
  [ "$n" = muon ] && [[ " $NAMES " == *" base "* ]] && continue
  specs+=("pretrain-warm-$n:--config configs/arch-$n.json --steps 40 --fresh")
done
for n in $NAMES; do specs+=("pretrain-arch-$n:--config configs/arch-$n.json --fit-minutes $MINUTES --export"); done
# HOLDOUT=0 leaves out the held-out evaluations (a short budget): the table then compares the candidates by their
# validation losses and the held-out solve counts logged during pretraining.
if [ "${HOLDOUT:-1}" != 0 ]; then
  for n in $NAMES; do specs+=("holdout-$n:--tasks arc1/train-holdout --model runs/pretrain-arch-$n/model"); done
fi
# shellcheck disable=SC2086
specs+=("py-arch:benchmarks/arch_compare.py --runs runs --out runs/bench-arch.md --json runs/bench-arch.json $NAMES")
if [ -n "${LIST:-}" ]; then printf '%s\n' "${specs[@]}"; exit 0; fi  # LIST=1: the runs, without running them
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
