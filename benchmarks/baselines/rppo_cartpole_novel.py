"""Baseline: sb3-contrib's RecurrentPPO (LSTM) on CartPole-v1 without velocities, rl-zoo3's settings.

rl-zoo3's tuned ``ppo_lstm`` hyperparameters for ``CartPoleNoVel-v1``: 8 envs under VecNormalize,
32-step rollouts, minibatches of 256, 20 epochs, gamma 0.98, GAE 0.8, learning rate and clip range
falling linearly from 1e-3 and 0.2, LSTM-64 with a separate critic LSTM, 64-unit ReLU heads, no
orthogonal init. The ntm-rl benchmarks run this script as a subprocess beside their own runs, at
the same thread count, so that their ratios hold on a noisy machine.

    python benchmarks/baselines/rppo_cartpole_novel.py --steps 100000 --seed 0 --threads 1

Prints one JSON line: steps, wall seconds, env steps/s, and mean and std of 20 evaluation episodes.
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize


class NoVelocity(gym.ObservationWrapper):
    """CartPole's cart position and pole angle, without their velocities."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[[0, 2]], space.high[[0, 2]], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start

    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, wrapper_class=NoVelocity, seed=args.seed))
    model = RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
        learning_rate=linear(1e-3), clip_range=linear(0.2), seed=args.seed,
        policy_kwargs=dict(lstm_hidden_size=64, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]),
                           activation_fn=torch.nn.ReLU, ortho_init=False),
    )  # fmt: skip
    start = time.perf_counter()
    model.learn(args.steps)
    wall = time.perf_counter() - start

    eval_env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, wrapper_class=NoVelocity, seed=args.seed + 1000),
                            training=False, norm_reward=False)  # fmt: skip
    eval_env.obs_rms = env.obs_rms
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=20)
    print(json.dumps({"algo": "sb3-contrib RecurrentPPO", "env": "CartPole-v1 without velocities",
                      "steps": args.steps, "seed": args.seed, "threads": args.threads, "wall_s": round(wall, 1),
                      "fps": round(args.steps / wall), "eval_mean": round(float(mean), 1),
                      "eval_std": round(float(std), 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
