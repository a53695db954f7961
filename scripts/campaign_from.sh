#!/usr/bin/env bash
# Start the next pretraining stretch (scripts/gpu_campaign.sh) from an unshipped stretch's model, so that the
# campaign's stretches add up across sessions. A device call carries the working tree, which has room for one
# model only (64 MiB a call, the shipped model's 51 MB among them): so the stretch's weights stand in for the
# shipped ones in models/testtime-grid-base, in the working tree alone, for the GPU calls, and are put back after.
#   bash scripts/campaign_from.sh models-local/campaign/DATE-seedS/model    # before the GPU calls
#   bash scripts/campaign_from.sh --restore                                  # after ALL RUNS DONE
#   bash scripts/campaign_from.sh REV:candidates/DATE-seedS   # a stretch parked in git history (below)
#   bash scripts/campaign_from.sh --none      # no model: for jobs that pretrain from scratch (gpu_arch.sh, benchpre)
# A stretch kept in models-local/ is lost where the next session's checkout is fresh (2026-12-06's seventh stretch):
# one awaiting its ship checks is parked in history instead, added under candidates/ by one commit and removed by
# the next, so that no call carries it (the tree has room for one model) while a clone still holds it; REV is the
# commit that added it. Where it ships, its files are the same blobs again: git stores them once.
# --none takes the shipped weights out of the working tree (git has them), so the calls carry RE-ARC and the wheels
# in one part instead of five (2026-12-07: a tree of 8.4 MB against 59.9); run carry_parts.sh after it, and commit
# by path until --restore, since `git commit -a` would commit the weights' removal.
# The folder then holds an untracked STAND_IN file naming the stretch (gpu_campaign.sh PRETRAIN=0 asks for it and
# prints it; --restore removes it). Nothing here is committed: a stretch ships only through the campaign's ship
# checks and its own commit. While a stand-in is in place, this checkout's default model is the stretch.
set -euo pipefail
SRC=${1:?usage: campaign_from.sh MODEL_DIR | REV:PATH | --restore | --none}
# Decided here, before the cd below: a folder that exists (its name may hold a ':') is the caller's; else a name
# with a ':' is REV:PATH.
PARKED=0
case $SRC in
  --restore|--none) ;;
  *) if [[ $SRC == *:* && ! -e $SRC ]]; then PARKED=1; else SRC=$(realpath -m "$SRC"); fi ;;
esac
NAME=$SRC  # what the messages and STAND_IN name
cd "${CAMPAIGN_REPO:-$(dirname "$0")/..}"  # CAMPAIGN_REPO: another checkout (the tests use one of their own)
DEST=models/testtime-grid-base
if [ "$PARKED" = 1 ]; then  # a folder of a commit, unpacked where the tree does not carry it
  rev=${SRC%%:*} path=${SRC#*:}
  commit=$(git rev-parse -q --verify "$rev^{commit}") \
    || { echo "error: $SRC: no commit $rev in this clone (a shallow clone, or history rewritten?)" >&2; exit 1; }
  NAME=$(git rev-parse --short "$commit"):$path  # a name that later commits do not move (HEAD~6 would)
  parked=$(mktemp -d)
  trap 'rm -rf "$parked"' EXIT
  git archive "$commit" "$path" 2>/dev/null | tar -x -C "$parked" 2>/dev/null && [ -d "$parked/$path" ] \
    || { echo "error: $SRC: no folder $path in commit $rev" >&2; exit 1; }
  SRC=$parked/$path
fi
clean() {  # the folder as committed: nothing changed, staged or untracked (compared with HEAD, not the index)
  git diff --quiet HEAD -- "$DEST" && [ -z "$(git status --porcelain -- "$DEST")" ]
}
if [ "$SRC" = --restore ]; then
  git restore --source=HEAD --staged --worktree -- "$DEST"  # staged new files too, which checkout would keep
  git clean -fdq -- "$DEST"
  clean || { echo "error: $DEST still differs from HEAD after the restore" >&2; exit 1; }
  echo "$DEST: the shipped model again"
  exit 0
fi
if [ "$SRC" = --none ]; then
  clean || { echo "error: $DEST differs from HEAD already (a stand-in, or staged changes): --restore first" >&2; exit 1; }
  rm -f "$DEST"/*.safetensors "$DEST"/model.safetensors.index.json
  echo "weights out by campaign_from.sh --none; bash scripts/campaign_from.sh --restore" >"$DEST/NO_WEIGHTS"
  echo "$DEST: no weights in the working tree (the calls carry none); --restore after the GPU calls"
  exit 0
fi
[ -f "$SRC/config.json" ] || { echo "error: $NAME: no config.json (not an exported model folder)" >&2; exit 1; }
ls "$SRC"/*.safetensors >/dev/null 2>&1 || { echo "error: $NAME: no *.safetensors" >&2; exit 1; }
[ "$SRC" != "$(realpath "$DEST")" ] || { echo "error: $NAME is the shipped model's own folder" >&2; exit 1; }
clean || { echo "error: $DEST differs from HEAD already (a stand-in, or staged changes): --restore first" >&2; exit 1; }
# the same architecture, or the shipped tokenizer and model card would describe another model
python3 - "$SRC/config.json" "$DEST/config.json" "$NAME" <<'PY'
import json, sys
keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
a, b = (json.load(open(p)) for p in sys.argv[1:3])
bad = [k for k in keys if a.get(k) != b.get(k)]
sys.exit(f"error: {sys.argv[3]}: another architecture than the shipped model's ({', '.join(bad)})" if bad else 0)
PY
rm -f "$DEST"/*.safetensors "$DEST"/model.safetensors.index.json
cp "$SRC"/*.safetensors "$SRC/config.json" "$DEST"/
if [ -f "$SRC/model.safetensors.index.json" ]; then cp "$SRC/model.safetensors.index.json" "$DEST"/; fi
echo "$NAME $(cat "$SRC"/*.safetensors | sha256sum | cut -c1-16)" >"$DEST/STAND_IN"
size=$(du -cb "$DEST"/*.safetensors | tail -1 | cut -f1)
echo "$DEST: now $NAME's weights, in the working tree only ($size bytes); --restore after the GPU calls"
