"""Rollout storage for recurrent agents, on the training device.

A rollout of ``n_steps`` steps from ``n_envs`` environments is cut into sequences of
``sequence_length`` steps (the whole rollout when it equals ``n_steps``: episodes are then cut only
where they end, or at the rollout's edges). The policy's recurrent state is stored only where a
sequence starts (an NTM state is some 3,000 floats per env: storing it at every step would dwarf
everything else), and training unrolls each sequence from that state, resetting envs wherever an
episode starts inside it.

With ``burn_in`` steps (R2D2's burn-in), the state is also stored that many steps before each
sequence start, so that training can recompute a sequence's starting state with the current
parameters instead of using the one the rollout's (older) parameters produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces

from ntm_rl.cores.state import State, cat_states, detach_state, index_state

Observation = torch.Tensor | dict[str, torch.Tensor]


class BurnIn(NamedTuple):
    """The ``k`` steps before each sequence of a minibatch, to recompute its starting state.

    ``observations`` and ``episode_starts`` are ``[k, b, ...]``, ``state`` the stored state ``k``
    steps before the sequence; ``has_history[b]`` is false for sequences that start the rollout
    (there is nothing before them to burn in: their stored state is used as it is).
    """

    observations: Observation
    episode_starts: torch.Tensor
    state: State
    has_history: torch.Tensor


class RecurrentBatch(NamedTuple):
    """A minibatch of ``b`` whole sequences of ``L`` steps; per-step data is ``[L, b, ...]``."""

    observations: Observation
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    episode_starts: torch.Tensor
    state: State
    burn_in: BurnIn | None = None


def _columns(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The sequences ``index`` of per-step data ``[L, n, ...]``."""
    return x[:, index]


def _torch_dtype(space: spaces.Space) -> torch.dtype:
    if isinstance(space, spaces.Box):
        return torch.uint8 if space.dtype == np.uint8 else torch.float32
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return torch.int64
    return torch.float32


def _shape(space: spaces.Space) -> tuple[int, ...]:
    return () if isinstance(space, spaces.Discrete) else tuple(space.shape)


