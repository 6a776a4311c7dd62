#!/usr/bin/env bash
# The GPU rows of docs/performance.md: `python -m wycifar.bench` on synthetic CIFAR-shaped
# data (50,000 + 10,000 images resident on the GPU), one process per setting, 3 whole epochs each.
# Usage: scripts/bench_gpu.sh [OUT_DIR] [SETTING ...]
# settings: default batch512 cudagraphs cudagraphs512 compiled fp32 (default: all).
# Each setting's log and JSON line go to OUT_DIR (default outputs/bench_gpu); its run folder to /tmp.
set -u
out=${1:-outputs/bench_gpu}
shift || true
settings=${*:-default batch512 cudagraphs cudagraphs512 compiled fp32}
python=${PYTHON:-python}
declare -A overrides=(
  [default]=""
  [batch512]="data.batch_size=512"
  [cudagraphs]="module.compile=true module.compile_mode=reduce-overhead"
  [cudagraphs512]="module.compile=true module.compile_mode=reduce-overhead data.batch_size=512"
  [compiled]="module.compile=true"
  [fp32]="trainer.precision=32-true"
)
for name in $settings; do
  if [[ ! -v "overrides[$name]" ]]; then
    echo "error: unknown setting '$name'; allowed: ${!overrides[*]}" >&2
    exit 2
  fi
done
mkdir -p "$out"
nvidia-smi -L || true
$python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

for name in $settings; do
  echo "== $name: ${overrides[$name]}"
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-150}" $python -m wycifar.bench trainer.accelerator=gpu bench.batches=200 bench.epochs=3 \
    hydra.run.dir="${TMPDIR:-/tmp}/wycifar_bench_gpu/$name" ${overrides[$name]} >"$out/$name.log" 2>&1
  echo "exit $?"
  grep -v -E "^(Epoch|Validation|Sanity)|it/s" "$out/$name.log" | tail -14
  tail -1 "$out/$name.log" | grep '^{' >>"$out/results.jsonl"
done
