"""``TorchVecEnv``: a batch of environments whose state lives in tensors on one device.

A subclass writes its dynamics once, for all ``B`` environments, as tensor operations; this base
class adds what every batched environment needs: same-step autoreset, time limits, per-env
seeding and the bookkeeping for bootstrapping truncated episodes. Nothing in a step leaves the
device or loops over environments in Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from ntm_rl.checks import check_positive_int

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # added before each hash so that zero inputs do not stay zero
_RESET_DRAWS = 1 << 20  # draws made while resetting are keyed apart from those made while stepping


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (low-bias "xorshift-multiply" rounds) on int64 tensors.

    Multipliers stay below 2**31, so every product fits in int64 and the result is exact and
    identical on every device.
    """
    x = x & _MASK32
    x = ((x ^ (x >> 16)) * 0x21F0AAAD) & _MASK32
    x = ((x ^ (x >> 15)) * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


class VecStep(NamedTuple):
    """What :meth:`TorchVecEnv.step` returns, every field batch-first on the env's device.

    ``observation`` is the first observation of the next episode wherever an episode ended
    (same-step autoreset); ``final_observation`` is the observation the step produced before any
    reset, which a truncated episode bootstraps from. ``episode_start`` (``terminated |
    truncated``) is what a recurrent policy's next step takes.
    """

    observation: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_observation: torch.Tensor

    @property
    def episode_start(self) -> torch.Tensor:
        return self.terminated | self.truncated


class TorchVecEnv(ABC):
    """``num_envs`` environments stepped together as tensors on ``device``.

    Subclasses set ``observation_space`` and ``action_space`` (those of one env) and implement
    :meth:`_reset_envs`, :meth:`_step` and :meth:`_observe`. Randomness comes from
    :meth:`_uniform`/:meth:`_randint`, a counter-based generator keyed by each env's seed, so
    env ``i`` of a batch behaves exactly like a single env seeded with env ``i``'s seed.

    :param num_envs: batch size ``B``.
    :param device: where the state lives (CPU or CUDA).
    :param max_episode_steps: episodes are truncated after this many steps (``None``: never).
    """

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space
    render_mode: str | None = None  # "rgb_array": render() draws an env (set by the adapters)

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", max_episode_steps: int | None = None):
        num_envs = check_positive_int("num_envs", num_envs)
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps!r}.")
        self.num_envs = num_envs
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device. Use device='cpu'.")
        self.max_episode_steps = max_episode_steps
        self.seeds = torch.arange(num_envs, dtype=torch.int64, device=self.device)
        self.episode_count = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.elapsed_steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._episode_keys = torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # set at reset
        self._draws = 0  # random draws made so far in the current step, to key the next one

    # ----------------------------------------------------------------------------------- API
    def reset(self, seed: int | Sequence[int] | None = None) -> torch.Tensor:
        """Start a new episode in every env; returns observations ``[B, ...]``.

        :param seed: an int seeds env ``i`` with ``seed + i``; a sequence gives one seed per env;
            ``None`` keeps the current seeds and draws fresh episodes.
        """
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs; pass one per env or an int.")
            self.seeds = torch.tensor(seeds, dtype=torch.int64, device=self.device)
            self.episode_count.zero_()
        everything = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._begin_episodes(everything)
        return self._observe()

    def step(self, actions: torch.Tensor) -> VecStep:
        """Advance every env by one step, resetting (same step) those whose episode ended."""
        return self._advance(torch.as_tensor(actions, device=self.device))

    def render(self, index: int = 0) -> np.ndarray:
        """An RGB picture (``[H, W, 3]`` uint8) of env ``index``: its current observation as a row of
        cells, each as bright as its value (clipped to [0, 1]), above a bar that grows with the
        episode's steps. Environments with a scene to show (CartPole, Pendulum) draw that instead."""
        values = self._observe()[index].float().flatten().clamp(0, 1).cpu().numpy()
        cell, gap = 24, 4
        width = max(len(values) * (cell + gap) + gap, 96)
        frame = np.full((cell + 3 * gap + 6, width, 3), 32, dtype=np.uint8)
        for i, value in enumerate(values):
            left = gap + i * (cell + gap)
            frame[gap : gap + cell, left : left + cell] = (np.array([80, 200, 120]) * value + 48 * (1 - value)).astype(
                np.uint8
            )
        steps = int(self.elapsed_steps[index])
        frame[-gap - 4 : -gap, gap : gap + min(steps, width - 2 * gap)] = 200
        return frame

    def compile_step(self, **compile_kwargs) -> TorchVecEnv:
        """Compile :meth:`step` with ``torch.compile`` (fuses a step's many small operations).

        :return: this env.
        """
        self._advance = torch.compile(self._advance, **compile_kwargs)
        return self

    def _advance(self, actions: torch.Tensor) -> VecStep:
        self._draws = 0
        reward, terminated = self._step(actions)
        self.elapsed_steps = self.elapsed_steps + 1
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = ~terminated & (self.elapsed_steps >= self.max_episode_steps)
        final_observation = self._observe()
        done = terminated | truncated
        # Resets are masked (no branch on data, no host sync), except on an eager CPU step, where
        # checking for a finished episode is free and skips the reset work of most steps.
        if self.device.type == "cpu" and not torch.compiler.is_compiling() and not bool(done.any()):
            return VecStep(final_observation, reward, terminated, truncated, final_observation)
        self._begin_episodes(done)
        first = done.view(-1, *([1] * (final_observation.dim() - 1)))
        observation = torch.where(first, self._observe(), final_observation)
        return VecStep(observation, reward, terminated, truncated, final_observation)

    # ---------------------------------------------------------------------- for subclasses
    @abstractmethod
    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Draw a new episode's state for the envs where ``mask`` is true (others unchanged)."""

    @abstractmethod
    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``actions`` to every env; return ``reward`` (float) and ``terminated`` (bool)."""

    @abstractmethod
    def _observe(self) -> torch.Tensor:
        """The current observation of every env, ``[B, *observation_space.shape]``."""

    def _uniform(self, *shape: int) -> torch.Tensor:
        """Uniform floats in [0, 1), ``[B, *shape]``, a function of (env seed, episode, step, draw)."""
        self._draws += 1
        count = 1
        for size in shape:
            count *= size
        step_keys = hash32((self._episode_keys ^ self.elapsed_steps) + _GOLDEN)  # [B]
        draw_keys = hash32(torch.arange(count, device=self.device) + (self._draws * count + _GOLDEN))  # [count]
        bits = hash32((step_keys.unsqueeze(1) ^ draw_keys) + _GOLDEN)
        return ((bits >> 8).float() * (1.0 / (1 << 24))).view(self.num_envs, *shape)

    def _randint(self, high: int, *shape: int) -> torch.Tensor:
        """Uniform integers in ``[0, high)``, ``[B, *shape]``."""
        return (self._uniform(*shape) * high).long().clamp_(max=high - 1)

    def _begin_episodes(self, mask: torch.Tensor) -> None:
        self.episode_count = self.episode_count + mask.long()
        keys = hash32((hash32(self.seeds + _GOLDEN) ^ self.episode_count) + _GOLDEN)
        self._episode_keys = torch.where(mask, keys, self._episode_keys)
        self.elapsed_steps = torch.where(mask, 0, self.elapsed_steps)
        self._draws = _RESET_DRAWS
        self._reset_envs(mask)
