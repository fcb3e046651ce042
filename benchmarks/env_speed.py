"""Environment throughput, each of ours against its usual alternative in the same run.

- CartPole: ntm-rl's torch CartPole at B=4096 against gymnasium's numpy vector CartPole at
  B=4096 and SB3's DummyVecEnv at 64 envs (random actions, env steps/s).
- Atari Pong, 8 envs, random actions, 4 stacked frames: ntm-rl's AtariVecEnv (ale-py's native
  threads) against SB3's make_atari_env with SubprocVecEnv and VecFrameStack (agent steps/s).

    python benchmarks/env_speed.py                 # torch on 1 thread, as numpy; eager and compiled
    python benchmarks/env_speed.py --device cuda --torch-envs 65536
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import ale_py
import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack

from ntm_rl.envs import CartPole
from ntm_rl.envs.atari import AtariVecEnv


def steps_per_second(step: Callable[[], None], num_envs: int, seconds: float, sync: Callable[[], None]) -> float:
    """Env steps/s of ``step`` (one step of ``num_envs`` envs), after a warm-up, over ``seconds``."""
    for _ in range(10):
        step()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            step()
        calls += 10
    sync()
    return calls * num_envs / (time.perf_counter() - start)


def torch_cartpole(num_envs: int, device: str, seconds: float, compile_step: bool) -> float:
    env = CartPole(num_envs, device=device)
    if compile_step:
        env.compile_step()
    env.reset(seed=0)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        env.step(torch.randint(0, 2, (num_envs,), device=device, generator=generator))

    sync = torch.cuda.synchronize if env.device.type == "cuda" else lambda: None
    return steps_per_second(step, num_envs, seconds, sync)


def gymnasium_vector_cartpole(num_envs: int, seconds: float) -> float:
    env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    return steps_per_second(lambda: env.step(env.action_space.sample()), num_envs, seconds, lambda: None)


def sb3_vec_env(env, num_envs: int, seconds: float) -> float:
    env.seed(0)
    env.reset()
    actions = lambda: np.array([env.action_space.sample() for _ in range(num_envs)])  # noqa: E731
    rate = steps_per_second(lambda: env.step(actions()), num_envs, seconds, lambda: None)
    env.close()
    return rate


def make_pong(**kwargs) -> gym.Env:
    """PongNoFrameskip-v4 for SB3's subprocesses, which start without ale-py's registrations."""
    gym.register_envs(ale_py)
    return gym.make("PongNoFrameskip-v4", **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the torch CartPole")
    parser.add_argument("--torch-envs", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    parser.add_argument("--skip-atari", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}

    print(f"CartPole, random actions (torch: {args.device}, {args.threads} thread(s))")
    results["torch_cartpole"] = torch_cartpole(args.torch_envs, args.device, args.seconds, False)
    results["torch_cartpole_compiled"] = torch_cartpole(args.torch_envs, args.device, args.seconds, True)
    results["gymnasium_vector_cartpole"] = gymnasium_vector_cartpole(4096, args.seconds)
    results["sb3_dummy_vec_cartpole"] = sb3_vec_env(make_vec_env("CartPole-v1", n_envs=64), 64, args.seconds)
    print(f"  ntm-rl torch CartPole, B={args.torch_envs:<6d}   {results['torch_cartpole']:14,.0f} env steps/s")
    compiled = results["torch_cartpole_compiled"]
    print(f"  ... with compile_step()          {compiled:14,.0f} env steps/s")
    print(f"  gymnasium vector CartPole, B=4096 {results['gymnasium_vector_cartpole']:14,.0f} env steps/s")
    print(f"  SB3 DummyVecEnv CartPole, 64 envs {results['sb3_dummy_vec_cartpole']:14,.0f} env steps/s")
    eager, compiled = (results[key] / results["gymnasium_vector_cartpole"] for key in
                       ("torch_cartpole", "torch_cartpole_compiled"))  # fmt: skip
    print(f"  ours / gymnasium vector: eager {eager:.2f}x, compiled {compiled:.2f}x (target >= 1)")

    if not args.skip_atari:
        print("Pong, 8 envs, random actions, 4 stacked 84x84 frames")
        results["ntm_rl_atari"] = sb3_vec_env(AtariVecEnv("pong", num_envs=8, frame_stack=4), 8, args.seconds)
        sb3_atari = VecFrameStack(make_atari_env(make_pong, n_envs=8, vec_env_cls=SubprocVecEnv), 4)
        results["sb3_atari_subproc"] = sb3_vec_env(sb3_atari, 8, args.seconds)
        print(f"  ntm-rl AtariVecEnv (ale-py threads)   {results['ntm_rl_atari']:10,.0f} agent steps/s")
        print(f"  SB3 make_atari_env + SubprocVecEnv    {results['sb3_atari_subproc']:10,.0f} agent steps/s")
        ratio = results["ntm_rl_atari"] / results["sb3_atari_subproc"]
        print(f"  ours / SB3: {ratio:.1f}x (target >= 2)")
    print(json.dumps({k: round(v) for k, v in results.items()} | {"device": args.device, "threads": args.threads}))


if __name__ == "__main__":
    main()
