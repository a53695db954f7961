#!/usr/bin/env bash
# gpu_campaign.sh's last step: the runs a ship decision needs beyond the 400 tasks with TTT (ARC-AGI-2's 120
# evaluation tasks, and the 400 without TTT), made only where the stretch's model scored more than the shipped one
# on all of the shipped one's tasks, paired (a partial evaluation decides nothing). A stretch that did not gain
# leaves them out and gives their GPU-minutes back: ARC-AGI-2 is reported for every shipped change, and only for
# those. A `script` step of gpu_eval.sh, whose LAUNCH (torchrun under NPROC) and EVAL_FLAGS it evaluates with.
# Where the comparison runs, its last line is the decision by the campaign's ship rule (`testtime ship`):
# `ship checks: ship` where the stretch is better on the 400 and neither check shows it worse than the shipped
# model's own checks (a one-sided sign test of its losses there below 0.1), else `ship checks: hold (...)` naming
# what held it (`hold (400)` where the checks were left out).
#   bash scripts/campaign_ship_checks.sh MODEL [ARCHIVE:RUN]
# ARCHIVE:RUN: the stretch's 400 at one adapter a task were evaluated in an earlier session and are recorded as RUN in
# the tracked ARCHIVE (a session whose budget fitted the evaluation but not the checks, h100-campaign-2026-12-06g.md):
# they stand for runs/campaign-eval, and the checks run on MODEL (the stretch standing in, scripts/campaign_from.sh).
# REF, REF_RUN, REF_A2 and REF_ICL: the shipped model's records (the 400 at one adapter a task, ARC-AGI-2's 120,
# the 400 without TTT: runs in the tracked archive REF, or ARCHIVE:RUN for the checks), by default those
# results/shipped.env points at, which a ship moves.
# FORCE=1 runs the checks whatever the comparison says, but for runs of different adapters a task, which are
# refused: their comparison says nothing of the weights.
set -uo pipefail
MODEL=${1:?the model folder of the stretch}; RECORDS=${2:-}
# shellcheck source=results/shipped.env
. "$(dirname "$0")/../results/shipped.env" || { echo "ship checks: no results/shipped.env"; exit 1; }
REF=${REF:-$SHIPPED_ARCHIVE} REF_RUN=${REF_RUN:-$SHIPPED_RUN} REF_A2=${REF_A2:-$SHIPPED_A2} REF_ICL=${REF_ICL:-$SHIPPED_ICL}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unpack() {  # ARCHIVE RUN WHERE: RUN's records out of a tracked ARCHIVE, into $tmp/WHERE/RUN
  mkdir -p "$tmp/$3" && tar -xJf "$1" -C "$tmp/$3" "$2/results.jsonl" 2>/dev/null \
    || { echo "ship checks: no $2/results.jsonl in $1"; exit 1; }
}
STRETCH=runs/campaign-eval  # the stretch's 400, evaluated by gpu_campaign.sh's step before this one
if [ -n "$RECORDS" ]; then  # read where they are: in runs/ they would pass for a later stretch's (and be resumed)
  [[ $RECORDS == *:* ]] || { echo "ship checks: $RECORDS: not ARCHIVE:RUN"; exit 1; }
  unpack "${RECORDS%:*}" "${RECORDS##*:}" stretch
  STRETCH=$tmp/stretch/${RECORDS##*:}
fi
[ -f "$STRETCH/results.jsonl" ] || { echo "ship checks: $STRETCH has no results"; exit 1; }
unpack "$REF" "$REF_RUN" shipped
verdict=$(python3 -m testtime.cli ship "$tmp/shipped/$REF_RUN" "$STRETCH" 2>"$tmp/why") \
  || { echo "ship checks: the comparison failed: $(tail -1 "$tmp/why" | sed "s/^error: //")"; exit 1; }
echo "ship checks: $verdict"
# What the stretch and the shipped model make together (`testtime combine`: each run's first attempt, then the
# seconds), read from the records: checkpoints of the campaign solve different tasks (h100-campaign-2026-12-07d.md).
python3 -m testtime.cli combine "$STRETCH" "$tmp/shipped/$REF_RUN" --out "$tmp/both" --tasks arc1/eval 2>&1 | tail -1 \
  | sed "s|; wrote .*||; s|^|ship checks: with the shipped model's run, |"
if [[ $verdict != better:* && ${FORCE:-0} != 1 ]]; then
  echo "ship checks: left out (ARC-AGI-2 and the run without TTT are for a model that ships; FORCE=1 runs them)"
  echo "ship checks: hold (400)"
  exit 0
fi
# the guards' records (RUN in REF, or ARCHIVE:RUN) before any GPU-minute is spent on the checks they judge
for ref in "$REF_A2" "$REF_ICL"; do
  if [[ $ref == *:* ]]; then unpack "${ref%:*}" "${ref##*:}" shipped; else unpack "$REF" "$ref" shipped; fi
done
A2=$tmp/shipped/${REF_A2##*:} ICL=$tmp/shipped/${REF_ICL##*:}
LAUNCH=${LAUNCH:-python3 -m testtime.cli}
# ARC-AGI-2 at one adapter a task, as the stretch's 400 and the shipped model's records (gpu_campaign.sh says why)
for spec in "campaign-arc2:--tasks arc2/eval --adapters 1" "campaign-icl:--tasks arc1/eval --no-ttt"; do
  name=${spec%%:*}; mkdir -p "runs/$name"
  # shellcheck disable=SC2086
  $LAUNCH evaluate --out "runs/$name" ${spec#*:} --model "$MODEL" ${EVAL_FLAGS:-} 2>&1 | tr '\r' '\n' \
    | tee -a "runs/$name/eval.log" | grep -v "it/s\]$\|task/s\]$\|s/task\]$" | tail -8
done
# The decision (`testtime ship`: the 400 and both guards), its last line `ship` or `hold (...)`; a check that
# failed to evaluate has no records to compare, and holds the ship too. A hold is a result, not a failure: exit 0.
# Its first line, the 400's verdict, is printed above already.
python3 -m testtime.cli ship "$tmp/shipped/$REF_RUN" "$STRETCH" \
  --guard "arc2:$A2:runs/campaign-arc2" --guard "no-ttt:$ICL:runs/campaign-icl" \
  2>"$tmp/why" | tail -n +2 | sed 's/^/ship checks: /' \
  || echo "ship checks: hold (the guards did not compare: $(tail -1 "$tmp/why" | sed "s/^error: //"))"
