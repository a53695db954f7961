#!/usr/bin/env bash
# Join RE-ARC from the parts earlier calls stashed on the GPU machine (scripts/gpu_stash.sh .carryN) and put it where
# the configs read it; checked against the sha256 in ../shared/data/re-arc/README.md. A step of gpu_eval.sh:
#   bash scripts/gpu_eval.sh rearc:scripts/gpu_rearc_join.sh ...   (as `script:` steps are named: script-rearc)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=../shared/data/re-arc/re_arc.npz.xz
want=7eaa6d5a796e12600563d7ed9acaca9ed27e0662ba510b98f8006869cf3ff453
if [ ! -f "$dest" ] || [ "$(sha256sum "$dest" | cut -d' ' -f1)" != "$want" ]; then
    mkdir -p "$(dirname "$dest")"
    cat /root/stash/rearc.part* > "$dest"
fi
[ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ] || { echo "RE-ARC: sha256 mismatch"; ls -la /root/stash; exit 1; }
echo "RE-ARC ready: $dest"
