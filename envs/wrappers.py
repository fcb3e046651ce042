"""Gymnasium wrappers that make any environment partially observable, or give a memory agent its
previous action and reward: the same transformations as the batched classic-control modes, for a
user's own ``gym.Env``.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np


def _check_flat_box(env: gym.Env, wrapper: str) -> gym.spaces.Box:
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"{wrapper} needs a flat Box observation space, got {space}.")
    return space


class _SeededObservationWrapper(gym.ObservationWrapper):
    """An observation wrapper with its own random stream, seeded by ``reset(seed=...)``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, 0x5EED])  # apart from the env's own stream
        return super().reset(seed=seed, options=options)


class HideEntries(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Remove the observation entries at ``indices`` (e.g. velocities: ``[1, 3]`` for CartPole)."""

    def __init__(self, env: gym.Env, indices: Sequence[int]):
        gym.utils.RecordConstructorArgs.__init__(self, indices=list(indices))
        super().__init__(env)
        space = _check_flat_box(env, "HideEntries")
        size = space.shape[0]
        if (
            not indices
            or any(not -size <= int(i) < size for i in indices)
            or len({int(i) % size for i in indices}) == size
        ):
            raise ValueError(
                f"HideEntries needs indices within an observation of {size} entries, hiding some but not all; "
                f"got {list(indices)}."
            )
        hidden = {int(i) % size for i in indices}
        self.kept = np.array([i for i in range(size) if i not in hidden])
        self.observation_space = gym.spaces.Box(space.low[self.kept], space.high[self.kept], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.kept]


class GaussianNoise(_SeededObservationWrapper, gym.utils.RecordConstructorArgs):
    """Add independent Gaussian noise of standard deviation ``std`` to every observation entry."""

    def __init__(self, env: gym.Env, std: float):
        gym.utils.RecordConstructorArgs.__init__(self, std=std)
        super().__init__(env)
        space = _check_flat_box(env, "GaussianNoise")
        if not std >= 0:
            raise ValueError(f"GaussianNoise std must be >= 0, got {std!r}.")
        self.std = std
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        noise = self._rng.normal(0.0, self.std, size=observation.shape)
        return (observation + noise).astype(self.observation_space.dtype)


class Flicker(_SeededObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace the whole observation by zeros with probability ``prob`` at each step."""

    def __init__(self, env: gym.Env, prob: float):
        gym.utils.RecordConstructorArgs.__init__(self, prob=prob)
        super().__init__(env)
        if not 0 <= prob <= 1:
            raise ValueError(f"Flicker prob must be in [0, 1], got {prob!r}.")
        self.prob = prob
        space = env.observation_space
        if isinstance(space, gym.spaces.Box) and not (np.all(space.low <= 0) and np.all(space.high >= 0)):
            raise ValueError(f"Flicker blanks observations to 0, outside the observation space {space}.")

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.zeros_like(observation) if self._rng.random() < self.prob else observation


class PreviousActionReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append the previous action (one-hot for ``Discrete``) and reward to a flat observation.

    Common in memory-RL work: the agent sees what it did and what it got. Both are zero at the
    first step of an episode.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        space = _check_flat_box(env, "PreviousActionReward")
        action_space = env.action_space
        if isinstance(action_space, gym.spaces.Discrete):
            self._action_size = int(action_space.n)
            low, high = np.zeros(self._action_size), np.ones(self._action_size)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self._action_size = action_space.shape[0]
            low, high = action_space.low, action_space.high
        else:
            raise ValueError(f"PreviousActionReward supports Discrete and flat Box actions, got {action_space}.")
        self.observation_space = gym.spaces.Box(
            np.concatenate([space.low, low, [-np.inf]]).astype(space.dtype),
            np.concatenate([space.high, high, [np.inf]]).astype(space.dtype),
            dtype=space.dtype,
        )

    def _extend(self, observation: np.ndarray, action, reward: float) -> np.ndarray:
        if isinstance(self.env.action_space, gym.spaces.Discrete):
            encoded = np.zeros(self._action_size)
            if action is not None:
                encoded[int(action)] = 1.0
        else:
            encoded = np.zeros(self._action_size) if action is None else np.asarray(action, dtype=np.float64)
        return np.concatenate([observation, encoded, [reward]]).astype(self.observation_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        return self._extend(observation, None, 0.0), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._extend(observation, action, float(reward)), reward, terminated, truncated, info


NTM_RL_WRAPPERS: dict[str, type[gym.Wrapper]] = {
    cls.__name__: cls for cls in (HideEntries, GaussianNoise, Flicker, PreviousActionReward)
}
GYMNASIUM_WRAPPERS = ("TimeLimit", "FlattenObservation", "FrameStackObservation", "DelayObservation",
                      "TimeAwareObservation", "NormalizeObservation", "NormalizeReward", "ClipReward",
                      "ClipAction", "RescaleAction", "StickyAction", "RepeatAction", "DtypeObservation",
                      "FilterObservation", "ResizeObservation", "GrayscaleObservation")  # fmt: skip
"""The ``gymnasium.wrappers`` a config may name: those whose keywords are plain data (no callables)."""


def wrapper_class(name: str) -> type[gym.Wrapper] | None:
    """The wrapper a config's ``env.wrappers`` names: one of ntm-rl's (``Flicker``, ...) or one of
    :data:`GYMNASIUM_WRAPPERS`, looked up by name (nothing is imported); ``None`` for any other."""
    if name in NTM_RL_WRAPPERS:
        return NTM_RL_WRAPPERS[name]
    return getattr(gym.wrappers, name, None) if name in GYMNASIUM_WRAPPERS else None
