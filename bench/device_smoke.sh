#!/usr/bin/env bash
# A two-minute subset of device_check.sh, for a GPU session with little time left:
#   bash bench/device_smoke.sh            # logs go to $OUT if set, else ./device_check_out
# 1. main.py on CUDA (generated MNIST files): SIGTERM after two epochs (exit 75), then --resume auto;
# 2. main.py on CUDA with --compile reduce-overhead (CUDA graphs) and --amp, the CE baseline;
# 3. Clothing.py on CUDA, 32-pixel images, a last batch of one image (folded), then --resume auto
#    on the finished run (exit 0 at once).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device_check_out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
scratch=$(mktemp -d)
status=0
say() { echo "$@" | tee -a "$out/summary.txt"; }

say "=== environment: $($py -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1)"
$py - "$scratch" <<'PY'
import sys
from tests.clothing_fixture import make_tiny_clothing1m
from tests.formats import random_vision_arrays, write_mnist
write_mnist(sys.argv[1] + "/files", *random_vision_arrays("mnist", 6000, 1000, 0))
make_tiny_clothing1m(sys.argv[1] + "/c1m")
PY

say "=== 1. main.py on CUDA, SIGTERM, resume"
args=(--dataset mnist --data_path "$scratch/files" --device cuda --n_epoch 4 --max_outer_loop 1
      --max_inner_loop 3 --no_progress --output_dir "$scratch/run" --model_dir "$scratch/model")
$py main.py "${args[@]}" > "$out/smoke_main.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    [ "$(cat "$scratch/run/metrics.jsonl" 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.2
done
kill -TERM "$pid"; wait "$pid"; code=$?; say "exit after SIGTERM: $code (75 expected)"; [ $code -eq 75 ] || status=1
$py main.py "${args[@]}" --resume auto >> "$out/smoke_main.log" 2>&1 || status=1; say "resumed: status $status"
tail -1 "$out/smoke_main.log" | tee -a "$out/summary.txt"

say "=== 2. main.py --compile reduce-overhead --amp on CUDA (CE)"
/usr/bin/time -f "%e s" $py main.py --dataset mnist --data_path "$scratch/files" --device cuda --method ce \
    --n_epoch 3 --compile reduce-overhead --amp --no_progress --output_dir "$scratch/ce" \
    --model_dir "$scratch/model" > "$out/smoke_compile.log" 2>&1 || status=1
tail -2 "$out/smoke_compile.log" | tee -a "$out/summary.txt"

say "=== 3. Clothing.py on CUDA, 32-pixel images, batch of one folded"
$py Clothing1m-data.py --data_root "$scratch/c1m" --drop_unlabelled --no_progress > "$out/smoke_clothing.log" 2>&1
cargs=(--data_root "$scratch/c1m" --arch resnet18 --image_size 32 --batch_size 53 --no_pretrain --n_epoch 1
       --max_inner_loop 1 --max_outer_loop 1 --skip_bad_images --device cuda --no_progress
       --output_dir "$scratch/clothing" --model_dir "$scratch/model")
$py Clothing.py "${cargs[@]}" >> "$out/smoke_clothing.log" 2>&1 || status=1; say "Clothing.py: status $status"
$py Clothing.py "${cargs[@]}" --resume auto >> "$out/smoke_clothing.log" 2>&1 || status=1; say "finished run again: status $status"
tail -1 "$out/smoke_clothing.log" | tee -a "$out/summary.txt"

rm -rf "$scratch"
say "device smoke check finished with status $status"
exit $status
