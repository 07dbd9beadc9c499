#!/usr/bin/env bash
# Builds the HTTP service's container image from this checkout: NAME:<version> and NAME:latest.
#
#   docker/build.sh [--base IMAGE] [--name NAME]
#
#   --base IMAGE  the image to build on: a Debian-like system with python3 and its venv module on PATH, for
#                 example python:3.11-slim where a registry is reachable. Default aidetect-infer-base:bookworm,
#                 which this script makes from Debian's own packages (debootstrap, as root) when docker lacks it.
#   --name NAME   the image's name (default aidetect-infer).
#
# The wheels (this project and its [serve] extra) are built here, on the host, by pip into docker/wheels/, so
# the container needs no package index: it installs them with pip install --no-index. $PYTHON (default python3)
# is the interpreter whose pip builds them; $DEBIAN_MIRROR (default http://deb.debian.org/debian) and
# $DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security) are where the base's packages come from.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_BASE=aidetect-infer-base:bookworm
base=$DEFAULT_BASE
name=aidetect-infer
while (($#)); do
  case $1 in
    --base) base=${2:?--base needs an image}; shift 2 ;;
    --name) name=${2:?--name needs a name}; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0" | cut -c3-; exit 0 ;;
    *) echo "docker/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi  # debootstrap and chroot need root
say() { printf 'docker/build.sh: %s\n' "$*" >&2; }

# Debian bookworm's minimal system with python3, as an image: the equivalent of python:3.11-slim without a
# registry. Documentation, translations and package lists are left out, as the slim images do.
make_base() {
  command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap"; exit 1; }
  local rootfs mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
  rootfs=$(mktemp -d /tmp/aidetect-rootfs.XXXXXX)
  # --one-file-system: never descend into a /proc, /sys or /dev that a failed debootstrap left mounted
  trap '$sudo umount -R -l "'"$rootfs"'"/{proc,sys,dev} 2>/dev/null || true
        $sudo rm -rf --one-file-system "'"$rootfs"'"' EXIT
  say "making $DEFAULT_BASE with debootstrap (a few minutes)"
  $sudo debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    say "debootstrap failed (log: $rootfs.log)"
    exit 1
  }
  rm -f "$rootfs.log"
  $sudo tee "$rootfs"/etc/dpkg/dpkg.cfg.d/slim >/dev/null <<'CFG'
# packages installed later leave out what the base image leaves out
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  # debootstrap installs the release as it was published; the security archive and the point-release updates
  # bring it up to date (and stay in sources.list for images built on this one)
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" | $sudo tee "$rootfs"/etc/apt/sources.list >/dev/null
  $sudo chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' >/dev/null
  $sudo chroot "$rootfs" apt-get clean
  $sudo rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/* "$rootfs"/var/log/* "$rootfs"/tmp/* \
    "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
  $sudo find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
  $sudo find "$rootfs"/usr/share/doc -type d -empty -delete
  $sudo tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$DEFAULT_BASE" >/dev/null
}

if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [[ $base != "$DEFAULT_BASE" ]]; then
    docker pull "$base"
  else
    make_base
  fi
fi

python_of() { "$@" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
image_python=$(python_of docker run --rm --network none --entrypoint python3 "$base")
host_python=$(python_of "$PYTHON")

say "wheels for Python $image_python into docker/wheels/"
rm -rf docker/wheels
if [[ $image_python == "$host_python" ]]; then
  "$PYTHON" -m pip wheel -q -w docker/wheels '.[serve]'
else
  # Another Python in the image than here: this project's wheel, then its dependencies' binary wheels for
  # the image's Python.
  "$PYTHON" -m pip wheel -q --no-deps -w docker/wheels .
  own=$(ls docker/wheels/aidetect_infer-*.whl)
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$image_python" \
    --platform "manylinux_2_28_$(uname -m)" --platform "manylinux_2_17_$(uname -m)" \
    --platform "manylinux2014_$(uname -m)" --platform "manylinux1_$(uname -m)" \
    -d docker/wheels "$own[serve]"
fi
own=$(ls docker/wheels/aidetect_infer-*.whl)
version=$(basename "$own" | cut -d- -f2)

say "building $name:$version on $base"
docker build --build-arg "BASE=$base" --build-arg "VERSION=$version" -t "$name:$version" -t "$name:latest" \
  -f docker/Dockerfile docker >&2
size=$(docker image inspect --format '{{.Size}}' "$name:$version")
say "built $name:$version and $name:latest ($(((size + 500000) / 1000000)) MB)"
echo "$name:$version"
