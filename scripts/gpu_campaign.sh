#!/usr/bin/env bash
# Issue 30, item 3 on one H200: one session's stretch of the pretraining campaign, and the measurements that decide
# whether it ships. The shipped model (models/testtime-grid-base) is continued for MINUTES on the campaign's data
# (CONFIG, default configs/data-gen75.json: three quarters of the draws from generated tasks, since v8's stretch;
# before, configs/data-gen50.json, half, results/h200-gen-2026-12-05.md),
# over a corpus generated fresh on the machine (GEN_SEED: a new seed each session, so no task is drawn twice across
# sessions). Then the continued model is evaluated on the 400 ARC-AGI-1 evaluation tasks with the default recipe
# at one adapter a task (as the shipped model's records it is paired with);
# where it scores more than the shipped model there, also on the 120 ARC-AGI-2 evaluation tasks and on the 400
# without TTT (scripts/campaign_ship_checks.sh: a stretch that did not gain gives those minutes back). The model
# comes back in $OUT (model.tar.part*). The stretch profiles 5 steps after its first 100
# (runs/pretrain-campaign/profile.json: where a step's time goes, for the 40% MFU goal).
# It ships only if it beats the shipped model on all 400, paired (against the shipped model's records, which
# results/shipped.env points at), and neither check shows it worse beyond the noise:
# the checks' last line, `ship checks: ship` or `hold (...)`, is that decision (`testtime ship`). Then the next
# session continues from it. A call
# carries one model, the tracked one, so the campaign ratchets: each stretch starts from the best model shipped so far.
#
# Calls: the stashing calls of scripts/gpu_stash.sh's header, the last one ending in
#   GEN_SEED=S TESTTIME_COMMIT=<HEAD> WAIT=570 bash scripts/gpu_campaign.sh     (MINUTES=11, EVAL=1 by default)
# then the same line alone, which waits on the runner, until ALL RUNS DONE.
# Then here: tar -xzf runs.tar.gz -C OUT; cat model.tar.part* | tar -x -C OUT;
#   testtime compare OUT/RUN OUT/runs/campaign-eval (the shipped model's records, RUN in the archive results/shipped.env
#   names, unpacked into OUT)
#
# Device minutes, as measured on one H100 on 2026-12-06 at MINUTES=7 (results/h100-campaign-2026-12-06b.md): about
# 1 starting the machine and stashing; 1.5 generating; 1.02 x MINUTES + 1 pretraining (compile and validations
# included: 7.1 at MINUTES=7, 13.2 at 12); 6.5 for the 400 tasks; where the stretch gained, 5.9 for ARC-AGI-2's 120
# and the 400 without TTT; with the calls' own overheads, 9.5 + 1.1 x MINUTES in all, 16 + 1.1 x MINUTES with the
# ship checks (23 at MINUTES=7). Lower MINUTES when refused starts have eaten into the session's budget.
#
# Stretches chain across sessions even when one alone does not ship (a short stretch gains less than the 400
# tasks' noise, about 12): EVAL=0 leaves out the evaluation and the ship checks, so a short budget goes to
# pretraining alone (about 4.5 + 1.1 x MINUTES device-minutes on 2026-12-06: the start, the stash, the corpus,
# then the stretch with its validations); EVAL=400 leaves out only the ship checks (6.5 more for the 400). A model
# kept for a later session may not be there: a session can start on a fresh checkout, which holds only what landed
# in git (the seventh stretch, 206.5 on the 400, was lost so: h100-campaign-2026-12-06i.md). So EVAL=1 at MINUTES=11
# (29.2 device-minutes with no refused start on 2026-12-06, -06i.md) is the campaign's session where nothing else
# comes first. A returned model that waits for a later session is parked in git history (the ninth stretch so,
# h100-campaign-2026-12-07.md): unpacked into candidates/DATE-seedS/, added by one commit and removed by the next,
#   mkdir -p /tmp/m candidates/DATE-seedS && cat model.tar.part* | tar -x -C /tmp/m
#   cp /tmp/m/model/* candidates/DATE-seedS/
# so no call carries it and every clone holds it. The next stretch starts from it with
# `bash scripts/campaign_from.sh REV:candidates/DATE-seedS` (REV: the commit that added it) before the calls (it puts
# those weights where the calls carry the shipped model from), then `bash scripts/campaign_from.sh --restore` after
# them. A stretch that then beats the shipped model ships.
# PRETRAIN=0 only evaluates the stand-in (and makes the ship checks), for a budget too short to train and evaluate:
# the wheels stashed first (`bash scripts/carry_parts.sh --wheels` prints the calls, the last ending in this line),
# then the same line until ALL RUNS DONE (about 7 device-minutes, 13.6 with the checks on 2026-12-06,
# h100-campaign-2026-12-06f.md). Keep the stand-in in place until then: the evaluations read the model from the
# tree each call carries.
# STAND_IN_EVAL=ARCHIVE:RUN (with EVAL=0 or EVAL=400: below) adds the ship checks of a stand-in evaluated on the 400
# in an earlier session whose budget left no room for them (its records tracked as RUN in ARCHIVE), before the
# stretch that continues it, while its corpora generate: 5.8 device-minutes on 2026-12-06
# (h100-campaign-2026-12-06h.md, run after the stretch then), the corpora's 1.4 hidden under them now where the
# checks run (not where the records do not beat the shipped model's, and not with FLEX=1: the checks come last
# then). With PRETRAIN=0 EVAL=0, the checks alone.
#
# A dry run on the CPU (what the pipeline does, not what it measures; done on 2026-12-05, 23 minutes on 2 busy
# cores; on 2026-12-06 with STAND_IN_EVAL=...06h...:seed8 EVAL=400, 30 minutes, and again in 7 with holdout 4,
# total_steps 2 and EVAL_FLAGS="--limit 1 --no-ttt"): a copy of the config with "compile": false, token_budget 8192,
# warmup_steps 2, total_steps 6, log_every 2 and val_every/solve_every 6 as CONFIG; GEN_TASKS=200 UNSEEN_TASKS=50
# EVAL_FLAGS="--limit 2" MINUTES=1 OUT=/tmp/o; the stash of scripts/gpu_stash.sh filled by running its calls in a
# checkout (a git worktree) that reaches ../shared.
set -uo pipefail
MINUTES=${MINUTES:-11}  # with EVAL=1's evaluation and ship checks, what one session's 30 device-minutes fit (-06i.md)
CONFIG=${CONFIG:-configs/data-gen75.json}
if [ "${PRETRAIN:-1}" = 0 ]; then GEN_SEED=${GEN_SEED:-0}; fi  # no corpus is generated then
: "${GEN_SEED:?GEN_SEED: a seed no earlier session generated with (the results files name theirs)}"
MODEL=runs/pretrain-campaign/model
GEN_TASKS=${GEN_TASKS:-20000} UNSEEN_TASKS=${UNSEEN_TASKS:-2000}
UNSEEN=$((GEN_SEED + 1000))  # the probe's corpus: tasks of another seed, never trained on
GEN="-m testtime.cli generate --pairs 24"
specs=(script-rearc:scripts/gpu_rearc_join.sh
       "py-gen:$GEN --out runs/gen/gen.npz --tasks $GEN_TASKS --seed $GEN_SEED"
       "py-gen-unseen:$GEN --out runs/gen/gen-unseen.npz --tasks $UNSEEN_TASKS --seed $UNSEEN"
       "pretrain-campaign:--config $CONFIG --fit-minutes $MINUTES --export --profile-steps 5")
