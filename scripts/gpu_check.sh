#!/usr/bin/env bash
# One command that says whether the GPU path works and how fast (docs/performance.md):
#   (a) the speedrun with CUDA graphs and flip TTA, one epoch, to its test accuracy and reports;
#   (b) host syncs per training step, default callbacks against [default,ema];
#   (c) the headline command (trainer.gpus=1), two epochs, with trainer.benchmark null and true;
#   (d) an 8-job sweep of short default-recipe trainings (100 batches, no reports) through
#       hydra/launcher=parallel at jobs_per_gpu 1, 2, 4 and 8: wall time and images/s;
#   (e) python -m wycifar.bench on synthetic data resident on the GPU: data, bare loop and fit
#       rates (GPU_CHECK_BENCH names its settings, those of docs/performance.md's GPU tables).
# It prints one table (also OUT/table.md) and exits non-zero when a part failed. Planned for at
# most 8 minutes on one H100 or H200 with synthetic data; a command still running after
# GPU_CHECK_STEP_TIMEOUT seconds (default 240) is stopped and its row says FAIL.
#
# Usage: scripts/gpu_check.sh   (wycifar installed with its dependencies; PYTHON picks the interpreter)
#   GPU_CHECK_DEVICE=gpu|cpu   cpu runs the same commands on the CPU at the smallest sizes (trainer.gpus=0)
#   GPU_CHECK_OUT=DIR          where the runs, logs and table go (default outputs/gpu_check)
#   GPU_CHECK_DATA=DIR         real CIFAR-10: an image folder, or a folder of carry_cifar10.py's
#                              part-*.tar with carry_cifar10.py beside them (unpacked into OUT/cifar10);
#                              otherwise synthetic CIFAR-shaped images of the real sizes
#   GPU_CHECK_PARTS="a b c d e"  the parts to run
#   GPU_CHECK_BENCH="default"  part (e)'s settings, any of: default batch512 cudagraphs
#                              cudagraphs512 compiled fp32 (GPU_CHECK_BENCH_EPOCHS=3 also times 3
#                              whole epochs each, as docs/performance.md's GPU tables did; all six
#                              that way add several minutes)
set -u
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
device=${GPU_CHECK_DEVICE:-gpu}
out=${GPU_CHECK_OUT:-outputs/gpu_check}
parts=${GPU_CHECK_PARTS:-a b c d e}
helper="$python $here/gpu_check.py"
step_timeout=${GPU_CHECK_STEP_TIMEOUT:-240}
case $device in
  gpu)
    on_device="trainer.gpus=1"
    train_per_class=5000 test_per_class=1000 sync_steps="20 60" d_jobs=8 d_levels="1 2 4 8" d_batches=100
    bench_settings=${GPU_CHECK_BENCH:-default}
    bench="trainer.accelerator=gpu bench.batches=200 bench.epochs=${GPU_CHECK_BENCH_EPOCHS:-0}" ;;
  cpu)
    on_device="trainer.gpus=0"
    train_per_class=16 test_per_class=6 sync_steps="2 4" d_jobs=2 d_levels="1 2" d_batches=2
    bench_settings=${GPU_CHECK_BENCH:-default}
    bench="trainer.accelerator=cpu bench.batches=2 bench.warmup=1 bench.eval_batches=1 bench.train_images=1100 bench.test_images=64 data.eval_batch_size=64" ;;
  *) echo "error: GPU_CHECK_DEVICE=$device is not allowed; choose one of: gpu, cpu" >&2; exit 2 ;;
esac
declare -A bench_overrides=(
  [default]=""
  [batch512]="data.batch_size=512"
  [cudagraphs]="module.compile=true module.compile_mode=reduce-overhead"
  [cudagraphs512]="module.compile=true module.compile_mode=reduce-overhead data.batch_size=512"
  [compiled]="module.compile=true"
  [fp32]="trainer.precision=32-true"
)
for name in $bench_settings; do
  if [[ ! -v "bench_overrides[$name]" ]]; then
    echo "error: GPU_CHECK_BENCH: unknown setting '$name'; allowed: ${!bench_overrides[*]}" >&2
    exit 2
  fi
done
for p in $parts; do
  if [[ ! $p =~ ^[abcde]$ ]]; then
    echo "error: GPU_CHECK_PARTS: unknown part '$p'; allowed: a b c d e" >&2
    exit 2
  fi
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl
rm -f "$results" "$out/table.md"
started=$SECONDS
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"

# The data: real CIFAR-10 where given, else synthetic images of its sizes.
data=$out/data
if [[ -n "${GPU_CHECK_DATA:-}" && -d "$GPU_CHECK_DATA/train" ]]; then
  data=$GPU_CHECK_DATA
