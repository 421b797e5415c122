#!/usr/bin/env bash
# The CUDA checks in one prepared script, for a machine with a GPU (about 7 minutes; step 5 took
# 2-3 minutes on an H200, compilation included):
#   bash bench/device_check.sh            # logs go to $OUT if set, else ./device_check_out
# 1. the unit tests of the engine, pipeline and loop, with CUDA visible;
# 2. main.py end to end on CUDA (generated CIFAR-10 files, --amp --channels_last), interrupted
#    with SIGTERM and resumed;
# 3. the pipeline benchmark on CUDA (full epochs);
# 4. Clothing.py on a tiny generated Clothing1M on CUDA;
# 5. compiled networks against eager (bench/bench_compile.py), with and without CUDA graphs
#    ("reduce-overhead"): LeNet epochs with every first call, ResNet-18 steps with the first step only
#    (each capped by `timeout`, compilation included).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device_check_out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
scratch=$(mktemp -d)
status=0
step() { echo; echo "=== $1"; }

step "environment" | tee -a "$out/summary.txt"
$py -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$out/summary.txt"

step "unit tests" | tee -a "$out/summary.txt"
$py -m pytest -q tests/test_engine.py tests/data/test_device_pipeline.py tests/test_selection.py \
    tests/methods/test_memomentum.py 2>&1 | tail -3 | tee -a "$out/summary.txt" || status=1

step "main.py on CUDA, SIGTERM, resume" | tee -a "$out/summary.txt"
$py - "$scratch/files" <<'PY'
import sys
from tests.formats import random_vision_arrays, write_cifar
write_cifar(sys.argv[1], "cifar10", *random_vision_arrays("cifar10", 20000, 2000, 0))
PY
args=(--dataset cifar10 --data_path "$scratch/files" --device cuda --amp --channels_last
      --n_epoch 3 --max_outer_loop 1 --max_inner_loop 3 --no_progress --output_dir "$scratch/run"
      --model_dir "$scratch/model")
$py main.py "${args[@]}" > "$out/main_cuda.log" 2>&1 &
pid=$!
for _ in $(seq 600); do  # stop it once three epochs are logged
    [ "$(cat "$scratch/run/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.2
done
kill -TERM "$pid"; wait "$pid"; echo "exit after SIGTERM: $? (75 expected)" | tee -a "$out/summary.txt"
$py main.py "${args[@]}" --resume auto >> "$out/main_cuda.log" 2>&1 || status=1
tail -2 "$out/main_cuda.log" | tee -a "$out/summary.txt"
cp "$scratch/run/result.json" "$out/main_cuda_result.json" 2>/dev/null || status=1

step "pipeline benchmark on CUDA" | tee -a "$out/summary.txt"
$py bench/bench_pipeline.py --device cuda --repeats 1 > "$out/bench_cuda.txt" 2>&1 || status=1
grep -E "speed-up|outside" "$out/bench_cuda.txt" | tee -a "$out/summary.txt"

step "Clothing.py on CUDA (tiny generated Clothing1M)" | tee -a "$out/summary.txt"
$py - "$scratch/c1m" <<'PY'
import sys
from tests.clothing_fixture import make_tiny_clothing1m
make_tiny_clothing1m(sys.argv[1])
PY
$py Clothing1m-data.py --data_root "$scratch/c1m" --drop_unlabelled > "$out/clothing_cuda.log" 2>&1
$py Clothing.py --data_root "$scratch/c1m" --arch resnet18 --image_size 32 --no_pretrain --n_epoch 1 \
    --max_inner_loop 2 --max_outer_loop 1 --skip_bad_images --device cuda --amp --no_progress \
    --output_dir "$scratch/clothing" --model_dir "$scratch/model" >> "$out/clothing_cuda.log" 2>&1 || status=1
tail -1 "$out/clothing_cuda.log" | tee -a "$out/summary.txt"

step "compiled networks on CUDA (default, reduce-overhead)" | tee -a "$out/summary.txt"
timeout 150 $py bench/bench_compile.py --device cuda --parts a --modes default,reduce-overhead \
    > "$out/bench_compile_cuda.txt" 2>&1 || status=1
timeout 150 $py bench/bench_compile.py --device cuda --parts b --modes default,reduce-overhead \
    --short_firsts >> "$out/bench_compile_cuda.txt" 2>&1 || status=1
grep -E "^  [a-z]|compile time|difference" "$out/bench_compile_cuda.txt" | tee -a "$out/summary.txt"

rm -rf "$scratch"
echo "device check finished with status $status" | tee -a "$out/summary.txt"
exit $status