# FLEX=1: before the stretch, the block mask's waste on 12 of its batches, and packed attention's forward and
# backward timed on them (benchmarks/bench_flex_blocks.py, FLEX_VARIANTS), for the 40% MFU goal; then the GPU lane's
# tests that 64-token blocks and FlashAttention's document spans attend and train as the default blocks. On
# 2026-12-06 (H100, torch 2.11; h100-campaign-2026-12-06e.md) the default 128-token blocks computed 1.12x the pairs
# MFU counts, 64-token ones did not compile (pytorch issue 176025), and the two steps took 2 minutes. Attention is
# 41% of a step at roughly a fifth of the GPU's peak (5.82 ms a layer): next, FlashAttention's variable-length kernel
# (`varlen`; `"attention": "varlen"` in a config trains with it) against FlexAttention; `128-tune` (an autotuned
# FlexAttention backward) compiles for minutes. Then scripts/pick_attention.py writes the stretch's config
# (runs/campaign.json): CONFIG with varlen where the lane test passed and varlen saved at least 5% of attention's
# time, else CONFIG unchanged (PICK=0: always CONFIG).
FLEX_VARIANTS=${FLEX_VARIANTS:-128,varlen}  # no spaces: gpu_eval.sh splits a run's flags on them
if [ "${FLEX:-0}" = 1 ]; then
  # bench-flex.md: the name gpu_eval.sh's archive brings back; -rA prints the lane test's measured gaps on a pass,
  # and no:logging with --show-capture=stdout keep torch's captured debug lines and stderr from pushing its failure
  # out of the 40 lines the log keeps
  specs=("${specs[@]:0:3}"
         "py-flex:benchmarks/bench_flex_blocks.py --config $CONFIG --batches 12 --variants $FLEX_VARIANTS --out runs/bench-flex.md"
         "py-lane-flex:-m pytest -m gpu -rA --tb=short --show-capture=stdout -p no:logging -p no:cacheprovider --junitxml runs/lane-flex.xml tests/test_gpu.py -k attention_and_gradients")
  if [ "${PICK:-1}" = 1 ]; then
    specs+=("py-pick:scripts/pick_attention.py --config $CONFIG --bench runs/bench-flex.md --lane runs/lane-flex.xml --out runs/campaign.json"
            "pretrain-campaign:--config runs/campaign.json --fit-minutes $MINUTES --export --profile-steps 5")
  else
    specs+=("pretrain-campaign:--config $CONFIG --fit-minutes $MINUTES --export --profile-steps 5")
  fi
