#!/usr/bin/env bash
# Keep carried files on the GPU machine for a later call: copies every file of the carried folders named as
# arguments (say .carry1) to /root/stash, which outlives the call while the machine stays warm (a carried path is
# replaced at every call). For data larger than one call can carry beside the tracked tree (RE-ARC beside the
# shipped model): split it here (`split -n 3 -d FILE part`), carry one part a call, join them in the last call.
#
#   bash scripts/gpu_stash.sh .carry1   # then, in the last call: cat /root/stash/part* > FILE
# The wheels travel in a call of their own: beside one RE-ARC part they take the tracked tree (57 MiB) past 64 MiB.
# Stashed wheels (*.whl) are what gpu_eval.sh and gpu_pretrain_ddp.sh install when no .whl/ was carried.
set -euo pipefail
mkdir -p /root/stash
for dir in "$@"; do
    cp -v "$dir"/* /root/stash/
done
ls -la /root/stash
# What the stash holds now: a machine that was not warm at this call (a refused or lost start) has lost the earlier
# parts, which this line shows at once, before a long job finds out.
echo "stash: $(ls /root/stash/rearc.part* 2>/dev/null | wc -l) RE-ARC part(s): $(cd /root/stash && ls rearc.part* 2>/dev/null | tr '\n' ' ')wheels: $(ls /root/stash/*.whl 2>/dev/null | wc -l)"
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'gpus', torch.cuda.device_count(), \
'transformers', transformers.__version__, 'peft', peft.__version__)"
