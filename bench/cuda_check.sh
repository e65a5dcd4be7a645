#!/usr/bin/env bash
# bench/cuda_check.sh -- check and time the CUDA neighbour-search backend on a machine with an
# NVIDIA GPU. Needs prebuilt bin/lemon and bin/knn.test (go build -o bin/lemon ./cmd/lemon;
# go test -c -o bin/knn.test ./knn) and finds NVRTC itself (or takes $LEMON_NVRTC_LIB).
# It runs the CUDA-vs-CPU equality tests, then `lemon score` on the same generated data with
# --knn-backend cuda and with the CPU backend, and compares the outputs byte for byte.
# Usage: bench/cuda_check.sh [ROWS] [DIM]     (default 50000 512)
set -euo pipefail
ROWS=${1:-50000}
DIM=${2:-512}
cd "$(dirname "$0")/.."
nvidia-smi -L || true
if [[ -z ${LEMON_NVRTC_LIB:-} ]]; then
  LEMON_NVRTC_LIB=$(find / \( -path /proc -o -path /sys \) -prune -o -name 'libnvrtc.so*' -print 2>/dev/null | grep -v builtins | sort | head -1)
fi
[[ -n $LEMON_NVRTC_LIB ]] || { echo "cuda_check.sh: NVRTC not found; set LEMON_NVRTC_LIB" >&2; exit 1; }
export LEMON_NVRTC_LIB LD_LIBRARY_PATH=$(dirname "$LEMON_NVRTC_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "NVRTC: $LEMON_NVRTC_LIB"
LEMON_TEST_CUDA=1 bin/knn.test -test.run 'TestCUDAMatchesCPU|TestDeviceBackend' -test.v 2>&1 | grep -E '^(=== RUN|--- |ok|PASS|FAIL)|Error|error' | grep -v '^=== RUN' | tail -60
tmp=$(mktemp -d)
bin/lemon dev make-dataset --out "$tmp/data" --rows "$ROWS" --dim "$DIM" --shards 4 --concepts 40 --metadata none >/dev/null
for be in cuda auto; do
  /usr/bin/env time -f "$be: %e s wall, %M KB peak RSS" bin/lemon score --input "$tmp/data" --output "$tmp/out-$be" --k 30 \
    --scores-format csv --emit-neighbours --knn-backend "$be" 2>&1 | grep -E 'search done|lemon: done|wall|rror'
done
for f in $(cd "$tmp/out-auto" && find scores kept rejected -type f | sort); do
  cmp "$tmp/out-auto/$f" "$tmp/out-cuda/$f" && echo "identical: $f"
done
