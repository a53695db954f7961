#!/usr/bin/env bash
# Cut RE-ARC into the carried folders .carry1, .carry2, ... that the stashing calls of scripts/gpu_stash.sh bring to
# the GPU machine one a call, each as large as today's tree leaves room for, and print those calls.
#
# A call carries the working tree's tracked and untracked-not-ignored files and the folders named in carry, 64 MiB
# in all. The tree grows (results, model cards), so fixed part sizes stop fitting: on 2026-12-06 a call of the
# wheels with a 1.2 MB part was refused once the tree reached 60.9 MB. This measures the tree as the device tool
# does and sizes the parts to it, less MARGIN bytes (default 400,000): the tool counts more than the files' bytes
# (on 2026-12-06 a call with 150 KB to spare under the limit by this count was refused, one with 400 KB passed;
# the tree's 41 folders at 4 KiB each would explain it), and the session may add files before its calls.
# The first call also carries the wheels (.whl, from scripts/device_wheels.sh).
#   bash scripts/carry_parts.sh          # then the printed calls, in order
# CARRY_REPO (default: this checkout), SRC (default ../shared/data/re-arc/re_arc.npz.xz), LIMIT (default 67108864)
# and MARGIN are for tests.
set -euo pipefail
repo=${CARRY_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$repo"
src=${SRC:-../shared/data/re-arc/re_arc.npz.xz}
limit=${LIMIT:-67108864}
margin=${MARGIN:-400000}
[ -f "$src" ] || { echo "carry_parts: no RE-ARC at $src" >&2; exit 1; }
[ -d .whl ] || { echo "carry_parts: no .whl/ (run scripts/device_wheels.sh first)" >&2; exit 1; }
size() { if [ -e "$1" ]; then stat -c %s "$1"; else echo 0; fi; }
# what every call carries: tracked and untracked-not-ignored files, as they are in the working tree now (a tracked
# file deleted there is not carried)
sizes=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true)
tree=$(awk '{s += $1} END {print s + 0}' <<<"$sizes")
whl=0
for f in .whl/*; do whl=$((whl + $(size "$f"))); done
room=$((limit - margin - tree))
first=$((room - whl))
[ "$first" -gt 0 ] || { echo "carry_parts: the tree ($tree bytes) and the wheels ($whl) leave no room under $limit" >&2; exit 1; }
total=$(size "$src")
[ "$total" -gt 0 ] || { echo "carry_parts: $src is empty" >&2; exit 1; }
# the stash joins the parts in name order (rearc.part00, 01, ...): two digits
[ $(( (total - first + room - 1) / room + 1 )) -le 99 ] \
    || { echo "carry_parts: a call's room ($room bytes) would cut $src into more than 99 parts" >&2; exit 1; }
rm -rf .carry[0-9]*
# the first part rides with the wheels; each later one fills a call of its own
n=1 offset=0 chunk=$first
while [ "$offset" -lt "$total" ]; do
    mkdir -p ".carry$n"
    part=$(printf '.carry%d/rearc.part%02d' "$n" "$((n - 1))")
    dd if="$src" of="$part" iflag=skip_bytes,count_bytes skip="$offset" count="$chunk" bs=1M status=none
    offset=$((offset + $(size "$part")))
    n=$((n + 1)) chunk=$room
done
last=$((n - 1))
echo "tree $tree bytes, wheels $whl, room a call $room: RE-ARC ($total bytes) in $last parts" >&2
if [ "$last" -eq 1 ]; then
    echo "bash scripts/gpu_stash.sh .whl .carry1 >/dev/null 2>&1; JOB   # carry: .whl, .carry1"
    exit 0
fi
echo "bash scripts/gpu_stash.sh .whl .carry1                  # carry: .whl, .carry1"
for i in $(seq 2 $((last - 1))); do
    echo "bash scripts/gpu_stash.sh .carry$i                       # carry: .carry$i"
done
echo "bash scripts/gpu_stash.sh .carry$last >/dev/null 2>&1; JOB   # carry: .carry$last"
