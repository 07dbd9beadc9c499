#!/usr/bin/env bash
# Prepare ONNX Runtime for building the edge runner on this machine (Debian 12, x86_64 or aarch64):
#
#   edge/third_party/onnxruntime/include/   C and C++ API headers (Debian 13's libonnxruntime-dev, ORT 1.21)
#   edge/third_party/onnxruntime/lib/       libonnxruntime.so.<ORT_VERSION> from the PyPI onnxruntime wheel,
#                                           with the symlinks libonnxruntime.so.1 (its SONAME) and .so
#
# the layout of ONNX Runtime's release archives, so CMake takes it as -DONNXRUNTIME_ROOT=... as well.
# Headers older than the library work (the C API is backward compatible); newer ones do not.
#
# ORT_VERSION is the one place the library version is pinned: the built binary is tied to it.
# Idempotent: a second run with the same pin does nothing. Nothing is installed into the system: the Debian
# package is fetched with a private apt configuration and unpacked with `dpkg -x` into a build folder.
#
# Environment: ORT_VERSION (default below), AIDETECT_ORT_DIR (output root), DEBIAN_MIRROR, PYTHON.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.32.0}"
HEADERS_PACKAGE="libonnxruntime-dev"
HEADERS_SUITE="trixie"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"
PYTHON="${PYTHON:-python3}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${AIDETECT_ORT_DIR:-$here/third_party/onnxruntime}"
work="$here/third_party/.cache"
stamp="$root/VERSION"

say() { echo "fetch_onnxruntime: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ -f "$stamp" && "$(cat "$stamp")" == "$ORT_VERSION" && -e "$root/lib/libonnxruntime.so" \
      && -f "$root/include/onnxruntime_cxx_api.h" ]]; then
    say "ONNX Runtime $ORT_VERSION already in $root"
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: on a non-Debian system use an ONNX Runtime release archive (see edge/README.md)"
command -v dpkg >/dev/null || die "dpkg not found"
[[ -f "$KEYRING" ]] || die "$KEYRING missing: apt-get install debian-archive-keyring"

mkdir -p "$work"
staging="$(mktemp -d "$work/staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

fetch_headers() {
    local apt="$work/apt" arch
    arch="$(dpkg --print-architecture)"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb [signed-by=$KEYRING] $DEBIAN_MIRROR $HEADERS_SUITE main" >"$apt/sources.list"
    local opts=(
        -o "Dir::Etc::sourcelist=$apt/sources.list"
        -o "Dir::Etc::sourceparts=/nonexistent"
        -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache"
        -o "APT::Sandbox::User=root"
        -o "APT::Architecture=$arch"
        -o "Debug::NoLocking=1"
    )
    local deb
    deb="$(find "$work" -maxdepth 1 -name "${HEADERS_PACKAGE}_*_${arch}.deb" | head -n 1)"
    if [[ -z "$deb" ]]; then
        say "downloading $HEADERS_PACKAGE from Debian $HEADERS_SUITE (private apt configuration)"
        apt-get "${opts[@]}" -qq update >&2
        (cd "$work" && apt-get "${opts[@]}" -qq download "$HEADERS_PACKAGE" >&2)
        deb="$(find "$work" -maxdepth 1 -name "${HEADERS_PACKAGE}_*_${arch}.deb" | head -n 1)"
        [[ -n "$deb" ]] || die "apt-get download $HEADERS_PACKAGE produced no .deb"
    fi
    dpkg -x "$deb" "$staging/deb"
    [[ -f "$staging/deb/usr/include/onnxruntime/onnxruntime_cxx_api.h" ]] \
        || die "$deb holds no usr/include/onnxruntime/onnxruntime_cxx_api.h"
    mkdir -p "$staging/root/include"
    cp -R "$staging/deb/usr/include/onnxruntime/." "$staging/root/include/"
}

fetch_library() {
    local wheel_dir="$work/wheel-$ORT_VERSION" wheel
    mkdir -p "$wheel_dir"
    wheel="$(find "$wheel_dir" -maxdepth 1 -name "onnxruntime-${ORT_VERSION}-*.whl" | head -n 1)"
    if [[ -z "$wheel" ]]; then
        say "downloading the onnxruntime $ORT_VERSION wheel from PyPI"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheel_dir" \
            "onnxruntime==$ORT_VERSION" >&2
        wheel="$(find "$wheel_dir" -maxdepth 1 -name "onnxruntime-${ORT_VERSION}-*.whl" | head -n 1)"
        [[ -n "$wheel" ]] || die "pip download produced no onnxruntime $ORT_VERSION wheel"
    fi
    mkdir -p "$staging/root/lib"
    "$PYTHON" - "$wheel" "$staging/root/lib" "$ORT_VERSION" <<'PY'
import shutil, sys, zipfile
from pathlib import Path

wheel, out, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
wanted = {f"onnxruntime/capi/libonnxruntime.so.{version}", "onnxruntime/capi/libonnxruntime_providers_shared.so"}
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n in wanted]
    if f"onnxruntime/capi/libonnxruntime.so.{version}" not in names:
        sys.exit(f"{wheel}: no onnxruntime/capi/libonnxruntime.so.{version} inside")
    for name in names:
        target = out / Path(name).name
        with archive.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        target.chmod(0o755)
PY
    ln -sf "libonnxruntime.so.$ORT_VERSION" "$staging/root/lib/libonnxruntime.so.1"
    ln -sf "libonnxruntime.so.1" "$staging/root/lib/libonnxruntime.so"
}

fetch_headers
fetch_library
echo "$ORT_VERSION" >"$staging/root/VERSION"
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$staging/root" "$root"
say "ONNX Runtime $ORT_VERSION ready in $root (headers: $HEADERS_PACKAGE from Debian $HEADERS_SUITE)"
