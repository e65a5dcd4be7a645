#!/usr/bin/env bash
# Installs what lemon's build and tests need beyond Go's module proxy: Debian packages for the
# reference checks (Pillow, numpy, scikit-learn), Chromium for the report's browser test, Node's
# npm to fetch the CLIP vocabulary and the ONNX Runtime library, and the test photos.
# Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=()
# python3-torch, python3-onnx and python3-regex run the export recipe (deploy/export) in the
# Go-vs-PyTorch embedding equivalence test.
for pkg in make python3-pil python3-numpy python3-sklearn python3-torch python3-onnx python3-regex; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# docker-compose (v1, Python) validates deploy/flink/compose.yaml in the tests; no Docker engine
# is needed for that, so its recommendation (docker.io) is left out.
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "setup: installing docker-compose"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

# Chromium (headless) renders lemon report's page in its test, to check that the thumbnails
# decode in a real browser.
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

scripts/fetch-clip-vocab.sh >/dev/null
scripts/fetch-test-photos.sh >/dev/null
scripts/fetch-onnxruntime.sh >/dev/null
scripts/fetch-wordnet.sh >/dev/null
echo "setup: done"
