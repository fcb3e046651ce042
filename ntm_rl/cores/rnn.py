"""LSTM and GRU cores behind the :class:`MemoryCore` contract, for fair comparison with the NTM.

Both wrap a one-layer ``nn.LSTM`` / ``nn.GRU``. A sequence runs as one fused call (cuDNN on CUDA);
where episodes start inside it, its episodes go in side by side, right-padded (the LSTM's as a
packed sequence, since its cell state at each episode's end is not among its outputs).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ntm_rl.checks import check_positive_int
from ntm_rl.cores.base import MemoryCore
from ntm_rl.cores.state import State


def chrono_init_(rnn: nn.LSTM | nn.LSTMCell | nn.GRU | nn.GRUCell, max_timescale: int) -> None:
    """Chrono initialisation (Tallec and Ollivier 2018) of half the units of a one-layer LSTM or GRU, in place.

    With PyTorch's default init every unit forgets about half of its state per step, so nothing
    learnable survives a gap of 100 steps. Here the first half of the units get gate biases that
    spread their memory timescales log-uniformly from 1 to about ``max_timescale`` steps: an LSTM's
    forget bias is ``log(u)`` with ``log(u) ~ U(0, log(max_timescale - 1))`` and its input bias the
    negative of it; a GRU's update-gate bias is ``log(u)`` (PyTorch's GRU keeps the old state where
    its update gate is 1). Those units hold a value across up to ``max_timescale`` steps from the
    first update on, and the gradient that teaches them what to hold reaches back that far. The
    other half keep PyTorch's init: fast units, which short recalls learn with.

    Why not the paper's recipe (every unit, ``u ~ U(1, max_timescale - 1)``): it leaves almost no
    fast unit, and a GRU agent learned repeat-previous (delay 3) to 0.67 of the optimum in 200k steps
    where PyTorch's init reached 1.00; timescales spread log-uniformly over every unit reached 0.90;
    half the units log-uniform, 1.00 (3 seeds). Each of the three learned a 100-step T-maze cue on
    seed 0; half the units log-uniform did on 2 seeds of 3 (``benchmarks/defaults_sweep.py``, README).
    """
    if max_timescale < 3:
        raise ValueError(f"chrono_init must be at least 3 (a timescale in steps), got {max_timescale}.")
    hidden = rnn.hidden_size
    slow = max(1, hidden // 2)
    bias_ih, bias_hh = (getattr(rnn, name) for name in ("bias_ih", "bias_hh")) if isinstance(
        rnn, nn.LSTMCell | nn.GRUCell
    ) else (rnn.bias_ih_l0, rnn.bias_hh_l0)  # fmt: skip
    log_timescales = torch.empty(slow, device=bias_ih.device).uniform_(0.0, math.log(max_timescale - 1))
    gate = slice(hidden, hidden + slow)  # the LSTM's forget gate, the GRU's update gate
    with torch.no_grad():
        bias_ih[gate], bias_hh[gate] = log_timescales, 0.0
        if isinstance(rnn, nn.LSTM | nn.LSTMCell):  # gates i, f, g, o: the input gate mirrors the forget gate
            bias_ih[:slow], bias_hh[:slow] = -log_timescales, 0.0


class LSTMState(NamedTuple):
    """Hidden and cell state, each ``[B, H]``."""

    h: torch.Tensor
    c: torch.Tensor


class GRUState(NamedTuple):
    """Hidden state ``[B, H]``."""

    h: torch.Tensor


class _RNNCore(MemoryCore):
    """Shared code of the LSTM and GRU cores: ``nn.LSTM``/``nn.GRU`` with batch-first states."""

    rnn_class: type[nn.LSTM] | type[nn.GRU]

    def __init__(self, input_dim: int, hidden_size: int, chrono_init: int | None) -> None:
        super().__init__(input_dim)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.chrono_init = chrono_init
        self.rnn = self.rnn_class(self.input_dim, self.hidden_size)
        if chrono_init is not None:
            chrono_init_(self.rnn, chrono_init)

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
        # One fused call over the whole sequence (the fused kernel keeps a few floats per unit and
        # step, so gradient checkpointing is not needed here). Sequences of several lengths: see
        # the subclasses.
        if lengths is None:
            return self._run(x, state)
        return self._unroll_padded(x, state, lengths)

    @abstractmethod
    def _unroll_padded(self, x: torch.Tensor, state: State, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Right-padded sequences of ``lengths`` steps: outputs, and each one's state after its last step."""


class LSTMCore(_RNNCore):
    """A one-layer LSTM core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    :param chrono_init: half the units get memory timescales spread up to this many steps
        (:func:`chrono_init_`); ``None``: PyTorch's initialisation for all.
    """

    rnn_class = nn.LSTM

    def __init__(self, input_dim: int, hidden_size: int = 128, chrono_init: int | None = 1000) -> None:
        super().__init__(input_dim, hidden_size, chrono_init)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        zeros = self._zeros(batch_size, device)
        return LSTMState(zeros, zeros)

    def _run(
        self, x: torch.Tensor | PackedSequence, state: LSTMState
    ) -> tuple[torch.Tensor | PackedSequence, LSTMState]:
        y, (h, c) = self.rnn(x, (state.h.unsqueeze(0), state.c.unsqueeze(0)))
        return y, LSTMState(h.squeeze(0), c.squeeze(0))

    def _unroll_padded(
        self, x: torch.Tensor, state: LSTMState, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, LSTMState]:
        # Packed: the cell state after each sequence's own last step is not among the outputs.
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        y, state = self._run(packed, state)
        return pad_packed_sequence(y, total_length=x.shape[0])[0], state


class GRUCore(_RNNCore):
    """A one-layer GRU core.

    :param input_dim: width of the inputs.
    :param hidden_size: width of the hidden state and of the outputs.
    :param chrono_init: half the units get memory timescales spread up to this many steps
        (:func:`chrono_init_`); ``None``: PyTorch's initialisation for all.
    """

    rnn_class = nn.GRU

    def __init__(self, input_dim: int, hidden_size: int = 128, chrono_init: int | None = 1000) -> None:
        super().__init__(input_dim, hidden_size, chrono_init)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> GRUState:
        return GRUState(self._zeros(batch_size, device))

    def _run(self, x: torch.Tensor | PackedSequence, state: GRUState) -> tuple[torch.Tensor | PackedSequence, GRUState]:
        y, h = self.rnn(x, state.h.unsqueeze(0))
        return y, GRUState(h.squeeze(0))

    def _unroll_padded(self, x: torch.Tensor, state: GRUState, lengths: torch.Tensor) -> tuple[torch.Tensor, GRUState]:
        # A GRU's state is its output, so the padded sequences run as one plain fused call (about
        # twice as fast as packed on a CPU) and each state is read at its sequence's last step.
        y, _ = self._run(x, state)
        return y, GRUState(y[lengths - 1, torch.arange(len(lengths), device=y.device)])
