#!/usr/bin/env bash
# wycifar as a user installs it: the wheel built from this repository, installed (not editable)
# into a fresh virtual environment, used from a folder outside the repository. Needs `make install`
# first (it builds with .venv's `build`). Prints what it checks; exits non-zero at the first failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$repo/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$work"/dist/wycifar-*.whl > "$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
bin="$work/venv/bin"
package=$("$bin/python" -c "import wycifar, pathlib; print(pathlib.Path(wycifar.__file__).parent)")
list_package() { find "$package" -not -path "*__pycache__*" | sort; }
list_package > "$work/package.before"
mkdir "$work/elsewhere"
cd "$work/elsewhere"
export XDG_CACHE_HOME="$work/cache"

"$bin/python" - <<'PY'
import wycifar
assert "site-packages" in wycifar.__file__, f"not the installed package: {wycifar.__file__}"
print("installed:", wycifar.__file__)
# a tiny image folder: 10 classes, 8 training and 2 test images each
import numpy as np
from pathlib import Path
from PIL import Image
rng = np.random.default_rng(0)
for split, count in (("train", 8), ("test", 2)):
    for label in range(10):
        folder = Path("tiny") / split / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
PY

small="data.root=tiny data.batch_size=8 model.base_width=8 trainer.max_epochs=1 trainer.accelerator=cpu"
"$bin/wycifar-train" $small trainer.limit_train_batches=2 hydra.run.dir=outputs/run > train.out
tail -1 train.out
test -f outputs/run/checkpoints/last.ckpt
test -f outputs/run/report.md
test -f outputs/run/train.log
ls "$XDG_CACHE_HOME"/wycifar/train-*.pt > /dev/null
echo "trained 2 batches: outputs/run, decode cache in \$XDG_CACHE_HOME/wycifar"

"$bin/wycifar-eval" ckpt_path=outputs/run/checkpoints/last.ckpt data.root=tiny trainer.accelerator=cpu hydra.run.dir=outputs/eval > eval.out
tail -1 eval.out
grep -q "test accuracy" eval.out

"$bin/wycifar-predict" tiny/test/class3/0.png | tee predict.out
grep -q "^tiny/test/class3/0.png: " predict.out
"$bin/wycifar-predict" --onnx outputs/run/model_*.onnx tiny/test/class3/0.png | tee predict_onnx.out
grep -q "^tiny/test/class3/0.png: " predict_onnx.out
"$bin/wycifar-export" outputs/run --out outputs/exported
ls outputs/exported/model_*.onnx > /dev/null

"$bin/python" -m wycifar.train -m $small trainer.limit_train_batches=1 seed=0,1 hydra.sweep.dir=outputs/sweep > sweep.out
test "$(grep -c "| ok |" outputs/sweep/summary.md)" -eq 2
echo "a sweep of two jobs: outputs/sweep/summary.md"

"$bin/wycifar-train" -m hydra/launcher=parallel hydra.launcher.jobs=2 $small trainer.limit_train_batches=1 seed=0,1 \
  hydra.sweep.dir=outputs/psweep > psweep.out
test "$(grep -c "| ok |" outputs/psweep/summary.md)" -eq 2
grep -q "job 1 ended: ok" psweep.out
test -f outputs/psweep/1/console.log
echo "hydra/launcher=parallel: two jobs at once, outputs/psweep/summary.md"

"$bin/wycifar-bench" bench.batches=2 bench.warmup=1 bench.eval_batches=1 bench.train_images=64 bench.test_images=32 \
  data.batch_size=8 model.base_width=8 trainer.accelerator=cpu hydra.run.dir=outputs/bench | tail -1 | grep -q '"fit_img_s"'
echo "bench ran"

if "$bin/wycifar-train" hparams_search=optuna > optuna.out 2> optuna.err; then
  echo "hparams_search=optuna ran without the sweeps extra"; exit 1
fi
cat optuna.err
grep -q "^error: hparams_search=optuna needs wycifar's 'sweeps' extra: pip install 'wycifar\[sweeps\]'$" optuna.err
test "$(wc -l < optuna.err)" -eq 1

list_package | diff "$work/package.before" - || { echo "the runs wrote inside the installed package"; exit 1; }
echo "wheel check passed"
