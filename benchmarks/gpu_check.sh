#!/usr/bin/env bash
# The project's GPU checks in one run, on a machine with one CUDA GPU (under 9 minutes on an H200):
#   bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]
# 1. tests whose CUDA branch is skipped on CPU: compiled decode (torch.compile + CUDA graphs) vs
#    eager, a real CUDA out-of-memory retried with fewer frames, the TensorRT error path;
# 2. benchmarks/bench_backends.py --device cuda --gpu-only -> OUT_DIR/backends_gpu.json
#    (official sizes, random weights, bf16);
# 3. benchmarks/bench_train_device.py -> OUT_DIR/train_devices.json (SFT and GRPO step times of
#    the tiny preset: GPU bf16, GPU fp32, the machine's CPU).
# DATA_DIR: a data-engine dataset for step 3 (default: training.fixtures' self-made set).
# Each step has its own time limit, so one hang costs only its own step; logs go to OUT_DIR.
set -u
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]}
DATA=${2:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s (limit $limit s)"
  tail -n 12 "$OUT/$name.log"
}

step tests 100 $PY -m pytest -q -rs -p no:cacheprovider tests/core/test_gpu_memory.py \
  tests/core/test_decode_modes.py tests/engines/test_llm_decode.py tests/engines/test_trt_builder.py \
  tests/engines/test_bench_backends.py
step bench 200 $PY benchmarks/bench_backends.py --device cuda --gpu-only --repeats 5 --output-dir "$OUT"
step train 200 $PY benchmarks/bench_train_device.py --steps 25 ${DATA:+--data "$DATA"} --output-dir "$OUT"
