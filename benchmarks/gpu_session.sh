#!/usr/bin/env bash
# The GPU checks and benchmarks of issues 5/6, in phases that each fit one 10-minute device call.
#
#   bash benchmarks/gpu_session.sh PHASE [OUT_DIR]
#
# Phases (run in this order; each builds the extension first, since a device call may start on a fresh
# machine, and writes at most 6 files — logs and results — under OUT_DIR, default $OUT or ./gpu-out):
#   check        build csrc/ with CUDA in place, run the kernel/backend/engine tests compiled on the GPU
#                (TRITON_INTERPRET=0), including CUDA-graph capture == eager and no host sync in the K-pass loop
#   small        benchmarks on the synthetic and mini-8L shapes (all backends, triton included)
#   dream-kern   per-kernel timings on the Dream-7B shape (random bf16 weights)
#   dream-e2e    Dream-7B end to end at B = 1 and the interleaved ADJUST / restricted / parallel pairs (headline)
#   llada        LLaDA-8B kernels and its interleaved pairs
#
# Needs only what the device image has (torch, triton, nvcc, pytest, pytest-benchmark, scipy, transformers):
# nothing is installed; the package runs from the checkout (PYTHONPATH=.).
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: gpu_session.sh check|small|dream-kern|dream-e2e|llada [OUT_DIR]}
out=${2:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
py=${PYTHON:-python3}

build() {  # the compiled op with its CUDA kernel, next to the sources (adjust_kernels/_C*.so)
  ADJUST_FORCE_CUDA_BUILD=1 "$py" setup.py -q build_ext --inplace > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
  "$py" -c "from adjust_kernels.select_sample import is_available as a; assert a('cuda'), 'no CUDA kernel in _C'"
}

bench() {  # $1: shapes, $2: the results tag folder; the rest: pytest arguments
  local shapes=$1; shift
  ADJUST_BENCH_SHAPES=$shapes "$py" -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
    --bench-results "$out" "$@" 2>&1 | tee "$out/bench-${shapes//,/+}.log"
}

case $phase in
  check)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    build
    "$py" -m pytest -q -p no:cacheprovider \
      tests/test_kernel_*.py tests/test_select_sample.py tests/test_backends.py tests/test_candidates.py \
      tests/test_context_cache.py tests/test_generate_exactness.py tests/test_shipped_assets.py \
      2>&1 | tee "$out/tests.log"
    ;;
  small) build; bench synthetic,mini-8L --benchmark-min-rounds 3 ;;
  dream-kern) build; bench dream7b --benchmark-min-rounds 3 -k "test_kernel" ;;
  dream-e2e) build; bench dream7b --benchmark-min-rounds 1 -k "(test_generate and B1-) or paired" ;;
  llada) build; bench llada8b --benchmark-min-rounds 1 -k "test_kernel or paired" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
