"""Recurrent PPO throughput with a device-resident env: rollout collection and whole training.

CartPole without velocities as a batched torch env on ``--device`` (no VecNormalize, so the
rollout steps it as tensors with no host copy), for each core and batch size: env steps/s of
rollout collection alone and of training (rollouts plus updates). In the same run, the baseline
is sb3-contrib's RecurrentPPO (``benchmarks/baselines/rppo_cartpole_novel.py``, the ``bench`` extra)
for ``--baseline-steps`` steps at the same thread count.

    python benchmarks/agent_speed.py                                   # CPU, B = 64 and 1024
    python benchmarks/agent_speed.py --device cuda --num-envs 4096 16384 --skip-baseline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from cartpole_novel import BASELINE, CORE_SETTINGS  # the sibling benchmark: one baseline, one set of cores
from stable_baselines3.common.callbacks import BaseCallback

from ntm_rl.agents import RecurrentPPO
from ntm_rl.envs import CartPole
from ntm_rl.vec import TorchVecEnvToSB3


class RolloutTimer(BaseCallback):
    """Wall-clock time spent collecting rollouts (synchronised with the device at both ends)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device, self.seconds, self._start = device, 0.0, 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _on_rollout_start(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def measure(core: str, num_envs: int, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    env = TorchVecEnvToSB3(CartPole(num_envs, device=device, observation="no_velocity"))
    n_steps = 32
    model = RecurrentPPO(
        "MlpPolicy", env, n_steps=n_steps, batch_size=max(256, num_envs * n_steps // 8), sequence_length=4,
        n_epochs=4, learning_rate=1e-3, gamma=0.98, gae_lambda=0.8, device=device, seed=0,
        policy_kwargs=dict(core=core, core_kwargs=CORE_SETTINGS[core]["core_kwargs"], net_arch=dict(pi=[64], vf=[64]),
                           shared_core=True),
    )  # fmt: skip
    model.learn(num_envs * n_steps)  # warm-up: allocations, kernels
    steps = max(args.rollouts, 1) * num_envs * n_steps
    timer = RolloutTimer(device)
    start = time.perf_counter()
    model.learn(steps, callback=timer, reset_num_timesteps=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    return {"core": core, "num_envs": num_envs, "steps": steps, "rollout_fps": round(steps / timer.seconds),
            "train_fps": round(steps / total)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cores", nargs="+", default=["ntm", "lstm", "gru"], choices=sorted(CORE_SETTINGS))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[64, 1024])
    parser.add_argument("--rollouts", type=int, default=4, help="timed rollouts (each followed by an update)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline-steps", type=int, default=10_000)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {args.threads} thread(s)")

    results = []
    for core in args.cores:
        for num_envs in args.num_envs:
            result = measure(core, num_envs, args)
            results.append(result)
            print(f"ntm-rl {core.upper():4s} B={num_envs:6d}: rollouts {result['rollout_fps']:>12,d} env steps/s, "
                  f"training {result['train_fps']:>10,d} env steps/s", flush=True)  # fmt: skip
    baseline = None
    if not args.skip_baseline:
        command = [sys.executable, str(BASELINE), "--steps", str(args.baseline_steps), "--threads", str(args.threads)]
        baseline = json.loads(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        print(f"sb3-contrib RecurrentPPO (8 envs, its device): training {baseline['fps']:,d} env steps/s")
        for result in results:
            print(
                f"  {result['core'].upper():4s} B={result['num_envs']}: training {result['train_fps'] / baseline['fps']:.1f}x"
            )
    print(json.dumps({"device": name, "threads": args.threads, "ours": results, "baseline": baseline}))


if __name__ == "__main__":
    main()