fi
if [ "${PRETRAIN:-1}" = 0 ]; then  # the stretch that campaign_from.sh stood in for the shipped model, evaluated
  MODEL=models/testtime-grid-base specs=()
fi
# The stretch's 400 at one adapter a task, not the default's two: the shipped model's records it is compared with
# (results/shipped.env's SHIPPED_RUN) trained one (campaign_ship_checks.sh refuses a pair that differs), and the 400
# take 6.5 device-minutes against about 11.4 with two (h100-arch-adapters-2026-12-06.md), 5 more of a session for
# pretraining. A shipped model's score under the default is measured apart (`gpu_levers.sh default`).
case ${EVAL:-1} in
  0) ;;
  1) specs+=("campaign-eval:--tasks arc1/eval --adapters 1 --model $MODEL" "script-ship:scripts/campaign_ship_checks.sh $MODEL") ;;
  400) specs+=("campaign-eval:--tasks arc1/eval --adapters 1 --model $MODEL") ;;  # its ship checks left to a later session
  *) echo "EVAL=${EVAL}: 1 (the 400 and, where they gained, the ship checks), 400 (the 400 alone) or 0" >&2; exit 1 ;;
esac
# SOUP=1 (with a stretch and its 400): then the mean of the stretch's weights and its parent's (the model the calls
# carry; `testtime average`, on the machine, seconds) on the 400 at one adapter a task, about 6.5 device-minutes more:
# whether averaging a stretch with the model it continued beats both (`testtime compare` against each) at one
# model's test-time cost. Nothing more is carried: both models are on the machine already.
if [ "${SOUP:-0}" = 1 ]; then
  [ "${PRETRAIN:-1}" != 0 ] && [ "${EVAL:-1}" != 0 ] \
    || { echo "SOUP=1: only with a stretch and its 400 (PRETRAIN=1, EVAL=1 or 400)" >&2; exit 1; }
  specs+=("py-soup:-m testtime.cli average models/testtime-grid-base $MODEL --out runs/soup"
          "soup-eval:--tasks arc1/eval --adapters 1 --model runs/soup")
