"""What callbacks cost a recurrent PPO rollout, on the device path and through numpy.

A device env (``TorchVecEnvToSB3``) is stepped without numpy unless a callback may read the step
as SB3 gives it (numpy ``new_obs``, ``rewards``, ``actions``, ``dones``, ``infos``): then each
step is copied to the host. This prints env steps/s of training (rollouts plus one epoch of
updates) for, in the same run and at the same thread count:

- ``none``: no callback (the baseline the ratios are against);
- ``ntm-rl``: a callback whose class says ``reads_sb3_step_locals = False`` (ntm-rl's own);
- ``sb3-reader``: an SB3 ``BaseCallback`` that reads ``self.locals["rewards"]`` and ``infos``;
- ``numpy-env``: no callback, the same env as a gymnasium env behind SB3's ``DummyVecEnv``.

Cells alternate over ``--repeats`` rounds, so that drift in the machine's speed hits each alike.

    python benchmarks/callback_speed.py                # GRU-64, RepeatFirst, 16 envs, 1 thread
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from ntm_rl.agents import RecurrentPPO
from ntm_rl.envs import RepeatFirst
from ntm_rl.vec import TorchVecEnvToSB3


class LocalsReader(BaseCallback):
    """An SB3 callback as users write them: numpy arithmetic on the step's locals."""

    def __init__(self):
        super().__init__()
        self.reward_sum, self.episodes = 0.0, 0

    def _on_step(self) -> bool:
        self.reward_sum += float(np.mean(self.locals["rewards"]))
        self.episodes += sum("episode" in info for info in self.locals["infos"])
        return True


class StepCounter(BaseCallback):
    """A callback that reads no step locals and says so, as ntm-rl's callbacks do."""

    reads_sb3_step_locals = False

    def _on_step(self) -> bool:
        return True


def steps_per_second(cell: str, args: argparse.Namespace) -> float:
    if cell == "numpy-env":
        env = make_vec_env("ntm_rl/RepeatFirst-v0", n_envs=args.num_envs, env_kwargs=dict(length=args.length))
    else:
        env = TorchVecEnvToSB3(RepeatFirst(args.num_envs, length=args.length))
    model = RecurrentPPO(
        "MlpPolicy", env, n_steps=args.n_steps, n_epochs=1, seed=0,
        policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=args.hidden_size)),
    )  # fmt: skip
    callback = {"ntm-rl": StepCounter, "sb3-reader": LocalsReader}.get(cell)
    model.learn(args.n_steps * args.num_envs)  # warm-up: first allocations, first update
    start = time.perf_counter()
    model.learn(args.timesteps, callback=callback() if callback else None, reset_num_timesteps=False)
    return args.timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--length", type=int, default=16, help="RepeatFirst episode length")
    parser.add_argument("--n-steps", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=40_960, help="timed env steps per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides of every ratio)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cells = ["none", "ntm-rl", "sb3-reader", "numpy-env"]
    results: dict[str, list[float]] = {cell: [] for cell in cells}
    for _ in range(args.repeats):
        for cell in cells:
            results[cell].append(steps_per_second(cell, args))
    baseline = statistics.median(results["none"])
    print(f"RecurrentPPO, GRU-{args.hidden_size}, RepeatFirst(length={args.length}), {args.num_envs} envs, "
          f"n_steps={args.n_steps}, 1 epoch, {args.threads} torch thread(s), median of {args.repeats}")  # fmt: skip
    print("| callback | env steps/s (median) | each round | vs none |")
    print("| --- | ---: | --- | ---: |")
    for cell in cells:
        median = statistics.median(results[cell])
        rounds = ", ".join(f"{v:,.0f}" for v in results[cell])
        print(f"| {cell} | {median:,.0f} | {rounds} | {median / baseline:.2f} |")


if __name__ == "__main__":
    main()
