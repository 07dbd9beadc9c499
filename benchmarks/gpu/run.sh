#!/usr/bin/env bash
# GPU benchmark of aidetect-infer on a machine with an NVIDIA GPU and no network.
#
#   benchmarks/gpu/run.sh OUTDIR [driver options: --model DIR --checkpoint DIR --texts FILE ...]
#
# 1. installs the project, onnxruntime-gpu, torch and transformers into a fresh virtual environment from the
#    wheels carried in benchmarks/gpu/wheels/ (fill it with `pip download`: see benchmarks/gpu/README.md),
#    removing the CPU onnxruntime that the base install pulls in (the two packages conflict);
# 2. checks that only onnxruntime-gpu is installed and that it offers the CUDA provider;
# 3. runs driver.py: parity of the fp32 and fp16 bundles on CUDA against fp32 on the CPU (256 texts), then
#    pytest-benchmark throughput (batch 1, 16, 64, 256) and latency (128 tokens) for aidetect-fp16 (CUDA,
#    IOBinding), aidetect-fp32 (CUDA) and transformers-pytorch-fp16 on the same GPU.
#
# Writes OUTDIR/benchmark.json (pytest-benchmark), parity.json, summary.json, report.md, run.log and
# nvidia-smi.txt. Exits non-zero when installing, parity or a benchmark fails. Budget: 8 minutes in all.
#
# Environment: WHEELS (default benchmarks/gpu/wheels), PYTHON (default python3), VENV (default
# $TMPDIR/aidetect-gpu-venv), SKIP_INSTALL=1 (use PYTHON as it is), ORT_GPU (default
# "onnxruntime-gpu[cuda,cudnn]": the CUDA and cuDNN libraries from NVIDIA's wheels; plain
# "onnxruntime-gpu" when the machine has them installed), BUDGET_S (default 480).
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# The factory (export/) is not part of the wheel: it is imported from the checkout.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
WHEELS=${WHEELS:-$HERE/wheels}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-${TMPDIR:-/tmp}/aidetect-gpu-venv}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu[cuda,cudnn]}
BUDGET_S=${BUDGET_S:-480}
START=$SECONDS

log() {
  printf '[%4ds] %s\n' "$((SECONDS - START))" "$*" | tee -a "$OUT/run.log"
}

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
  log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo unknown)"
else
  log "nvidia-smi not found: no NVIDIA driver on this machine?"
fi

if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
  PY=$PYTHON
  log "using $PY as it is (SKIP_INSTALL=1)"
else
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    log "no wheels in $WHEELS: fill it with pip download (benchmarks/gpu/README.md)"
    exit 2
  fi
  log "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  PY=$VENV/bin/python
  offline=("$PY" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS")
  log "installing from $WHEELS"
  "${offline[@]}" "${REPO}[gpu]" "$ORT_GPU" torch transformers onnx pytest pytest-benchmark 2>&1 | tee -a "$OUT/run.log"
  # The base install pulls in the CPU onnxruntime; it shares its files with onnxruntime-gpu, so remove it
  # and lay onnxruntime-gpu's files down again.
  "$PY" -m pip uninstall --quiet -y onnxruntime 2>&1 | tee -a "$OUT/run.log"
  "${offline[@]}" --force-reinstall --no-deps onnxruntime-gpu 2>&1 | tee -a "$OUT/run.log"
fi

log "checking the ONNX Runtime install"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/run.log"
import sys

import onnxruntime as ort

from aidetect_infer import gpu

problem = gpu.conflict_message(gpu.installed_ort_distributions())
if problem is None and gpu.CUDA not in ort.get_available_providers():
    problem = gpu.describe_missing(gpu.CUDA, ort.get_available_providers())
print(f"onnxruntime {ort.__version__} {gpu.installed_ort_distributions()} {ort.get_available_providers()}")
if problem is not None:
    sys.exit(f"not ready for CUDA: {problem}")
EOF

left=$((BUDGET_S - (SECONDS - START) - 10))
if ((left < 60)); then
  log "only ${left}s of the ${BUDGET_S}s budget left after installing: not enough to benchmark"
  exit 3
fi
log "driver (at most ${left}s)"
status=0
timeout "$left" "$PY" "$HERE/driver.py" "$OUT" --device cuda "$@" 2>&1 | tee -a "$OUT/run.log" || status=$?
log "done, status $status, report in $OUT/report.md"
exit "$status"
