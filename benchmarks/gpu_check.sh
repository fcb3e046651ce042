#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100 or H200): the whole test suite there (CUDA tests
# included), then the core speed benchmark on CUDA, eager and compiled. Installs nothing from
# the network; the cores need only torch and pytest, which that machine's image has.
#
#   bash benchmarks/gpu_check.sh            # results under $OUT (or ./gpu_results)
set -uo pipefail
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt"
timeout 300 python3 benchmarks/core_speed.py --device cuda --batch-sizes 256 4096 --rounds 5 --compile 2>&1 \
  | tee "$out/core_speed_cuda.txt"
