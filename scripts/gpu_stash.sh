#!/usr/bin/env bash
# Keep carried files on the GPU machine for a later call: copies every file of the carried folders named as
# arguments to /root/stash, which outlives the call while the machine stays warm (a carried path is replaced at
# every call). Data larger than one call can carry beside the tracked tree travels in parts, one a call.
#
# Each call carries the working tree (58.4 MB with the shipped model on 2026-12-06, once the older results archives
# left it for git history: results/ARCHIVES.md) and at most 64 MiB in all, so the
# wheels (4.9 MB, scripts/device_wheels.sh) and, for the GPU jobs that pretrain (gpu_arch.sh, gpu_gen.sh,
# gpu_campaign.sh), RE-ARC (22.9 MB) travel in parts. `bash scripts/carry_parts.sh` (`--wheels` for the wheels
# alone) cuts them to today's tree into .carry1, .carry2, ... and prints the stashing calls (each a `run` of the
# device tool, back to back: the machine goes back after 30 s idle); on 2026-12-06 (the third session) they were
#   bash scripts/gpu_stash.sh .carry1                                         # carry: .carry1 (wheels, part 00)
#   bash scripts/gpu_stash.sh .carry2                                         # carry: .carry2 (part 01)
#   bash scripts/gpu_stash.sh .carry3                                         # carry: .carry3 (part 02)
#   bash scripts/gpu_stash.sh .carry4 >/dev/null 2>&1; JOB                    # carry: .carry4
# where JOB is the job script's own line; gpu_eval.sh joins the parts (scripts/gpu_rearc_join.sh) before the first
# pretraining run or benchmark.
# A refused machine start between two stashing calls loses the stash: the later call says what is missing.
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
