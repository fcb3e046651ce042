"""Neural Turing Machine core (Graves, Wayne and Danihelka 2014), batched over environments.

One step, for ``B`` environments at once:

1. the controller (LSTM, GRU or feed-forward) reads the input and the previous read vectors;
2. one linear layer emits the parameters of every head (key, strength, gate, shift, sharpening;
   write heads also erase and add vectors), clipped to ``[-clip, clip]``;
3. all ``R + W`` heads address the current memory together (content, interpolation, circular
   shift, sharpening: :mod:`ntm_rl.cores.addressing`);
4. the read heads read, then the write heads erase and add;
5. the output is the controller output concatenated with the ``R`` read vectors.

Reading before writing lets every head address the same memory in one batched pass; what a step
writes is readable from the next step on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ntm_rl.checks import check_positive_int
from ntm_rl.cores import addressing
from ntm_rl.cores.base import MemoryCore
from ntm_rl.cores.rnn import chrono_init_

ControllerType = Literal["lstm", "gru", "mlp"]
CONTROLLER_CHRONO_INIT = 1000
"""The default ``chrono_init`` of a recurrent controller: on the 100-step T-maze it took the NTM
from 1 seed of 3 to 3 of 3 (``benchmarks/defaults_sweep.py``, README)."""
MemoryInit = Literal["constant", "learned", "random"]
ReadInit = Literal["focused", "diffuse"]
SHIFT_INIT_LOGIT = 3.0
"""What ``shift_init`` adds to its offset's logit: about 0.9 of the shift distribution on it (S = 1)."""


class NTMState(NamedTuple):
    """State of an NTM core; every leaf is batch-first.

    ``controller`` is ``(h, c)`` for an LSTM controller, ``(h,)`` for a GRU and ``()`` for a
    feed-forward one.
    """

    controller: tuple[torch.Tensor, ...]
    memory: torch.Tensor  # [B, N, M]
    read_vectors: torch.Tensor  # [B, R, M], read at the previous step
    weights: torch.Tensor  # [B, R + W, N], read heads first


class NTMStepTrace(NamedTuple):
    """What the heads did in one step, for ``B`` envs (read heads first where all heads are listed).

    A core with a ``tracer`` calls it with one of these per step; :mod:`ntm_rl.inspect` records them.
    """

    read_weights: torch.Tensor  # [B, R, N]
    write_weights: torch.Tensor  # [B, W, N]
    strength: torch.Tensor  # [B, R + W], key strength beta
    gate: torch.Tensor  # [B, R + W], interpolation gate g (1: content only)
    shift: torch.Tensor  # [B, R + W, 2S + 1], shift distribution over offsets -S..S
    sharpening: torch.Tensor  # [B, R + W], gamma
    erase: torch.Tensor  # [B, W, M]
    add: torch.Tensor  # [B, W, M]


