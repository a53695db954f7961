#!/usr/bin/env bash
# Cut the wheels and RE-ARC into the carried folders .carry1, .carry2, ... that the stashing calls of
# scripts/gpu_stash.sh bring to the GPU machine one a call, each as large as today's tree leaves room for, and print
# those calls.
#
# A call carries the working tree's tracked and untracked-not-ignored files and the folders named in carry, 64 MiB
# in all. The tree grows (results, model cards), so fixed part sizes stop fitting: on 2026-12-06 a call of the
# wheels with a 1.2 MB part was refused once the tree reached 60.9 MB. This measures the tree as the device tool
# does and sizes the parts to it, less MARGIN bytes (default 400,000): the tool counts more than the files' bytes
# (on 2026-12-06 a call with 150 KB to spare under the limit by this count was refused, one with 400 KB passed;
# the tree's 41 folders at 4 KiB each would explain it), and the session may add files before its calls.
# The calls also carry the wheels (.whl, from scripts/device_wheels.sh), which gpu_stash.sh keeps beside the parts.
#   bash scripts/carry_parts.sh          # then the printed calls, in order
#   bash scripts/carry_parts.sh --wheels # the wheels alone, for the jobs that do not pretrain (gpu_eval.sh's,
#                                        # gpu_latency.sh's, ...): since the tree passed 62 MB they no longer fit one
#                                        # call beside it, so `carry: .whl` is refused
# CARRY_REPO (default: this checkout), SRC (default ../shared/data/re-arc/re_arc.npz.xz), LIMIT (default 67108864)
# and MARGIN are for tests.
set -euo pipefail
repo=${CARRY_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$repo"
src=${SRC:-../shared/data/re-arc/re_arc.npz.xz}
case "${1:-}" in
    --wheels) src=/dev/null ;;
    "") ;;
    *) echo "carry_parts: unknown argument $1 (--wheels, or none)" >&2; exit 2 ;;
esac
limit=${LIMIT:-67108864}
margin=${MARGIN:-400000}
[ -f "$src" ] || [ "$src" = /dev/null ] || { echo "carry_parts: no RE-ARC at $src" >&2; exit 1; }
compgen -G '.whl/*.whl' >/dev/null || { echo "carry_parts: no wheels in .whl/ (run scripts/device_wheels.sh first)" >&2; exit 1; }
size() { if [ -e "$1" ]; then stat -c %s "$1"; else echo 0; fi; }
# what every call carries: tracked and untracked-not-ignored files, as they are in the working tree now (a tracked
# file deleted there is not carried)
sizes=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true)
tree=$(awk '{s += $1} END {print s + 0}' <<<"$sizes")
# The wheels travel as files, each whole, packed into the first calls with room (largest first): since the tree
# passed 62 MB (2026-12-06) they no longer fit one call beside it. RE-ARC's bytes then fill what every call leaves.
room=$((limit - margin - tree))
[ "$room" -gt 0 ] || { echo "carry_parts: the tree ($tree bytes) leaves no room under $limit" >&2; exit 1; }
total=0
if [ "$src" != /dev/null ]; then
    total=$(size "$src")
    [ "$total" -gt 0 ] || { echo "carry_parts: $src is empty" >&2; exit 1; }
fi
wheels=$(for f in .whl/*.whl; do echo "$(size "$f") $f"; done | sort -rn)  # "bytes path", largest first
whl=0
while read -r bytes f; do
    [ "$bytes" -le "$room" ] || { echo "carry_parts: the tree ($tree bytes) leaves no room under $limit for $f ($bytes)" >&2; exit 1; }
    whl=$((whl + bytes))
done <<<"$wheels"
# the stash joins the parts in name order (rearc.part00, 01, ...): two digits
[ $(( (total + whl + room - 1) / room )) -le 99 ] \
    || { echo "carry_parts: a call's room ($room bytes) would cut $src into more than 99 parts" >&2; exit 1; }
rm -rf .carry[0-9]*
used=()  # bytes each call carries beyond the tree, call 1 at index 0
while read -r bytes f; do
    i=0
    while [ "$i" -lt "${#used[@]}" ] && [ $((used[i] + bytes)) -gt "$room" ]; do i=$((i + 1)); done
    used[i]=$(( ${used[i]:-0} + bytes ))
    mkdir -p ".carry$((i + 1))" && cp "$f" ".carry$((i + 1))/"
done <<<"$wheels"
n=0 offset=0 k=0
while [ "$offset" -lt "$total" ]; do
    chunk=$((room - ${used[n]:-0}))
    if [ "$chunk" -gt 0 ]; then
        mkdir -p ".carry$((n + 1))"
        part=$(printf '.carry%d/rearc.part%02d' "$((n + 1))" "$k")
        dd if="$src" of="$part" iflag=skip_bytes,count_bytes skip="$offset" count="$chunk" bs=1M status=none
        offset=$((offset + $(size "$part"))) k=$((k + 1))
    fi
    n=$((n + 1))
done
last=$(ls -d .carry[0-9]* | wc -l)
echo "tree $tree bytes, room a call $room: the wheels ($whl bytes) and RE-ARC ($total bytes) in $last calls" >&2
for i in $(seq 1 "$last"); do
    if [ "$i" -lt "$last" ]; then
        echo "bash scripts/gpu_stash.sh .carry$i                       # carry: .carry$i"
    else
        echo "bash scripts/gpu_stash.sh .carry$i >/dev/null 2>&1; JOB   # carry: .carry$i"
    fi
done
