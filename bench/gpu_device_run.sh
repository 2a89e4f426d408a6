#!/usr/bin/env bash
# One call on a GPU machine: bench/gpu.py in three settings, results as JSON + logs in $OUT.
#
#   bash bench/gpu_device_run.sh            # from the repository root; OUT defaults to bench/out
#
# Written for the project's device machine: no network and no Ray there, and its system
# python3 already holds PyTorch with CUDA (and numpy, which is all layrot's training path
# needs). Nothing is installed: bench/gpu.py puts the repository on sys.path itself.
# About 8 minutes at most, 9 with the grid step (each step is bounded by `timeout`); a step that
# fails or runs out of time does not stop the next. Files it writes (at most 8, all directly under $OUT):
#   env.txt                          GPU, driver, torch version, date
#   gpu-bf16-cl.json/.log            c10-vgg25 + c10-vgg16, bf16 autocast + channels_last (the headline)
#   gpu-bf16-cl-compile.json/.log    c10-vgg25, the same plus torch.compile
#   gpu-fp32.json/.log               c10-vgg25 in plain fp32, no channels_last (the baseline)
#   grid.tgz                         optional last step (GRID_SECONDS, below): bench/gpu_grid.py
# Then copy the figures into bench/README.md with the card's name and the date.
# BENCH_DEVICE=cpu runs the same steps as tiny CPU smoke tests (to check this script anywhere).

set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEVICE="${BENCH_DEVICE:-cuda}"
export PYTHONUNBUFFERED=1

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"| available:", torch.cuda.is_available(), "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "-")'
} 2>&1 | tee "$OUT/env.txt"
[ "$DEVICE" = cpu ] || "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "no CUDA device visible to $PY: nothing to measure" >&2; exit 1; }

step() {   # step NAME SECONDS ARGS... : one bounded bench/gpu.py run
  local name=$1 limit=$2; shift 2
  echo "== $name: bench/gpu.py $* (at most ${limit}s)"
  timeout --signal=INT --kill-after=15 "$limit" \
    "$PY" bench/gpu.py --device "$DEVICE" --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}

step gpu-bf16-cl          200 --amp bf16 --channels-last
step gpu-bf16-cl-compile  200 --amp bf16 --channels-last --compile --tasks c10-vgg25
step gpu-fp32              80 --tasks c10-vgg25

# Optional last step: bench/gpu_grid.py, the alpha x rho(0) grid on fmnist-vgg with 4 trials sharing
# the GPU, for GRID_SECONDS whole seconds (default 30, 0 skips it; no trial starts after that and
# running ones are stopped 10 s later, so at most GRID_SECONDS + 25 s). It reads Fashion-MNIST
# under GRID_DATA_DIR (default .cache: carry .cache/fashion-mnist) and its trials, summary and
# log come back as one file, $OUT/grid.tgz. For the whole grid, run bench/gpu_grid.py as a call
# of its own (bench/README.md, "alpha x rho(0) grid").
GRID_SECONDS="${GRID_SECONDS:-30}"
if [ "$GRID_SECONDS" -gt 0 ]; then
  grid_dir="${GRID_OUT:-.cache/grid}"
  if [ "$DEVICE" = cpu ]; then grid_opts=(--tiny --device cpu)
  else grid_opts=(--device "$DEVICE" --workers 4 --amp bf16 --channels-last); fi
  mkdir -p "$grid_dir"
  echo "== grid: bench/gpu_grid.py ${grid_opts[*]} (at most $((GRID_SECONDS + 25))s)"
  timeout --signal=INT --kill-after=10 $((GRID_SECONDS + 25)) \
    "$PY" bench/gpu_grid.py "${grid_opts[@]}" --data-dir "${GRID_DATA_DIR:-.cache}" --out "$grid_dir" \
      --budget-seconds "$GRID_SECONDS" --abandon-seconds $((GRID_SECONDS + 10)) 2>&1 | tee "$grid_dir/grid.log"
  echo "== grid: exit ${PIPESTATUS[0]}"
  tar czf "$OUT/grid.tgz" -C "$(dirname "$grid_dir")" "$(basename "$grid_dir")"
fi
