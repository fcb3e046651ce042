#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100 or H200): the whole test suite there (CUDA tests
# included), the core speed benchmark on CUDA (eager and compiled), the torch CartPole at
# B=65,536, recurrent PPO with a device-resident env at B=4,096 and 16,384, and the cost of 2,048-step
# training sequences (time and peak memory per env step). Installs nothing
# from the network. That machine's image has torch and pytest; the environments also need
# gymnasium, stable-baselines3 and ale-py, carried as cp312 wheels in .whl/ (downloaded here
# with `pip download --only-binary=:all: --python-version 3.12 ...`).
#
#   bash benchmarks/gpu_check.sh            # results under $OUT (or ./gpu_results)
set -uo pipefail
out=${OUT:-gpu_results}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
# ntm-rl itself, offline (agents/ and envs/ install as ntm_rl.agents and ntm_rl.envs).
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt"
timeout 300 python3 benchmarks/core_speed.py --device cuda --batch-sizes 256 4096 --rounds 5 --compile 2>&1 \
  | tee "$out/core_speed_cuda.txt"
timeout 200 python3 benchmarks/env_speed.py --device cuda --torch-envs 65536 --skip-atari 2>&1 \
  | tee "$out/env_speed_cuda.txt"
timeout 240 python3 benchmarks/agent_speed.py --device cuda --num-envs 4096 16384 --skip-baseline 2>&1 \
  | tee "$out/agent_speed_cuda.txt"
timeout 200 python3 benchmarks/sequence_cost.py --device cuda --lengths 128 2048 2>&1 \
  | tee "$out/sequence_cost_cuda.txt"