fi
# STAND_IN_EVAL=ARCHIVE:RUN: the stand-in's 400 were evaluated in an earlier session (recorded as RUN in the tracked
# ARCHIVE) with no time left for its ship checks; they run here on those records, before the stretch that continues
# the stand-in (EVAL=400: that stretch is then evaluated on the 400, its own checks left to a later session; EVAL=0:
# not evaluated here), or alone with PRETRAIN=0 EVAL=0.
if [ -n "${STAND_IN_EVAL:-}" ]; then
  [ "${EVAL:-1}" != 1 ] || { echo "STAND_IN_EVAL: only with EVAL=0 or 400 (EVAL=1 runs a second stretch's ship checks)" >&2; exit 1; }
  [ "${PRETRAIN:-1}" != 0 ] || [ "${EVAL:-1}" = 0 ] \
    || { echo "STAND_IN_EVAL with PRETRAIN=0: only EVAL=0 (the stand-in's 400 are ARCHIVE:RUN already)" >&2; exit 1; }
  [ -f "${STAND_IN_EVAL%:*}" ] || { echo "STAND_IN_EVAL: no archive ${STAND_IN_EVAL%:*}" >&2; exit 1; }
  [[ $STAND_IN_EVAL == *:* ]] && tar -tJf "${STAND_IN_EVAL%:*}" "${STAND_IN_EVAL##*:}/results.jsonl" >/dev/null 2>&1 \
    || { echo "STAND_IN_EVAL: $STAND_IN_EVAL is not ARCHIVE:RUN with RUN/results.jsonl in ARCHIVE" >&2; exit 1; }
  ship="script-ship:scripts/campaign_ship_checks.sh models/testtime-grid-base $STAND_IN_EVAL"
  if [ "${PRETRAIN:-1}" != 0 ] && [ "${FLEX:-0}" != 1 ]; then
    # The checks need the GPU, not the corpora, and the corpora the CPU (83 s on 2026-12-06's H100): so the corpora
    # generate in the background under the checks, and the stretch starts after both (gpu_eval.sh's -bg and join),
    # alone on the GPU, as its schedule is fitted to the step time it measures.
    specs=("${specs[0]}" "${specs[1]/#py-gen:/py-gen-bg:}" "${specs[2]/#py-gen-unseen:/py-gen-unseen-bg:}" "$ship"
           "join:" "${specs[@]:3}")
  else
    specs+=("$ship")
  fi
  NEEDS_STAND_IN=1
fi
[ ${#specs[@]} -gt 0 ] || { echo "PRETRAIN=0 with EVAL=0: nothing to run" >&2; exit 1; }
[ "${PRETRAIN:-1}" = 0 ] && SEND= || SEND=$MODEL  # a stand-in is already here
if [ -n "${LIST:-}" ]; then  # LIST=1: the runs, without running them (and, on stderr, the model that comes back)
  printf '%s\n' "${specs[@]}"; echo "returns: ${SEND:-no model}" >&2; exit 0
fi
# checking the shipped model again by mistake would cost 6-12 device-minutes
if [ "${PRETRAIN:-1}" = 0 ] || [ -n "${NEEDS_STAND_IN:-}" ]; then
  STAND_IN=models/testtime-grid-base/STAND_IN
  [ -f $STAND_IN ] || { echo "PRETRAIN=0 or STAND_IN_EVAL: no stand-in (run scripts/campaign_from.sh first)"; exit 1; }
  echo "evaluating the stand-in: $(cat $STAND_IN)"
fi
SEND_MODEL=$SEND exec bash "$(dirname "$0")/gpu_eval.sh" "${specs[@]}"
