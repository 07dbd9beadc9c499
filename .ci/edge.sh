#!/usr/bin/env bash
# The C++ edge runner for CI: system packages, ONNX Runtime, and the release build in build/edge.
# Idempotent: packages already installed, ONNX Runtime already fetched and an up-to-date build are left alone.
#
#   bash .ci/edge.sh              packages + ONNX Runtime + build/edge (Release); tests/edge then use it
#   bash .ci/edge.sh --sanitize   the same, then build/edge-asan (ASan + UBSan) and tests/edge run against it
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
case "${1:-}" in
  "") ;;
  --sanitize) sanitize=1 ;;
  *) echo "usage: $0 [--sanitize]" >&2; exit 2 ;;
esac

packages=(cmake make g++ pkg-config libutf8proc-dev nlohmann-json3-dev libssl-dev debian-archive-keyring)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

bash edge/fetch_onnxruntime.sh

jobs="$(nproc)"
build() {
  local dir="$1"
  shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S . -B "$dir" "$@" >/dev/null
  fi
  cmake --build "$dir" -j "$jobs"
}

build build/edge -DCMAKE_BUILD_TYPE=Release

if ((sanitize)); then
  build build/edge-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIDETECT_SANITIZE=ON
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  AIDETECT_EDGE_BIN="$PWD/build/edge-asan/aidetect-edge" python -m pytest -q tests/edge -m "not slow"
fi
