"""The ``MemoryCore`` contract shared by the NTM, LSTM and GRU cores.

A core is the recurrent part of a policy: it maps a feature vector and a state to an output
vector and the next state, for ``B`` environments at once. Policies and buffers see only this
interface, so comparing NTM, LSTM and GRU changes nothing before or after the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ntm_rl.checks import check_positive_int
from ntm_rl.cores.state import (
    State,
    index_state,
    map_state,
    reset_state,
    state_leaves,
    unflatten_state,
    where_state,
)


class MemoryCore(nn.Module, ABC):
    """Base class of recurrent cores.

    :param input_dim: width ``D`` of the inputs ``x``.
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_dim = check_positive_int("input_dim", input_dim)

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
        self,
        x: torch.Tensor,
        state: State,
        episode_starts: torch.Tensor | None = None,
        checkpoint_steps: int | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Unroll over a sequence, resetting each env wherever ``episode_starts`` is true.

        Where episodes start inside the sequence, the episodes are laid side by side first
        (:class:`EpisodeSegments`) and unrolled together, so that the number of sequential steps is
        the longest episode's, not the sequence's, and nothing needs a reset inside the unroll.

        :param x: inputs ``[T, B, D]``.
        :param state: the state before the first step.
        :param episode_starts: ``[T, B]``; ``episode_starts[t, b]`` resets env ``b`` before step
            ``t``, at the start of the sequence or inside it.
        :param checkpoint_steps: keep activations for this many steps at a time and recompute them
            in the backward pass (gradient checkpointing), bounding activation memory on long
            sequences for about one more forward pass of time; ``None``: keep them all.
        :return: outputs ``[T, B, H]`` and the state after the last step.
        """
        self._check_input(x, batch_dims=2)
        if checkpoint_steps is not None:
            check_positive_int("checkpoint_steps", checkpoint_steps)
        if episode_starts is None:
            return self._unroll(x, state, None, checkpoint_steps)
        if episode_starts.shape != x.shape[:2]:
            raise ValueError(
                f"episode_starts has shape {tuple(episode_starts.shape)}, expected {tuple(x.shape[:2])} "
                "(one flag per timestep and env)."
            )
        batch = x.shape[1]
        if not bool(episode_starts[1:].any()):  # one host sync per sequence
            state = reset_state(state, self.initial_state(batch, x.device), episode_starts[0])
            return self._unroll(x, state, None, checkpoint_steps)
        segments = EpisodeSegments(episode_starts)
        initial = segments.initial_states(state, self.initial_state(segments.count, x.device))
        y, final = self._unroll(segments.split(x), initial, segments.lengths, checkpoint_steps)
        return segments.merge(y), index_state(final, segments.last)

    def _unroll(
        self, x: torch.Tensor, state: State, lengths: torch.Tensor | None, checkpoint_steps: int | None
    ) -> tuple[torch.Tensor, State]:
        """Step through ``x[T, B, D]`` without resets; ``lengths[b] <= T`` ends sequence ``b`` early
        (right-padded: its outputs after that are undefined; the state returned is its state after
        its last step).

        Cores with a fused sequence kernel override this (LSTM, GRU); this one steps ``_step``.
        """
        steps = x.shape[0]

        def run(first: int, last: int, x_chunk: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            # A sequence that ends early keeps stepping on padding (its outputs are dropped) and
            # its final state is picked once, after the loop: holding it with a select at every
            # step took about 8% of an NTM agent's training time.
            if lengths is None:
                held, needed = None, {last - first}
            else:  # steps of this chunk each sequence takes: 0 if it ended before the chunk
                held = (lengths - first).clamp(0, last - first)
                needed = set(held.tolist())  # one host sync per chunk
            kept = {0: state} if 0 in needed else {}
            outputs = []
            for t in range(last - first):
                y, state = self._step(x_chunk[t], state)
                outputs.append(y)
                if t + 1 in needed:
                    kept[t + 1] = state
            if len(kept) == 1:
                return torch.stack(outputs), next(iter(kept.values()))
            taken = sorted(kept)
            position = torch.searchsorted(torch.tensor(taken, device=held.device), held)
            batch = torch.arange(held.shape[0], device=held.device)
            final = map_state(lambda *leaves: torch.stack(leaves)[position, batch], *(kept[i] for i in taken))
            return torch.stack(outputs), final

        if checkpoint_steps is None or checkpoint_steps >= steps or not torch.is_grad_enabled():
            return run(0, steps, x, state)
        outputs = []
        for first in range(0, steps, checkpoint_steps):
            last = min(first + checkpoint_steps, steps)

            def chunk(x_chunk: torch.Tensor, *leaves: torch.Tensor, first=first, last=last, template=state):
                y, next_state = run(first, last, x_chunk, unflatten_state(template, leaves))
                return y, *state_leaves(next_state)

            y, *leaves = checkpoint(chunk, x[first:last], *state_leaves(state), use_reentrant=False)
            state = unflatten_state(state, leaves)
            outputs.append(y)
        return torch.cat(outputs), state

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


class EpisodeSegments:
    """The episodes inside a batch of sequences ``[T, B]``, laid side by side as ``[L, S]``.

    A segment is a run of steps of one env that no episode start interrupts: each env's first
    step and each ``episode_starts[t, b]`` with ``t > 0`` begins one. Segments are right-padded to
    the longest, ``L``; unrolling them together takes ``L`` sequential steps instead of ``T`` and
    needs no reset inside the unroll (a segment starts from the initial state or, for an env's
    first segment, from the state it carries in).

    :param episode_starts: ``[T, B]`` bool.
    """

    def __init__(self, episode_starts: torch.Tensor) -> None:
        steps, batch = episode_starts.shape
        begins = episode_starts.t().clone().bool()  # env-major [B, T]
        self.carries_state = ~begins[:, 0]  # [B]: the env's first segment goes on from its state
        begins[:, 0] = True
        begins = begins.flatten()
        segment = torch.cumsum(begins, 0) - 1  # of every (env, step), env-major
        first_step = torch.nonzero(begins).squeeze(1)  # flat index of every segment's first step
        self.count = len(first_step)
        self.lengths = torch.bincount(segment, minlength=self.count)
        self.max_length = int(self.lengths.max())
        self.steps, self.batch = steps, batch
        self._segment = segment
        self._position = torch.arange(steps * batch, device=segment.device) - first_step[segment]  # step in segment
        self.env = first_step // steps  # [S], the env each segment belongs to
        self.first = (first_step % steps) == 0  # [S], an env's first segment
        self.last = segment.view(batch, steps)[:, -1]  # [B], each env's last segment

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...]`` -> ``[L, S, ...]`` (zeros after each segment's end)."""
        flat = x.transpose(0, 1).reshape(self.steps * self.batch, *x.shape[2:])
        out = x.new_zeros(self.max_length, self.count, *x.shape[2:])
        return out.index_put((self._position, self._segment), flat)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """``[L, S, ...]`` -> ``[T, B, ...]``, the inverse of :meth:`split`."""
        flat = y[self._position, self._segment]
        return flat.view(self.batch, self.steps, *y.shape[2:]).transpose(0, 1)

    def initial_states(self, state: State, initial: State) -> State:
        """Each segment's state before its first step: ``state`` of its env for an env's first
        segment that goes on from it, ``initial`` (a state of ``S`` envs) for every other."""
        carried = index_state(state, self.env)
        return where_state(self.first & self.carries_state[self.env], carried, initial)
