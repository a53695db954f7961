#!/usr/bin/env bash
# Issue 30, item 4 on one H200: do the project's generated tasks keep the base model learning? Three continuations
# of the shipped model (v4 when it ran on 2026-12-05; v5 to v9 on 2026-12-06, v10 since 2026-12-07) for the same MINUTES over
# scripts/gpu_eval.sh's runner, at three doses of generated tasks:
#   data-base:   today's data (configs/data-base.json: ARC-AGI-1 training, RE-ARC, clean ARC-AGI-2 training);
#   data-gen:    the same with a quarter of the draws from a generated corpus (configs/data-gen.json,
#                "gen:runs/gen/gen.npz"), made first on the machine's CPUs (`testtime generate`, 20,000 tasks of 24
#                pairs, seed 0);
#   data-gen50:  half of the draws from it (configs/data-gen50.json).
# v4 has memorized today's sources: its answer loss on their draws is 0.006-0.033 against 0.176 on the held-out
# tasks, and 0.333 on the generated ones (results/cpu-source-loss-2026-12-04.md), hence a dose above a quarter.
# What decides: each run's held-out loss at the end (val_loss, paired: the same held-out answers) and each source's
# answer loss as it trains (probe_loss: does the generated source's fall, does the held-out loss follow?), and the
# loss on 2,000 generated tasks of another seed that no arm trains on ("gen (not trained)": learned, or only
# memorized?); then, with
# the default TTT, the 40 held-out training tasks for the model as shipped and for each continuation (noisy at 40: one task
# is 2.5 points); then the table (benchmarks/arch_compare.py; runs are named as its candidates are, pretrain-arch-NAME
# and holdout-NAME). All 400 evaluation tasks belong to the campaign's model, not to these 5-minute proxies.
#
# Calls: the stashing calls of scripts/gpu_stash.sh's header, the last one ending in
#   TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_gen.sh
# then the same line alone, which waits on the runner, until ALL RUNS DONE.
# Then here: tar -xzf runs.tar.gz -C OUT; python benchmarks/arch_compare.py --runs OUT/runs --png gen.png \
#   --out gen.md shipped data-base data-gen data-gen50
#
# Device minutes at MINUTES=5: about 2 starting the machine and stashing; 2 generating; 1 compiling; 3 x 5.3
# pretraining; 4 x about 0.8 the held-out evaluations: about 24 in all. Measured on one H200 on 2026-12-05
# (ARMS="data-base data-gen50" MINUTES=4, results/h200-gen-2026-12-05.md): generating 93 + 36 s, each arm 231 s,
# each held-out evaluation 46-51 s; 15.4 device-minutes in all, the start and the six calls included.
set -uo pipefail
MINUTES=${MINUTES:-5}
specs=(script-rearc:scripts/gpu_rearc_join.sh
       "py-gen:-m testtime.cli generate --out runs/gen/gen.npz --tasks 20000 --pairs 24 --seed 0"
       "py-gen-unseen:-m testtime.cli generate --out runs/gen/gen-unseen.npz --tasks 2000 --pairs 24 --seed 1")
arms=${ARMS:-data-base data-gen data-gen50}   # ARMS="data-base data-gen" when the session has less time
# A throwaway run compiles the model first: fit_minutes counts start-up, and the first arm alone would otherwise pay
# the cold compile (75 s of 4 minutes on 2026-12-05: 876 steps against the next arm's 1,546).
first=${arms%% *}
specs+=("pretrain-warm:--config configs/$first.json --steps 40 --fresh")
for n in $arms; do specs+=("pretrain-arch-$n:--config configs/$n.json --fit-minutes $MINUTES --export"); done
specs+=("holdout-shipped:--tasks arc1/train-holdout")
for n in $arms; do specs+=("holdout-$n:--tasks arc1/train-holdout --model runs/pretrain-arch-$n/model"); done
specs+=("py-table:benchmarks/arch_compare.py --runs runs --out runs/bench-gen.md --json runs/bench-gen.json shipped $arms")
if [ -n "${LIST:-}" ]; then printf '%s\n' "${specs[@]}"; exit 0; fi  # LIST=1: the runs, without running them
exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
