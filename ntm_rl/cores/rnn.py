"""LSTM and GRU cores behind the :class:`MemoryCore` contract, for fair comparison with the NTM.

Both wrap a one-layer ``nn.LSTM`` / ``nn.GRU``. A sequence runs as one fused call (cuDNN on CUDA);
where episodes start inside it, its episodes go in side by side as a packed sequence.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ntm_rl.cores.base import MemoryCore, check_positive_int
from ntm_rl.cores.state import State


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
        self.hidden_size = check_positive_int("hidden_size", hidden_size)

    @property
    def output_dim(self) -> int:
        return self.hidden_size

    def _zeros(self, batch_size: int, device: torch.device | str | None) -> torch.Tensor:
        weight = self.rnn.weight_hh_l0
        return torch.zeros(
            batch_size, self.hidden_size, device=weight.device if device is None else device, dtype=weight.dtype
        )

    @abstractmethod
    def _run(self, x: torch.Tensor | PackedSequence, state: State) -> tuple[torch.Tensor | PackedSequence, State]:
        """``nn.LSTM``/``nn.GRU`` over ``x[T, B, D]`` (or packed sequences) from a batch-first state."""

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self._run(x.unsqueeze(0), state)
        return y.squeeze(0), state

    def _unroll(
        self, x: torch.Tensor, state: State, lengths: torch.Tensor | None, checkpoint_steps: int | None
    ) -> tuple[torch.Tensor, State]:
        # One fused call over the whole sequence; sequences of several lengths go in packed, which
        # also returns each one's state after its own last step. The fused kernel keeps a few
        # floats per unit and step, so gradient checkpointing is not needed here.
        if lengths is None:
            return self._run(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        y, state = self._run(packed, state)
        return pad_packed_sequence(y, total_length=x.shape[0])[0], state


class LSTMCore(_RNNCore):
    """A one-layer LSTM core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    """

    def __init__(self, input_dim: int, hidden_size: int = 128) -> None:
        super().__init__(input_dim, hidden_size)
        self.rnn = nn.LSTM(self.input_dim, self.hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        zeros = self._zeros(batch_size, device)
        return LSTMState(zeros, zeros)

    def _run(
        self, x: torch.Tensor | PackedSequence, state: LSTMState
    ) -> tuple[torch.Tensor | PackedSequence, LSTMState]:
        y, (h, c) = self.rnn(x, (state.h.unsqueeze(0), state.c.unsqueeze(0)))
        return y, LSTMState(h.squeeze(0), c.squeeze(0))


class GRUCore(_RNNCore):
    """A one-layer GRU core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    """

    def __init__(self, input_dim: int, hidden_size: int = 128) -> None:
        super().__init__(input_dim, hidden_size)
        self.rnn = nn.GRU(self.input_dim, self.hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> GRUState:
        return GRUState(self._zeros(batch_size, device))

    def _run(self, x: torch.Tensor | PackedSequence, state: GRUState) -> tuple[torch.Tensor | PackedSequence, GRUState]:
        y, h = self.rnn(x, state.h.unsqueeze(0))
        return y, GRUState(h.squeeze(0))
