#!/usr/bin/env bash
# Start the next pretraining stretch (scripts/gpu_campaign.sh) from an unshipped stretch's model, so that the
# campaign's stretches add up across sessions. A device call carries the working tree, which has room for one
# model only (64 MiB a call, the shipped model's 51 MB among them): so the stretch's weights stand in for the
# shipped ones in models/testtime-grid-base, in the working tree alone, for the GPU calls, and are put back after.
#   bash scripts/campaign_from.sh models-local/campaign/DATE-seedS/model    # before the GPU calls
#   bash scripts/campaign_from.sh --restore                                  # after them (git checkout of the folder)
# Nothing here is committed: a stretch ships only through the campaign's ship checks and its own commit.
set -euo pipefail
cd "${REPO:-$(dirname "$0")/..}"  # REPO: another checkout (the tests use one of their own)
DEST=models/testtime-grid-base
if [ "${1:-}" = "--restore" ]; then
  git checkout -- "$DEST" && git clean -fdq -- "$DEST"
  git diff --quiet -- "$DEST" && echo "$DEST: the shipped model again"
  exit 0
fi
SRC=${1:?usage: campaign_from.sh MODEL_DIR | --restore}
[ -f "$SRC/config.json" ] || { echo "error: $SRC: no config.json (not an exported model folder)" >&2; exit 1; }
ls "$SRC"/*.safetensors >/dev/null 2>&1 || { echo "error: $SRC: no *.safetensors" >&2; exit 1; }
git diff --quiet -- "$DEST" || { echo "error: $DEST has changes already: --restore first" >&2; exit 1; }
# the same architecture, or the shipped tokenizer and model card would describe another model
python3 - "$SRC/config.json" "$DEST/config.json" <<'PY'
import json, sys
keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
a, b = (json.load(open(p)) for p in sys.argv[1:])
bad = [k for k in keys if a.get(k) != b.get(k)]
sys.exit(f"error: {sys.argv[1]}: another architecture than the shipped model's ({', '.join(bad)})" if bad else 0)
PY
rm -f "$DEST"/*.safetensors "$DEST"/model.safetensors.index.json
cp "$SRC"/*.safetensors "$DEST"/
[ -f "$SRC/model.safetensors.index.json" ] && cp "$SRC/model.safetensors.index.json" "$DEST"/
cp "$SRC/config.json" "$DEST"/config.json
echo "$DEST: now $SRC's weights, in the working tree only ($(du -cb "$DEST"/*.safetensors | tail -1 | cut -f1) bytes); --restore after the GPU calls"