elif [[ -n "${GPU_CHECK_DATA:-}" ]] && compgen -G "$GPU_CHECK_DATA/part-*.tar" >/dev/null; then
  for part in "$GPU_CHECK_DATA"/part-*.tar; do
    $python "$GPU_CHECK_DATA/carry_cifar10.py" unpack "$part" "$out/cifar10" >/dev/null
  done
  if $python "$GPU_CHECK_DATA/carry_cifar10.py" check "$out/cifar10"; then
    data=$out/cifar10
  else
    echo "the carried parts are incomplete: synthetic data instead"
  fi
fi
if [[ $data == "$out/data" ]]; then
  $helper data "$data" "$train_per_class" "$test_per_class" || exit 1
fi
common=("data.root=$data" "data.cache_dir=$out/cache")

# run PART NAME RUN_DIR [--sweep] -- COMMAND...: runs it, logs to RUN_DIR.log, adds its row
run() {
  local part=$1 name=$2 dir=$3 sweep="" start code
  shift 3
  [[ $1 == --sweep ]] && { sweep=--sweep; shift; }
  shift
  echo "== $part: $name"
  rm -rf "$dir"
  start=$(date +%s%N)
  timeout "$step_timeout" "$@" >"$dir.log" 2>&1
  code=$?
  tenths=$(( ($(date +%s%N) - start) / 100000000 ))
  grep -E "^(test accuracy|error)" "$dir.log" | tail -2
  $helper run "$results" "$part" "$name" "$dir" "$code" "$(( tenths / 10 )).$(( tenths % 10 ))" $sweep ||
    fail_row "$part" "$name"
}

# a row for a step whose own row could not be written
fail_row() {
  printf '{"part": "%s", "name": "%s", "status": "FAIL", "wall_s": 0, "figures": "see its log"}\n' "$1" "$2" >>"$results"
}

for p in $parts; do
  case $p in
    a)
      # the GPU speedrun command of docs/performance.md, one epoch, flip TTA (the default)
      run "a speedrun" "experiment=speedrun, CUDA graphs, TTA, 1 epoch" "$out/a" -- \
        $python -m wycifar.train experiment=speedrun $on_device module.compile=true \
        module.compile_mode=reduce-overhead trainer.max_epochs=1 "${common[@]}" hydra.run.dir="$out/a" ;;
    b)
      echo "== b syncs: steps $sync_steps"
      # shellcheck disable=SC2086
      timeout "$step_timeout" $helper syncs "$results" "$data" $sync_steps -- $on_device data.cache_dir="$out/cache" >"$out/b.log" 2>&1 ||
        fail_row "b syncs" "counting (b.log)" ;;
    c)
      for benchmark in null true; do
        run "c headline" "trainer.benchmark=$benchmark, 2 epochs" "$out/c_$benchmark" -- \
          $python -m wycifar.train model=dws_dilated $on_device trainer.max_epochs=2 \
          trainer.benchmark=$benchmark "${common[@]}" hydra.run.dir="$out/c_$benchmark"
      done ;;
    d)
      nproc=$(nproc)
      for per_gpu in $d_levels; do
        threads=$(( nproc / per_gpu > 0 ? nproc / per_gpu : 1 ))
        seeds=$(seq -s, 0 $(( d_jobs - 1 )))
        run "d parallel" "$d_jobs jobs, jobs_per_gpu=$per_gpu, threads_per_job=$threads" "$out/d_$per_gpu" --sweep -- \
          $python -m wycifar.train -m hydra/launcher=parallel hydra.launcher.jobs="$per_gpu" \
          hydra.launcher.jobs_per_gpu="$per_gpu" hydra.launcher.threads_per_job="$threads" \
          "seed=$seeds" $on_device trainer.max_epochs=1 trainer.limit_train_batches=$d_batches \
          trainer.limit_val_batches=0 test=false callbacks=none logger=none \
          "${common[@]}" hydra.sweep.dir="$out/d_$per_gpu"
      done ;;
    e)
      for name in $bench_settings; do
        echo "== e bench: $name"
        start=$SECONDS
        # shellcheck disable=SC2086
        timeout "$step_timeout" $python -m wycifar.bench $bench ${bench_overrides[$name]} hydra.run.dir="$out/e_$name" >"$out/e_$name.log" 2>&1
        code=$?
        $helper bench "$results" "$name" "$code" $(( SECONDS - start )) "$out/e_$name.log" || fail_row "e bench" "$name"
        tail -1 "$out/e_$name.log" | grep '^{' >>"$out/bench.jsonl"
      done ;;
  esac
done

echo
echo "GPU check on $device, $(( SECONDS - started )) s, data $data"
$helper table "$results"
! grep -q FAIL "$out/table.md"