class RecurrentRolloutBuffer:
    """Device-resident rollout buffer with recurrent states at sequence starts.

    :param n_steps: steps per environment per rollout (a multiple of ``sequence_length``).
    :param n_envs: environments.
    :param observation_space: observation space (``Dict`` spaces store one tensor per key).
    :param action_space: action space.
    :param sequence_length: training sequence length ``L``.
    :param device: where everything is stored.
    :param gamma: discount.
    :param gae_lambda: GAE's lambda.
    :param burn_in: steps before each sequence to unroll without gradient from the state stored
        there, giving the sequence a starting state from the current parameters
        (``0 <= burn_in <= sequence_length``; 0: the stored state as it is).
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        sequence_length: int,
        device: torch.device | str,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        burn_in: int = 0,
    ):
        if sequence_length < 1 or n_steps % sequence_length != 0:
            raise ValueError(
                f"n_steps ({n_steps}) must be a multiple of sequence_length ({sequence_length}); "
                f"try sequence_length={np.gcd(n_steps, sequence_length)}."
            )
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in <= sequence_length:
            raise ValueError(
                f"burn_in must be an integer from 0 to sequence_length ({sequence_length}), got {burn_in!r}."
            )
        self.n_steps, self.n_envs, self.sequence_length, self.burn_in = n_steps, n_envs, sequence_length, burn_in
        self.device, self.gamma, self.gae_lambda = torch.device(device), gamma, gae_lambda

        def storage(space: spaces.Space) -> torch.Tensor:
            return torch.zeros(n_steps, n_envs, *_shape(space), dtype=_torch_dtype(space), device=self.device)

        if isinstance(observation_space, spaces.Dict):
            self.observations: Observation = {key: storage(space) for key, space in observation_space.spaces.items()}
        else:
            self.observations = storage(observation_space)
        self.actions = storage(action_space)  # MultiBinary actions are float32, as the distribution's

        def zeros() -> torch.Tensor:
            return torch.zeros(n_steps, n_envs, device=self.device)

        self.rewards, self.values, self.log_probs = zeros(), zeros(), zeros()
        self.advantages, self.returns = zeros(), zeros()
        self.episode_starts = torch.zeros(n_steps, n_envs, dtype=torch.bool, device=self.device)
        self.states: list[State] = []  # at each sequence start
        self.burn_in_states: list[State] = []  # burn_in steps before each sequence start but the first
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0
        self.states, self.burn_in_states = [], []

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def add(
        self,
        observation: Observation,
        action: torch.Tensor,
        reward: torch.Tensor,
        episode_start: torch.Tensor,
        value: torch.Tensor,
        log_prob: torch.Tensor,
        state: State,
    ) -> None:
        """Store one step; ``state`` is the recurrent state before the step (kept at sequence starts)."""
        if self.pos % self.sequence_length == 0:
            self.states.append(detach_state(state))
        ahead = self.pos + self.burn_in  # a sequence starts burn_in steps ahead: its burn-in starts here
        if self.burn_in > 0 and ahead % self.sequence_length == 0 and 0 < ahead < self.n_steps:
            self.burn_in_states.append(detach_state(state))
        if isinstance(self.observations, dict):
            for key, storage in self.observations.items():
                storage[self.pos] = observation[key]
        else:
            self.observations[self.pos] = observation
        self.actions[self.pos] = action.reshape(self.actions.shape[1:])
        self.rewards[self.pos] = reward
        self.episode_starts[self.pos] = episode_start
        self.values[self.pos] = value
        self.log_probs[self.pos] = log_prob
        self.pos += 1

    def compute_returns_and_advantage(self, last_values: torch.Tensor, last_episode_starts: torch.Tensor) -> None:
        """Generalised advantage estimation; ``last_*`` belong to the step after the rollout."""
        advantage = torch.zeros(self.n_envs, device=self.device)
        next_values, next_starts = last_values, last_episode_starts.float()
        for t in reversed(range(self.n_steps)):
            not_done = 1.0 - next_starts
            delta = self.rewards[t] + self.gamma * next_values * not_done - self.values[t]
            advantage = delta + self.gamma * self.gae_lambda * not_done * advantage
            self.advantages[t] = advantage
            next_values, next_starts = self.values[t], self.episode_starts[t].float()
        self.returns = self.advantages + self.values

    def sequences(self, sequences_per_batch: int, generator: torch.Generator | None = None) -> Iterator[RecurrentBatch]:
        """Minibatches of whole sequences in random order, covering the rollout once."""
        length, count = self.sequence_length, self.n_steps // self.sequence_length

        def by_sequence(x: torch.Tensor) -> torch.Tensor:  # [T, B, ...] -> [L, count * B, ...]
            x = x.reshape(count, length, self.n_envs, *x.shape[2:]).transpose(0, 1)
            return x.reshape(length, count * self.n_envs, *x.shape[3:])

        def map_observations(fn, observations: Observation) -> Observation:
            return {k: fn(v) for k, v in observations.items()} if isinstance(observations, dict) else fn(observations)

        data: dict[str, Any] = {
            "observations": map_observations(by_sequence, self.observations),
            "actions": by_sequence(self.actions),
            "old_values": by_sequence(self.values),
            "old_log_prob": by_sequence(self.log_probs),
            "advantages": by_sequence(self.advantages),
            "returns": by_sequence(self.returns),
            "episode_starts": by_sequence(self.episode_starts),
        }
        states = cat_states(self.states)  # sequence j = k * n_envs + env, as by_sequence orders them
        burn_in = None
        if self.burn_in > 0:
            # Sequence k burns in over steps [k L - burn_in, k L); the first has no steps before it,
            # and a window at the rollout's start stands in for its (unused) burn-in.
            first_step = (torch.arange(count, device=self.device) * length - self.burn_in).clamp(min=0)
            steps = first_step.unsqueeze(1) + torch.arange(self.burn_in, device=self.device)  # [count, k]

            def by_window(x: torch.Tensor) -> torch.Tensor:  # [T, B, ...] -> [k, count * B, ...]
                return x[steps].transpose(0, 1).reshape(self.burn_in, count * self.n_envs, *x.shape[2:])

            has_history = (torch.arange(count, device=self.device) > 0).repeat_interleave(self.n_envs)
            burn_in = BurnIn(
                map_observations(by_window, self.observations),
                by_window(self.episode_starts),
                cat_states([self.states[0], *self.burn_in_states]),
                has_history,
            )
        order = torch.randperm(count * self.n_envs, generator=generator).to(self.device)
        for start in range(0, len(order), sequences_per_batch):
            index = order[start : start + sequences_per_batch]
            columns = partial(_columns, index=index)
            picked = {key: map_observations(columns, value) for key, value in data.items()}
            picked_burn_in = None
            if burn_in is not None:
                picked_burn_in = BurnIn(
                    map_observations(columns, burn_in.observations),
                    burn_in.episode_starts[:, index],
                    index_state(burn_in.state, index),
                    burn_in.has_history[index],
                )
            yield RecurrentBatch(**picked, state=index_state(states, index), burn_in=picked_burn_in)
