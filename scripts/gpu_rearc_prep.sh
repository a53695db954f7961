#!/usr/bin/env bash
# GPU-machine preparation for pretraining on RE-ARC: the device gets the working tree but not ../shared,
# so the RE-ARC file travels in the ignored .carry/ folder (carry: [".carry", ".whl"]) and lands where the
# configs expect it (../shared/data/re-arc/, as on the project's own machines).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=../shared/data/re-arc
if [ ! -f "$dest/re_arc.npz.xz" ]; then
    mkdir -p "$dest"
    cp .carry/re_arc.npz.xz "$dest/"
fi
sha256sum "$dest/re_arc.npz.xz"
