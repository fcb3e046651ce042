"""LSTM and GRU cores behind the :class:`MemoryCore` contract, for fair comparison with the NTM.

Both wrap a one-layer ``nn.LSTM`` / ``nn.GRU``. A sequence without resets after its first step
runs as one fused (cuDNN on CUDA) call; a sequence with resets inside falls back to stepping.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from ntm_rl.cores.base import MemoryCore, check_positive_int
from ntm_rl.cores.state import State, reset_state


class LSTMState(NamedTuple):
    """Hidden and cell state, each ``[B, H]``."""

    h: torch.Tensor
    c: torch.Tensor


class GRUState(NamedTuple):
    """Hidden state ``[B, H]``."""

    h: torch.Tensor


class _RNNCore(MemoryCore):
    """Shared code of the LSTM and GRU cores: ``nn.LSTM``/``nn.GRU`` with batch-first states."""

    rnn: nn.LSTM | nn.GRU

    def __init__(self, input_dim: int, hidden_size: int) -> None:
        super().__init__(input_dim)
        check_positive_int("hidden_size", hidden_size)
        self.hidden_size = hidden_size

    @property
    def output_dim(self) -> int:
        return self.hidden_size

    def _zeros(self, batch_size: int, device: torch.device | str | None) -> torch.Tensor:
        weight = self.rnn.weight_hh_l0
        return torch.zeros(
            batch_size, self.hidden_size, device=weight.device if device is None else device, dtype=weight.dtype
        )

    @abstractmethod
    def _run(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """``nn.LSTM``/``nn.GRU`` over ``x[T, B, D]`` from a batch-first state."""

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self._run(x.unsqueeze(0), state)
        return y.squeeze(0), state

    def forward(
        self, x: torch.Tensor, state: State, episode_starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        self._check_input(x, batch_dims=2)
        if episode_starts is None:
            return self._run(x, state)
        if episode_starts.shape != x.shape[:2] or bool(episode_starts[1:].any()):
            # Resets inside the sequence (or a shape error to report): step one at a time.
            return super().forward(x, state, episode_starts)
        state = reset_state(state, self.initial_state(x.shape[1], x.device), episode_starts[0])
        return self._run(x, state)


class LSTMCore(_RNNCore):
    """A one-layer LSTM core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    """

    def __init__(self, input_dim: int, hidden_size: int = 128) -> None:
        super().__init__(input_dim, hidden_size)
        self.rnn = nn.LSTM(input_dim, hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        zeros = self._zeros(batch_size, device)
        return LSTMState(zeros, zeros)

    def _run(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        y, (h, c) = self.rnn(x, (state.h.unsqueeze(0), state.c.unsqueeze(0)))
        return y, LSTMState(h.squeeze(0), c.squeeze(0))


class GRUCore(_RNNCore):
    """A one-layer GRU core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    """

    def __init__(self, input_dim: int, hidden_size: int = 128) -> None:
        super().__init__(input_dim, hidden_size)
        self.rnn = nn.GRU(input_dim, hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> GRUState:
        return GRUState(self._zeros(batch_size, device))

    def _run(self, x: torch.Tensor, state: GRUState) -> tuple[torch.Tensor, GRUState]:
        y, h = self.rnn(x, state.h.unsqueeze(0))
        return y, GRUState(h.squeeze(0))
