#!/usr/bin/env bash
# The CUDA path, run for real on a machine with an NVIDIA GPU (one prepared script).
#
#   bash benchmarks/gpu_check.sh [OUT]        # OUT: folder for logs and figures (default gpu-check)
#
# Steps (each timed; a failing step is reported and the others still run):
#   1. the tests that exercise a device with CUDA available: the CUDA-only tests
#      (skipped on CPU machines) and the trainer/executor tests on cuda (-k cuda/device);
#   2. bench_train.py --device cuda and --device cpu (run-it/s; the GPU/CPU ratio);
#   3. bench_train.py --dtype-check --device cuda: the l4 grid in float32 on the GPU
#      against float64 on the CPU (the 1% rule: worst relative deviation of the gap);
#   4. depthaccel reproduce fig3 fig5-right --device cuda in full mode, with timings
#      (hours on a CPU; on a GPU fig5-right's MNIST nets are the point);
# then prints a summary (also written to OUT/summary.txt).
#
# Needs: .venv with a CUDA build of torch (pip install torch --index-url
# https://download.pytorch.org/whl/cu124, then pip install -e '.[dev,ray]') and the data
# (DEPTHACCEL_DATA_DIR or ../shared/data). Not run on the development machine (no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
PY="${PY:-.venv/bin/python}"
DEPTHACCEL="${DEPTHACCEL:-.venv/bin/depthaccel}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is not available to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)); nothing to check" >&2
    exit 2
fi
say "gpu_check $(date -u +%FT%TZ): $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"

step() {  # step NAME LOGFILE COMMAND...
    local name="$1" log="$2"
    shift 2
    local t0=$SECONDS
    "$@" >"$OUT/$log" 2>&1
    local rc=$?
    say "$(printf '%-34s rc=%-3s %6ss  (log: %s)' "$name" "$rc" "$((SECONDS - t0))" "$OUT/$log")"
    return $rc
}

# 1. tests with CUDA available (the CUDA-only ones skip themselves on CPU machines)
step "tests (cuda/device, not slow)" tests.log \
    "$PY" -m pytest -q -n 0 -p no:cacheprovider -k "cuda or device" tests
grep -E "passed|failed|error" "$OUT/tests.log" | tail -1 | sed 's/^/    /' | tee -a "$SUMMARY"

# 2. throughput of the batched trainer, GPU and CPU
step "bench_train --device cuda" bench_cuda.log \
    "$PY" benchmarks/bench_train.py --device cuda --repeats 3 --json "$OUT/bench_cuda.json"
step "bench_train --device cpu" bench_cpu.log \
    "$PY" benchmarks/bench_train.py --device cpu --threads 1 --repeats 3 --json "$OUT/bench_cpu.json"
"$PY" - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    g = json.loads((out / "bench_cuda.json").read_text())
    c = json.loads((out / "bench_cpu.json").read_text())
except (OSError, ValueError) as e:
    print(f"    bench figures missing: {e}")
    sys.exit(0)
for key, what in (("batched_f32_run_iters_per_s", "l4 float32"),
                  ("batched_f64_run_iters_per_s", "l4 float64"),
                  ("gram_f64_run_iters_per_s", "l2 Gram float64")):
    print(f"    {what:16s} cuda {g[key]:>14,.0f} run-it/s   cpu (1 thread) {c[key]:>12,.0f}"
          f"   ratio {g[key] / c[key]:6.1f}x")
EOF

# 3. float32 on the GPU vs float64: within 1%?
step "dtype check l4 float32 on cuda" dtype_check.log \
    "$PY" benchmarks/bench_train.py --dtype-check --device cuda --check-iters 100000 \
    --json "$OUT/dtype_check.json"
"$PY" - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
try:
    d = json.loads((Path(sys.argv[1]) / "dtype_check.json").read_text())
except (OSError, ValueError) as e:
    print(f"    dtype check missing: {e}")
    sys.exit(0)
w = d["dtype_check_worst_rel_dev"]
print(f"    float32 on cuda vs float64: worst relative gap deviation {w:.3e} over "
      f"{d['dtype_check_iters']} iterations: {'within' if w <= 0.01 else 'OUTSIDE'} the 1% rule")
EOF

# 4. full-mode experiments on the GPU, with timings
step "reproduce fig3 --device cuda (full)" reproduce_fig3.log \
    "$DEPTHACCEL" reproduce fig3 --device cuda --out "$OUT/results" --no-progress
step "reproduce fig5-right --device cuda" reproduce_fig5_right.log \
    "$DEPTHACCEL" reproduce fig5-right --device cuda --out "$OUT/results" --no-progress
grep -hE "^\[[0-9]+/[0-9]+\] .*: (done|ERROR)" "$OUT"/reproduce_*.log | sed 's/^/    /' | tee -a "$SUMMARY"

echo
echo "summary ($SUMMARY):"
cat "$SUMMARY"
