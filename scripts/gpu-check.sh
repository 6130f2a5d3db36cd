#!/bin/sh
# The CUDA checks for a session lent a GPU: one device call, carrying .whl (sh scripts/gpu-wheels.sh first):
#   sh scripts/gpu-check.sh
# The CUDA tests, then the GPU throughput of the shipped default model at 1080p and 2160p; everything goes to
# $OUT/gpu-check.log (runs/gpu-check/ when OUT is unset). Record the figures in BENCHMARKS.md.
set -u
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
{
  nvidia-smi -L
  python3 -m pytest -q -p no:cacheprovider -m cuda tests
  python3 -m streamdehaze.bench --sizes 1080p 2160p --frames 200 --device cuda
} 2>&1 | tee "$OUT/gpu-check.log"
