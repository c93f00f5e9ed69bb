#!/usr/bin/env bash
# The GPU checks of the speed issue, as one script that fits in 5 minutes on one H100:
#   1. benchmarks/bench.py for ViT-L-14-336 at 240 px in bf16 (random weights: speed does not depend on them);
#   2. k = 4 training for 50 epochs on the generated benchmark (ViT-L-14-336, random weights), timed,
#      then a test pass through the real data loader;
#   3. tests/test_cuda.py, the CUDA-only code paths against CPU computations (skipped without a GPU),
#      run first: a failure there is reported in cuda-tests.txt and the figures above are still taken.
# Installs nothing that is already there: open-clip-torch comes from wheels in .whl/ only if missing.
# Results go to $OUT (default ./gpu-check): gpu.txt, bench.json, bench.md, train.json, metrics.json,
# test.txt, cuda-tests.txt, a few small files only; the generated data and the trained run stay in $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
WORK=${WORK:-$(mktemp -d /tmp/clipmpcad-gpu-check.XXXXXX)}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
if ! "$PY" -c "import open_clip" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" > /dev/null; then
        echo "open_clip is not installed and .whl/ holds no wheels: carry .whl/ (the device tool's carry: [\".whl\"])" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/clipmpcad-site .whl/*.whl
    export PYTHONPATH="/tmp/clipmpcad-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" | tee -a "$OUT/gpu.txt"

start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt" || true
echo "cuda tests: $(( $(date +%s) - start )) s"

start=$(date +%s)
"$PY" benchmarks/bench.py --model ViT-L-14-336 --image-size 240 --device cuda --test-batch 128 --repeats 5 \
    --json "$OUT/bench.json" | tee "$OUT/bench.md"
echo "bench: $(( $(date +%s) - start )) s"

"$PY" -c "from clipmpcad.data.synthetic import generate_benchmark; generate_benchmark('$WORK/data', seed=0, overwrite=True)"
start=$(date +%s)
"$PY" -m clipmpcad train --dataset bmad --root "$WORK/data/bmad" --category SynthBrain --shot 4 --epochs 50 \
    --model ViT-L-14-336 --weights random --image-size 240 --device cuda --out "$WORK/train-k4" --overwrite --quiet
echo "train k=4, 50 epochs, wall time of the command: $(( $(date +%s) - start )) s"
"$PY" -c "import json; r = json.load(open('$WORK/train-k4/train.json')); print('train.json train_seconds', round(r['train_seconds'], 1), 'views', r['support_views'], 'steps', r['steps'])"
"$PY" -m clipmpcad test "$WORK/train-k4" --quiet --no-report | tee "$OUT/test.txt"
cp "$WORK/train-k4/train.json" "$OUT/train.json"
cp "$WORK/train-k4/metrics.json" "$OUT/metrics.json"
