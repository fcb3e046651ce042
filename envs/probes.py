"""Memory probes: tasks that each isolate one memory skill, batched as :class:`TorchVecEnv`.

Every probe has discrete actions, float observations, rewards of 0 or 1, and documents its
``optimal_return`` (what a perfect memory earns per episode) and ``random_return`` (the expected
return of uniformly random actions). ``oracle_action()`` reads the hidden state and returns
optimal actions, for tests and as a reference policy.
"""

from __future__ import annotations

from abc import abstractmethod

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from ntm_rl.checks import check_positive_int
from ntm_rl.vec.torch_vec_env import TorchVecEnv


def _box(size: int) -> gym.spaces.Box:
    return gym.spaces.Box(0.0, 1.0, (size,), dtype=np.float32)


class _SequenceProbe(TorchVecEnv):
    """A probe whose episode is a fixed-length sequence of random symbols drawn at reset."""

    def __init__(
        self, num_envs: int, device: torch.device | str, num_symbols: int, sequence_length: int, episode_length: int
    ):
        super().__init__(num_envs, device)
        self.num_symbols = check_positive_int("num_symbols", num_symbols, 2)
        self.episode_length = episode_length
        self.symbols = torch.zeros(num_envs, sequence_length, dtype=torch.int64, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        fresh = self._randint(self.num_symbols, self.symbols.shape[1])
        self.symbols = torch.where(mask.unsqueeze(1), fresh, self.symbols)

    def _symbol_at(self, index: torch.Tensor) -> torch.Tensor:
        """``symbols[b, index[b]]`` with ``index`` clamped into the sequence."""
        index = index.clamp(0, self.symbols.shape[1] - 1)
        return self.symbols.gather(1, index.unsqueeze(1)).squeeze(1)

    def _one_hot(self, symbol: torch.Tensor) -> torch.Tensor:
        return F.one_hot(symbol, self.num_symbols).float()

    def _score(self, actions: torch.Tensor, scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward 1 where ``scored`` and the action is the oracle's; episodes end at full length."""
        reward = (scored & (actions.long() == self.oracle_action())).float()
        return reward, self.elapsed_steps + 1 >= self.episode_length

    @abstractmethod
    def oracle_action(self) -> torch.Tensor:
        """The optimal action of every env, ``[B]``, read from the hidden state."""


class RepeatPrevious(_SequenceProbe):
    """Each step shows a random symbol; act with the symbol shown ``delay`` steps earlier.

    Observation: one-hot of the current symbol. Action: a symbol. Reward 1 per correct answer
    from step ``delay`` on. ``optimal_return = length - delay``;
    ``random_return = (length - delay) / num_symbols``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        num_symbols: int = 4,
        delay: int = 3,
        length: int = 32,
    ):
        check_positive_int("delay", delay, 1)
        if check_positive_int("length", length, 2) <= delay:
            raise ValueError(f"length must exceed delay ({delay}), got {length}.")
        super().__init__(num_envs, device, num_symbols, length, length)
        self.delay = delay
        self.observation_space = _box(num_symbols)
        self.action_space = gym.spaces.Discrete(num_symbols)
        self.optimal_return = float(length - delay)
        self.random_return = (length - delay) / num_symbols

    def _observe(self) -> torch.Tensor:
        return self._one_hot(self._symbol_at(self.elapsed_steps))

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score(actions, self.elapsed_steps >= self.delay)

    def oracle_action(self) -> torch.Tensor:
        return self._symbol_at(self.elapsed_steps - self.delay)


class RepeatFirst(_SequenceProbe):
    """The first step shows a symbol, later steps show distractors; always answer the first.

    Observation: one-hot of the current symbol. Reward 1 per correct answer from step 1 on.
    ``optimal_return = length - 1``; ``random_return = (length - 1) / num_symbols``.
    """

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", num_symbols: int = 4, length: int = 16):
        super().__init__(num_envs, device, num_symbols, check_positive_int("length", length, 2), length)
        self.observation_space = _box(num_symbols)
        self.action_space = gym.spaces.Discrete(num_symbols)
        self.optimal_return = float(length - 1)
        self.random_return = (length - 1) / num_symbols

    def _observe(self) -> torch.Tensor:
        return self._one_hot(self._symbol_at(self.elapsed_steps))

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score(actions, self.elapsed_steps >= 1)

    def oracle_action(self) -> torch.Tensor:
        return self.symbols[:, 0]


class Copy(_SequenceProbe):
    """Shown ``length`` symbols, then ``delay`` blank steps, reproduce the symbols in order.

    Observation: one-hot symbol (zeros once the sequence is over) and a recall flag, set on the
    ``length`` answer steps. Reward 1 per correct answer on those steps.
    ``optimal_return = length``; ``random_return = length / num_symbols``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        num_symbols: int = 4,
        length: int = 5,
        delay: int = 0,
    ):
        check_positive_int("length", length, 1)
        check_positive_int("delay", delay, 0)
        super().__init__(num_envs, device, num_symbols, length, 2 * length + delay)
        self.length, self.delay = length, delay
        self.observation_space = _box(num_symbols + 1)
        self.action_space = gym.spaces.Discrete(num_symbols)
        self.optimal_return = float(length)
        self.random_return = length / num_symbols

    def _recalling(self) -> torch.Tensor:
        return self.elapsed_steps >= self.length + self.delay

    def _observe(self) -> torch.Tensor:
        shown = (self.elapsed_steps < self.length).unsqueeze(1)
        symbol = self._one_hot(self._symbol_at(self.elapsed_steps)) * shown
        return torch.cat([symbol, self._recalling().float().unsqueeze(1)], dim=1)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score(actions, self._recalling())

    def oracle_action(self) -> torch.Tensor:
        return self._symbol_at(self.elapsed_steps - self.length - self.delay)


class TMaze(_SequenceProbe):
    """Passive T-maze: a cue at the start, a corridor of ``corridor_length`` steps, then a turn.

    Observation: ``[cue up, cue down, junction]``; the cue shows on the first step only, the
    junction flag on the last. Actions: 0 (up) and 1 (down), scored at the junction only (the
    agent is carried along the corridor). Reward 1 for the cued turn. ``optimal_return = 1``;
    ``random_return = 0.5``, which is also the best a memoryless policy can do.
    """

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", corridor_length: int = 10):
        super().__init__(num_envs, device, 2, 1, check_positive_int("corridor_length", corridor_length, 1) + 1)
        self.corridor_length = corridor_length
        self.observation_space = _box(3)
        self.action_space = gym.spaces.Discrete(2)
        self.optimal_return = 1.0
        self.random_return = 0.5

    def _at_junction(self) -> torch.Tensor:
        return self.elapsed_steps >= self.corridor_length

    def _observe(self) -> torch.Tensor:
        cue = self._one_hot(self.symbols[:, 0]) * (self.elapsed_steps == 0).unsqueeze(1)
        return torch.cat([cue, self._at_junction().float().unsqueeze(1)], dim=1)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score(actions, self._at_junction())

    def oracle_action(self) -> torch.Tensor:
        return self.symbols[:, 0]


class AssociativeRecall(TorchVecEnv):
    """``num_pairs`` key-value pairs, one per step, then a key: answer its value.

    Keys are distinct. Observation: one-hot key, one-hot value, query flag. Actions before the
    query are not scored. Reward 1 for the right value. ``optimal_return = 1``;
    ``random_return = 1 / num_symbols``.
    """

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", num_pairs: int = 3, num_symbols: int = 8):
        super().__init__(num_envs, device)
        self.num_pairs = check_positive_int("num_pairs", num_pairs, 1)
        if check_positive_int("num_symbols", num_symbols, 2) < num_pairs:
            raise ValueError(f"num_symbols must be >= num_pairs ({num_pairs}) for distinct keys, got {num_symbols}.")
        self.num_symbols = num_symbols
        self.observation_space = _box(2 * num_symbols + 1)
        self.action_space = gym.spaces.Discrete(num_symbols)
        self.optimal_return = 1.0
        self.random_return = 1.0 / num_symbols
        self.keys = torch.zeros(num_envs, num_pairs, dtype=torch.int64, device=self.device)
        self.values = torch.zeros_like(self.keys)
        self.query = torch.zeros(num_envs, dtype=torch.int64, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        keys = self._uniform(self.num_symbols).argsort(dim=1)[:, : self.num_pairs]  # distinct
        values = self._randint(self.num_symbols, self.num_pairs)
        query = self._randint(self.num_pairs, 1).squeeze(1)
        self.keys = torch.where(mask.unsqueeze(1), keys, self.keys)
        self.values = torch.where(mask.unsqueeze(1), values, self.values)
        self.query = torch.where(mask, query, self.query)

    def _querying(self) -> torch.Tensor:
        return self.elapsed_steps >= self.num_pairs

    def _observe(self) -> torch.Tensor:
        querying = self._querying()
        pair = torch.where(querying, self.query, self.elapsed_steps.clamp(max=self.num_pairs - 1))
        key = self.keys.gather(1, pair.unsqueeze(1)).squeeze(1)
        value = self.values.gather(1, pair.unsqueeze(1)).squeeze(1)
        key_code = F.one_hot(key, self.num_symbols).float()
        value_code = F.one_hot(value, self.num_symbols).float() * (~querying).unsqueeze(1)
        return torch.cat([key_code, value_code, querying.float().unsqueeze(1)], dim=1)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        querying = self._querying()
        reward = (querying & (actions.long() == self.oracle_action())).float()
        return reward, querying

    def oracle_action(self) -> torch.Tensor:
        return self.values.gather(1, self.query.unsqueeze(1)).squeeze(1)


class CountRecall(_SequenceProbe):
    """Each step shows a symbol and a query symbol: answer how often the query has been shown.

    The count includes the current step and is capped at ``max_count``. Observation: one-hot
    symbol, one-hot query. Reward 1 per correct count. ``optimal_return = length``;
    ``random_return = length / (max_count + 1)``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        num_symbols: int = 4,
        length: int = 16,
        max_count: int = 8,
    ):
        # The sequence holds the shown symbols, then the queries.
        super().__init__(num_envs, device, num_symbols, 2 * check_positive_int("length", length, 1), length)
        self.length = length
        self.max_count = check_positive_int("max_count", max_count, 1)
        self.observation_space = _box(2 * num_symbols)
        self.action_space = gym.spaces.Discrete(max_count + 1)
        self.optimal_return = float(length)
        self.random_return = length / (max_count + 1)
        self.counts = torch.zeros(num_envs, num_symbols, dtype=torch.int64, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        super()._reset_envs(mask)
        self.counts = torch.where(mask.unsqueeze(1), 0, self.counts)

    def _observe(self) -> torch.Tensor:
        shown = self._symbol_at(self.elapsed_steps)
        query = self._symbol_at(self.elapsed_steps + self.length)
        return torch.cat([self._one_hot(shown), self._one_hot(query)], dim=1)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        answer = self.oracle_action()
        self.counts = self.counts + self._one_hot(self._symbol_at(self.elapsed_steps)).long()
        reward = (actions.long() == answer).float()
        return reward, self.elapsed_steps + 1 >= self.episode_length

    def oracle_action(self) -> torch.Tensor:
        shown = self._one_hot(self._symbol_at(self.elapsed_steps)).long()
        query = self._symbol_at(self.elapsed_steps + self.length)
        return (self.counts + shown).gather(1, query.unsqueeze(1)).squeeze(1).clamp(max=self.max_count)
