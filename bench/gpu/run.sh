#!/usr/bin/env bash
# The GPU measurement kit in one command (bench/gpu/kit.py; bench/RESULTS.md, section "GPU").
#
#   bash bench/gpu/run.sh                          # GPU machine: <= 8 minutes; $OUT/gpu.json + gpu-log.txt
#   bash bench/gpu/run.sh --cpu --tiny --out DIR   # CPU dry run (tests/integration/test_gpu_kit.py)
#   bash bench/gpu/run.sh --tiny                   # a ~1-minute smoke run on the GPU
#   bash bench/gpu/run.sh --cpu --tiny --simulate-image   # ... with what the GPU image lacks hidden
#
# --simulate-image puts bench/gpu/imagesim on PYTHONPATH: its sitecustomize hides every installed
# package the GPU image does not have (bench/gpu/image-packages.txt; Ray, vLLM, pydantic...).
# Any other flag goes to kit.py (--only classifier,train,generate; --budget-s N; --out DIR).
# Wheels in bench/gpu/wheels/ (written here by bench/gpu/wheels.sh, carried to the GPU machine)
# are installed into a private directory on PYTHONPATH first; a --cpu run leaves them alone
# (the local virtualenv has everything). The project itself is found through PYTHONPATH, so
# nothing needs installing on a bare machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

cpu=0
simulate=0
args=()
for arg in "$@"; do
  case "$arg" in
    --simulate-image) simulate=1 ;;
    --cpu) cpu=1; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done

if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
  py="$ROOT/.venv/bin/python"
else
  py="$(command -v python3 || command -v python)"
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$simulate" = 1 ]; then
  export PYTHONPATH="$ROOT/bench/gpu/imagesim:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true

shopt -s nullglob
wheels=("$ROOT"/bench/gpu/wheels/*.whl)
if [ "$cpu" = 0 ] && [ "${#wheels[@]}" -gt 0 ]; then
  site="${TMPDIR:-/tmp}/lantern-gpu-kit-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
  export PYTHONPATH="$PYTHONPATH:$site"  # before site-packages, as any PYTHONPATH entry
  echo "[run.sh] installed ${#wheels[@]} wheel(s) into $site"
fi

if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
  set -o pipefail
  "$py" bench/gpu/kit.py ${args[@]+"${args[@]}"} 2>&1 | tee "$OUT/gpu-log.txt"
else
  "$py" bench/gpu/kit.py ${args[@]+"${args[@]}"}
fi
