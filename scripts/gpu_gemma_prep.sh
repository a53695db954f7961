#!/usr/bin/env bash
# On the GPU machine: join the xz parts that scripts/gemma_to_device.sh made, check the GGUF's sha256, and
# convert it to models-local/gemma3-270m. The conversion is deterministic, so the folder's weights and
# tokenizer must hash as they do on the machine that made the parts (checked below).
set -euo pipefail
export PYTHONPATH=src:/tmp/site
if [ -f models-local/gemma3-270m/model.safetensors ]; then echo "models-local/gemma3-270m already there"; exit 0; fi
# Every part, in order (two-digit suffixes); a missing one fails the sha256 check below.
cat xfer/gemma3-270m-q4_k_m.gguf.xz.part-?? | xz -d -T0 > /tmp/gemma.gguf
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  /tmp/gemma.gguf" | sha256sum -c
python3 scripts/convert_gguf.py --gguf /tmp/gemma.gguf --out models-local/gemma3-270m --no-check
sha256sum -c <<SUMS
d9df495ac8121f17441f73a45548b59cd75068fbd5e57ed0883c9e4a443fe908  models-local/gemma3-270m/model.safetensors
dee31c211242a93d3dffc748b5d5d24db423cc8ab2ff61de52db34231548d604  models-local/gemma3-270m/tokenizer.json
SUMS
