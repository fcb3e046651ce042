"""Recording what an NTM core's heads do, step by step.

:class:`Recorder` attaches to an :class:`~ntm_rl.cores.NTMCore` as its ``tracer`` and keeps each
step's :class:`~ntm_rl.cores.NTMStepTrace` (detached, on the core's device, for the first
``max_envs`` envs). :func:`record_episodes` plays whole episodes with a trained agent and returns
one :class:`EpisodeTrace` per episode, with the observations, actions and rewards beside the
head traces.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ntm_rl.cores import NTMCore, NTMStepTrace
from ntm_rl.inspect.metrics import memory_metrics


class Recorder:
    """Context manager that records every step of ``core`` while it is active.

    :param core: the NTM core to trace.
    :param max_envs: record only the first ``max_envs`` envs of each step (``None``: all).
    """

    def __init__(self, core: NTMCore, max_envs: int | None = None):
        if not isinstance(core, NTMCore):
            raise ValueError(
                f"memory inspection needs an NTM core, got {type(core).__name__}; train with core=ntm to inspect memory."
            )
        self.core, self.max_envs = core, max_envs
        self.steps: list[NTMStepTrace] = []

    def __call__(self, trace: NTMStepTrace) -> None:
        self.steps.append(NTMStepTrace(*(x[: self.max_envs].detach() for x in trace)))

    def __enter__(self) -> Recorder:
        self.core.tracer = self
        return self

    def __exit__(self, *exc) -> None:
        self.core.tracer = None

    def stacked(self) -> NTMStepTrace:
        """The recorded steps as ``[T, B, ...]`` numpy arrays."""
        return NTMStepTrace(*(torch.stack(x).cpu().numpy() for x in zip(*self.steps, strict=True)))


@dataclass
class EpisodeTrace:
    """One episode of one env: what the agent saw and did, and what its memory heads did."""

    observations: np.ndarray  # [T, ...], before any normalisation
    actions: np.ndarray  # [T, ...]
    rewards: np.ndarray  # [T]
    read_weights: np.ndarray  # [T, R, N]
    write_weights: np.ndarray  # [T, W, N]
    strength: np.ndarray  # [T, R + W]
    gate: np.ndarray  # [T, R + W]
    shift: np.ndarray  # [T, R + W, 2S + 1]
    sharpening: np.ndarray  # [T, R + W]
    erase: np.ndarray  # [T, W, M]
    add: np.ndarray  # [T, W, M]

    @property
    def num_read_heads(self) -> int:
        return self.read_weights.shape[1]

    def metrics(self) -> dict[str, float]:
        """:func:`~ntm_rl.inspect.metrics.memory_metrics` of this episode, plus its return and length."""
        episode_starts = np.zeros((len(self.rewards), 1), dtype=bool)
        episode_starts[0] = True
        result = memory_metrics(self.read_weights[:, None], self.write_weights[:, None], episode_starts)
        return {"return": float(self.rewards.sum()), "length": len(self.rewards), **result}

    def save(self, path: str | Path) -> None:
        """All arrays in one compressed ``.npz``."""
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> EpisodeTrace:
        with np.load(path) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def record_episodes(model: BaseAlgorithm, env: VecEnv, episodes: int, deterministic: bool = True) -> list[EpisodeTrace]:
    """Play ``episodes`` whole episodes of ``env``'s first env and trace the actor's NTM core.

    :param model: a trained ntm-rl agent whose policy core is an :class:`NTMCore`.
    :param env: a ``VecEnv`` (``VecNormalize`` included); envs after the first play along unrecorded.
    """
    normalizer = env if isinstance(env, VecNormalize) else None
    traces: list[EpisodeTrace] = []
    obs = env.reset()
    state, episode_starts = None, np.ones(env.num_envs, dtype=bool)
    with Recorder(model.policy.core, max_envs=1) as recorder:
        while len(traces) < episodes:
            recorder.steps.clear()
            seen, actions, rewards = [], [], []
            while True:
                seen.append(_first_env(normalizer.get_original_obs() if normalizer else obs))
                action, state = model.policy.predict(obs, state, episode_starts, deterministic)
                obs, reward, dones, _ = env.step(action)
                actions.append(action[0])
                rewards.append((normalizer.get_original_reward() if normalizer else reward)[0])
                episode_starts = dones
                if dones[0]:
                    break
            heads = recorder.stacked()
            traces.append(EpisodeTrace(np.stack(seen), np.stack(actions), np.asarray(rewards, dtype=np.float64),
                                       *(x[:, 0] for x in heads)))  # fmt: skip
    return traces


def _first_env(obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """The first env's observation; a ``Dict`` observation flattened into one vector."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(value[0], dtype=np.float64).ravel() for value in obs.values()])
    return obs[0]