class NTMCore(MemoryCore):
    """A Neural Turing Machine as a :class:`MemoryCore`.

    :param input_dim: width of the inputs.
    :param controller: ``"lstm"``, ``"gru"`` or ``"mlp"`` (one feed-forward ReLU layer).
    :param controller_size: hidden width of the controller.
    :param memory_size: number of memory rows ``N``.
    :param word_size: width of a memory row ``M``.
    :param num_read_heads: ``R >= 1``.
    :param num_write_heads: ``W >= 1``.
    :param shift_range: ``S``; heads shift their focus by any offset in ``-S..S`` (``S < N``).
    :param memory_init: ``"constant"`` (every cell 1e-6, the default: it learns about twice as
        fast as the others, Collier and Beel 2018), ``"learned"`` (a trained parameter) or
        ``"random"`` (drawn once at construction, then fixed).
    :param clip: head parameters are clipped to ``[-clip, clip]`` before their activations
        (``None`` disables clipping).
    :param eps: stabiliser inside the cosine-similarity norms.
    :param shift_init: an offset in ``-S..S`` that every head's shift distribution favours at
        initialisation (its logit's bias raised by 3: about 0.9 on it with ``S = 1``); ``None``:
        uniform over the offsets. ``1`` starts the heads walking one row a step, so that each
        step's write lands in a fresh row (a ring buffer) instead of blurring into the last.
    :param read_init: where the read heads' weightings start: ``"focused"`` on row 0 with the
        write heads, or ``"diffuse"`` (evenly over the rows), so that how far they trail the
        write heads is learned instead of starting at zero. With ``shift_init=1`` and
        ``"diffuse"`` an NTM with 32x8 memory learns supervised repeat-previous at delay 8 in 180k
        steps, where either alone stays at 0.34-0.35 normalised after 200k (README, memory ladders).
    :param chrono_init: chrono initialisation of an LSTM or GRU controller, with memory timescales
        up to this many steps (:func:`~ntm_rl.cores.rnn.chrono_init_`: half the units, as the LSTM
        and GRU cores); ``None``: PyTorch's. An MLP controller has no gates and ignores the default.
    """

    def __init__(
        self,
        input_dim: int,
        controller: ControllerType = "lstm",
        controller_size: int = 64,
        memory_size: int = 32,
        word_size: int = 16,
        num_read_heads: int = 1,
        num_write_heads: int = 1,
        shift_range: int = 1,
        memory_init: MemoryInit = "constant",
        clip: float | None = 20.0,
        eps: float = 1e-6,
        shift_init: int | None = None,
        read_init: ReadInit = "focused",
        chrono_init: int | None = CONTROLLER_CHRONO_INIT,
    ) -> None:
        super().__init__(input_dim)
        check_positive_int("controller_size", controller_size)
        check_positive_int("memory_size", memory_size)
        check_positive_int("word_size", word_size)
        check_positive_int("num_read_heads", num_read_heads)
        check_positive_int("num_write_heads", num_write_heads)
        check_positive_int("shift_range", shift_range, minimum=0)
        if shift_range >= memory_size:
            raise ValueError(
                f"shift_range must be smaller than memory_size ({memory_size}), got {shift_range}. "
                f"Use shift_range <= {memory_size - 1} or more memory rows."
            )
        if shift_init is not None and not -shift_range <= shift_init <= shift_range:
            raise ValueError(
                f"shift_init must be an offset in -shift_range..shift_range ({-shift_range}..{shift_range}) "
                f"or None, got {shift_init!r}. Use a smaller offset or a larger shift_range."
            )
        if read_init not in ("focused", "diffuse"):
            raise ValueError(f"read_init must be 'focused' or 'diffuse', got {read_init!r}.")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip!r}.")

        self.controller_type = controller
        self.controller_size = controller_size
        self.memory_size = memory_size
        self.word_size = word_size
        self.num_read_heads = num_read_heads
        self.num_write_heads = num_write_heads
        self.shift_range = shift_range
        self.memory_init = memory_init
        self.shift_init = shift_init
        self.read_init = read_init
        self.clip = clip
        self.eps = eps

        controller_input = self.input_dim + num_read_heads * word_size
        if controller == "lstm":
            self.controller = nn.LSTMCell(controller_input, controller_size)
        elif controller == "gru":
            self.controller = nn.GRUCell(controller_input, controller_size)
        elif controller == "mlp":
            self.controller = nn.Linear(controller_input, controller_size)
        else:
            raise ValueError(f"controller must be 'lstm', 'gru' or 'mlp', got {controller!r}.")
        if controller == "mlp" and chrono_init not in (None, CONTROLLER_CHRONO_INIT):
            raise ValueError("chrono_init needs a recurrent controller ('lstm' or 'gru'), not 'mlp'.")
        self.chrono_init = None if controller == "mlp" else chrono_init  # an MLP has no gates to set
        if self.chrono_init is not None:
            chrono_init_(self.controller, self.chrono_init)

        # Per head: key (M), strength, gate, shift (2S + 1), sharpening; write heads add erase
        # and add vectors (2M). One linear layer emits all of them.
        heads = num_read_heads + num_write_heads
        self._addressing_width = word_size + 2 * shift_range + 4
        self.head_params = nn.Linear(controller_size, heads * self._addressing_width + num_write_heads * 2 * word_size)
        if shift_init is not None:
            # in each head's [key (M), strength, gate, shift (2S + 1), sharpening], offset o's logit
            favoured = torch.arange(heads) * self._addressing_width + word_size + 2 + shift_range + shift_init
            with torch.no_grad():
                self.head_params.bias[favoured] += SHIFT_INIT_LOGIT

        memory_shape = (memory_size, word_size)
        if memory_init == "constant":
            self.register_buffer("memory_bias", torch.full(memory_shape, 1e-6))
        elif memory_init == "learned":
            self.memory_bias = nn.Parameter(torch.empty(memory_shape).uniform_(-1, 1) / math.sqrt(word_size))
        elif memory_init == "random":
            self.register_buffer("memory_bias", torch.empty(memory_shape).uniform_(-1, 1) / math.sqrt(word_size))
        else:
            raise ValueError(f"memory_init must be 'constant', 'learned' or 'random', got {memory_init!r}.")

        self.initial_read = nn.Parameter(torch.randn(num_read_heads, word_size) * 0.01)
        # Initial weightings start focused on row 0, which breaks the symmetry of a constant
        # memory: every row looks alike to content addressing until something is written.
        logits = torch.zeros(heads, memory_size)
        logits[:, 0] = math.log(memory_size) + 3.0
        if read_init == "diffuse":
            logits[:num_read_heads] = 0.0
        self.initial_weight_logits = nn.Parameter(logits)
        # Called with an NTMStepTrace after every step when set (inspection); None costs nothing.
        self.tracer: Callable[[NTMStepTrace], None] | None = None

    @property
    def output_dim(self) -> int:
        return self.controller_size + self.num_read_heads * self.word_size

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> NTMState:
        device = self.memory_bias.device if device is None else device
        zeros = torch.zeros(batch_size, self.controller_size, device=device, dtype=self.memory_bias.dtype)
        if self.controller_type == "lstm":
            controller: tuple[torch.Tensor, ...] = (zeros, zeros)
        elif self.controller_type == "gru":
            controller = (zeros,)
        else:
            controller = ()
        return NTMState(
            controller=controller,
            memory=self.memory_bias.to(device).expand(batch_size, -1, -1),
            read_vectors=self.initial_read.to(device).expand(batch_size, -1, -1),
            weights=torch.softmax(self.initial_weight_logits, dim=-1).to(device).expand(batch_size, -1, -1),
        )

    def _step(self, x: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        batch = x.shape[0]
        controller_input = torch.cat([x, state.read_vectors.reshape(batch, -1)], dim=-1)
        if self.controller_type == "lstm":
            h, c = self.controller(controller_input, state.controller)
            controller_state: tuple[torch.Tensor, ...] = (h, c)
        elif self.controller_type == "gru":
            h = self.controller(controller_input, state.controller[0])
            controller_state = (h,)
        else:
            h = F.relu(self.controller(controller_input))
            controller_state = ()

        params = self.head_params(h)
        if self.clip is not None:
            params = params.clamp(-self.clip, self.clip)
        heads = self.num_read_heads + self.num_write_heads
        m, s = self.word_size, 2 * self.shift_range + 1
        addressing_params = params[:, : heads * self._addressing_width].view(batch, heads, -1)
        key, strength, gate, shift, sharpening = addressing_params.split([m, 1, 1, s, 1], dim=-1)
        erase, add = params[:, heads * self._addressing_width :].view(batch, self.num_write_heads, 2 * m).split(m, -1)

        strength, gate = F.softplus(strength).squeeze(-1), torch.sigmoid(gate).squeeze(-1)
        shift, sharpening = torch.softmax(shift, dim=-1), 1.0 + F.softplus(sharpening).squeeze(-1)
        erase, add = torch.sigmoid(erase), torch.tanh(add)
        weights = addressing.address(
            state.memory, torch.tanh(key), strength, gate, shift, sharpening, state.weights, self.eps
        )

        read_weights, write_weights = weights.split([self.num_read_heads, self.num_write_heads], dim=1)
        read_vectors, memory = addressing.read_write(state.memory, read_weights, write_weights, erase, add)
        if self.tracer is not None:
            self.tracer(NTMStepTrace(read_weights, write_weights, strength, gate, shift, sharpening, erase, add))

        y = torch.cat([h, read_vectors.reshape(batch, -1)], dim=-1)
        return y, NTMState(controller_state, memory, read_vectors, weights)
