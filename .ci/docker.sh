#!/usr/bin/env bash
# The service's container image for CI: docker.io and debootstrap installed when missing, dockerd started when
# none answers, docker/build.sh timed (the image's size reported), tests/container run against the image it
# built, then the images made here removed and a dockerd started here stopped. The Debian base image that
# docker/build.sh makes with debootstrap is kept as a cache for the next run (docker/build.sh makes it again
# when it is missing). Run from the repository root, by .ci/run, with the test suite's virtualenv active.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--- docker: %s (%ss)\n' "$1" "$SECONDS"; }
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

name=aidetect-infer-ci
image=""
dockerd_pid=""
dockerd_log=$(mktemp /tmp/aidetect-dockerd.XXXXXX.log)
cleanup() {
  if [[ -n $image ]]; then
    docker rmi "$image" "$name:latest" >/dev/null 2>&1 || true
    docker image prune --force --filter label=org.opencontainers.image.title=aidetect-infer >/dev/null 2>&1 || true
  fi
  if [[ -n $dockerd_pid ]]; then
    step "stopping the dockerd started here"
    $sudo kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do $sudo kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$dockerd_log"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  step "starting dockerd"
  $sudo dockerd >"$dockerd_log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$dockerd_log" >&2; echo "dockerd did not start" >&2; exit 1; }
fi

if docker image inspect aidetect-infer-base:bookworm >/dev/null 2>&1; then
  step "build (the base image cached from an earlier run)"
else
  step "build (the base image made first, with debootstrap)"
fi
started=$SECONDS
image=$(bash docker/build.sh --name "$name")
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "docker: built $image in $((SECONDS - started)) s, $(((size + 500000) / 1000000)) MB"

step "tests/container against $image"
AIDETECT_DOCKER_IMAGE=$image python -m pytest -q -m slow tests/container
