#!/usr/bin/env bash
# Every GPU check in one call of a lent GPU machine (not yet run on one: no GPU was lent so far;
# the two long steps are capped at 4 minutes each):
#   1. tests/test_cuda.py: each shipped model restores on CUDA as on the CPU (fp32 and bf16),
#      the x2 upscaler too; the trainer trains a U-Net and GAN-CIRCLE in bf16 and resumes;
#   2. benchmarks/denoise_speed.py on the GPU in bf16 (targets: >= 2,000 slices/s on one H100
#      for the default model and for the GAN-CIRCLE generator; cuDNN autotuned), learned models only;
#   3. training throughput: the `gpu` preset of the U-Net on phantom slices, 300 steps.
# The GPU image has PyTorch but not every dependency, and no network: build the missing wheels
# here first with `make gpu-wheels` (they land in .whl/, git-ignored), then, with the device
# tool: command `bash benchmarks/gpu_check.sh "$OUT"`, carry [".whl"].
# Results land in OUT (default gpu-check/): gpu.txt, test_cuda.log, denoise_speed.{json,md},
# speed.log, train.log, train_summary.json.
set -uo pipefail
OUT=${1:-gpu-check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lowdose-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/lowdose-site
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lowdose; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$OUT/gpu.txt" || exit 1

echo "== 1. CUDA tests"
python3 -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2. speed"
timeout 240 python3 benchmarks/denoise_speed.py --skip-classical --threads 2 --out "$OUT" \
    2>&1 | tee "$OUT/speed.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3. training throughput"
python3 -m lowdose.cli.main data phantom /tmp/lowdose-phantoms --n 16 --size 512 --format npy \
    --overwrite >/dev/null || exit 1
timeout 240 python3 -m lowdose.cli.main train denoiser --model unet --preset "${TRAIN_PRESET:-gpu}" \
    --data /tmp/lowdose-phantoms --steps "${TRAIN_STEPS:-300}" --method image-poisson \
    --out /tmp/lowdose-train 2>&1 | tr '\r' '\n' | grep -v "^train: \|^simulate " | tee "$OUT/train.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp /tmp/lowdose-train/train_summary.json /tmp/lowdose-train/metrics.csv "$OUT/" || status=1
python3 - "$OUT/metrics.csv" <<'EOF' | tee -a "$OUT/train.log"
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["split"] == "train" and r["name"] == "loss"]
(s0, t0), (s1, t1) = [(int(rows[i]["step"]), float(rows[i]["time"])) for i in (0, -1)]
print(f"training throughput: {(s1 - s0) / (t1 - t0):.2f} steps/s from step {s0} to {s1}")
EOF
exit $status
