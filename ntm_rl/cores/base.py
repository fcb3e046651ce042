"""The ``MemoryCore`` contract shared by the NTM, LSTM and GRU cores.

A core is the recurrent part of a policy: it maps a feature vector and a state to an output
vector and the next state, for ``B`` environments at once. Policies and buffers see only this
interface, so comparing NTM, LSTM and GRU changes nothing before or after the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ntm_rl.cores.state import State, reset_state


class MemoryCore(nn.Module, ABC):
    """Base class of recurrent cores.

    :param input_dim: width ``D`` of the inputs ``x``.
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        check_positive_int("input_dim", input_dim)
        self.input_dim = input_dim

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Width ``H`` of the outputs ``y``."""

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state of ``batch_size`` environments at the start of an episode."""

    @abstractmethod
    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One timestep without resets: ``x[B, D]`` -> ``y[B, H]``, next state."""

    def step(
        self, x: torch.Tensor, state: State, episode_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One timestep for ``B`` environments.

        :param x: inputs ``[B, D]``.
        :param state: the state after the previous step.
        :param episode_start: ``[B]`` bool (or 0/1); where true, that env's state is replaced
            by the initial state before the step.
        :return: outputs ``[B, H]`` and the next state.
        """
        self._check_input(x, batch_dims=1)
        if episode_start is not None:
            state = reset_state(state, self.initial_state(x.shape[0], x.device), episode_start)
        return self._step(x, state)

    def forward(
        self, x: torch.Tensor, state: State, episode_starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Unroll over a sequence, resetting each env wherever ``episode_starts`` is true.

        :param x: inputs ``[T, B, D]``.
        :param state: the state before the first step.
        :param episode_starts: ``[T, B]``; ``episode_starts[t, b]`` resets env ``b`` before step
            ``t``, at the start of the sequence or inside it.
        :return: outputs ``[T, B, H]`` and the state after the last step.
        """
        self._check_input(x, batch_dims=2)
        steps = x.shape[0]
        if episode_starts is None:
            resets = [False] * steps
        else:
            if episode_starts.shape != x.shape[:2]:
                raise ValueError(
                    f"episode_starts has shape {tuple(episode_starts.shape)}, expected {tuple(x.shape[:2])} "
                    "(one flag per timestep and env)."
                )
            # One host sync per sequence, so that steps without a reset skip the select.
            resets = episode_starts.any(dim=1).tolist()
        initial = self.initial_state(x.shape[1], x.device) if any(resets) else None
        outputs = []
        for t in range(steps):
            if resets[t]:
                state = reset_state(state, initial, episode_starts[t])
            y, state = self._step(x[t], state)
            outputs.append(y)
        return torch.stack(outputs), state

    def compile_step(self, **compile_kwargs) -> MemoryCore:
        """Compile one timestep with ``torch.compile``; ``step`` and ``forward`` then use it.

        Fusing a step's many small operations into a few kernels speeds up the NTM by about 1.5x
        on a CPU (``benchmarks/core_speed.py --compile``) at the price of a compilation of a
        minute or less at the first call (and at the first with another batch size, after
        which shapes are treated as dynamic). ``compile_kwargs`` go to ``torch.compile``.

        :return: this core.
        """
        self._step = torch.compile(self._step, **compile_kwargs)
        return self

    def _check_input(self, x: torch.Tensor, batch_dims: int) -> None:
        expected = "[B, D]" if batch_dims == 1 else "[T, B, D]"
        if x.dim() != batch_dims + 1 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape {expected} with D={self.input_dim}, "
                f"got {tuple(x.shape)}. Pass input_dim={x.shape[-1]} when building the core, "
                "or reshape the input."
            )


def check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
