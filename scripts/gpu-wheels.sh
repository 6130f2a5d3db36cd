#!/bin/sh
# Wheels the GPU machine lacks (it has Python 3.12 with torch, but no PyAV or kornia, and no network), for
# scripts/gpu-check.sh. Run here, in the repo root; .whl/ is kept out of git by .git/info/exclude.
set -e
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl av==18.1.0 kornia==0.9.0 kornia-rs==0.2.0
du -sh .whl
