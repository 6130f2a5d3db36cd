#!/bin/sh
# The CUDA checks for a session lent a GPU (one H100/H200: under 8 minutes, each step with its own limit), as one device call carrying .whl
# (sh scripts/gpu-wheels.sh first, on the development machine):
#   sh scripts/gpu-check.sh
# 1. the CUDA tests (pytest -m cuda);
# 2. single-file throughput of each shipped model (dcp, kanet-t) at 1080p and 2160p (python -m streamdehaze.bench);
# 3. serve's engine with 8 and 32 live-like 1080p cameras at 25 fps (python -m streamdehaze.bench --streams).
# Writes $OUT/gpu-check.log and the JSON report $OUT/gpu-check.json (runs/gpu-check/ when OUT is unset). Each step
# has its own time limit, so a slow step costs its own figures only. Record the figures in BENCHMARKS.md.
# A smoke test on a CPU: PYTHON=.venv/bin/python DEVICE=cpu SIZES=360p STREAMS=2 FRAMES=10 RUN_SECONDS=2 sh scripts/gpu-check.sh
set -u
OUT=${OUT:-runs/gpu-check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1080p 2160p}
STREAMS=${STREAMS:-8 32}
STREAM_SIZE=${STREAM_SIZE:-1080p}
FRAMES=${FRAMES:-200}
RUN_SECONDS=${RUN_SECONDS:-20}  # (not SECONDS: bash's own clock)
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
LOG="$OUT/gpu-check.log"
: > "$LOG"

rm -f "$OUT/steps.jsonl" "$OUT"/bench-*.json "$OUT/streams.json"
{ nvidia-smi -L || echo "no nvidia-smi"; } 2>&1 | tee -a "$LOG"
step() {  # step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, logged; its exit status goes to steps.jsonl
  # (through a file: pipefail is not POSIX, and tee would hide the status)
  name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$LOG"
  start=$(date +%s)
  { timeout "$limit" "$@"; echo $? > "$OUT/.status"; } 2>&1 | tee -a "$LOG"
  echo "{\"step\": \"$name\", \"exit\": $(cat "$OUT/.status"), \"seconds\": $(( $(date +%s) - start ))}" \
    >> "$OUT/steps.jsonl"
}
step cuda-tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests
for model in dcp kanet-t; do
  # shellcheck disable=SC2086  # SIZES is a list
  step "bench-$model" 90 "$PYTHON" -m streamdehaze.bench --sizes $SIZES --frames "$FRAMES" --device "$DEVICE" \
    --model "$model" --json "$OUT/bench-$model.json"
done
# shellcheck disable=SC2086  # STREAMS is a list
step streams 120 "$PYTHON" -m streamdehaze.bench --streams $STREAMS --size "$STREAM_SIZE" --seconds "$RUN_SECONDS" \
  --device "$DEVICE" --model auto --shared-only --json "$OUT/streams.json"
rm -f "$OUT/.status"

"$PYTHON" - "$OUT" <<'EOF'
import json, os, platform, re, subprocess, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError):
    gpu = None
log = (out / "gpu-check.log").read_text()
summary = re.compile(r"^=* *(no tests ran|\d+ (passed|failed|skipped|deselected|error)).* in [\d.]+s")
tests = next((line.strip("= ") for line in log.splitlines() if summary.match(line)), None)
report = {"gpu": gpu, "machine": platform.machine(), "cpus": os.cpu_count(),
          "steps": [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()],
          "cuda_tests": tests, "bench": {m: load(f"bench-{m}.json") for m in ("dcp", "kanet-t")},
          "streams": load("streams.json")}
(out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
print(f"report: {out / 'gpu-check.json'}")
EOF
