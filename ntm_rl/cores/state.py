"""Recurrent state as a structure of tensors, and the one set of helpers that handle it.

Every core's state is a ``NamedTuple`` whose leaves are tensors with the batch (environment)
dimension first; fields may nest (the NTM state holds its controller's state). Because the
structure is plain tuples, every operation the rest of ntm-rl needs -- selecting envs, joining
batches, detaching, moving devices, resetting finished episodes, saving -- is one generic map.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

State = Any
"""A tensor, or a (named) tuple of States. Leaves are batch-first tensors."""


def map_state(fn: Callable[..., torch.Tensor], *states: State) -> State:
    """Apply ``fn`` leaf by leaf to one or more states of the same structure."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return fn(*states)
    if isinstance(first, tuple):
        children = [map_state(fn, *parts) for parts in zip(*states, strict=True)]
        return type(first)(*children) if hasattr(first, "_fields") else tuple(children)
    raise TypeError(f"A core state holds tensors and tuples of them, got {type(first).__name__}.")


def state_leaves(state: State) -> list[torch.Tensor]:
    """The tensors of a state, in a fixed depth-first order."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in state_leaves(part)]


def index_state(state: State, index: torch.Tensor | slice | int | Sequence[int]) -> State:
    """Select environments: ``index`` applies to the batch dimension of every leaf."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return map_state(lambda leaf: leaf[index], state)


def cat_states(states: Sequence[State]) -> State:
    """Join states of the same structure along the batch dimension."""
    if len(states) == 0:
        raise ValueError("cat_states needs at least one state.")
    return map_state(lambda *leaves: torch.cat(leaves, dim=0), *states)


def detach_state(state: State) -> State:
    """Cut the autograd graph (truncated backpropagation through time)."""
    return map_state(torch.Tensor.detach, state)


def state_to(state: State, device: torch.device | str) -> State:
    """Move every leaf to ``device``."""
    return map_state(lambda leaf: leaf.to(device), state)


def unflatten_state(template: State, leaves: Sequence[torch.Tensor]) -> State:
    """The state with ``template``'s structure and ``leaves`` (in :func:`state_leaves` order)."""
    remaining = iter(leaves)
    state = map_state(lambda _: next(remaining), template)
    if next(remaining, None) is not None:
        raise ValueError("unflatten_state got more leaves than the template holds.")
    return state


def where_state(mask: torch.Tensor, if_true: State, if_false: State) -> State:
    """Per env, ``if_true`` where ``mask[b]`` is true, else ``if_false`` (a select on every leaf)."""
    mask = mask.to(torch.bool)

    def select(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)

    return map_state(select, if_true, if_false)


def reset_state(state: State, initial: State, episode_start: torch.Tensor) -> State:
    """Replace the state of every env whose ``episode_start`` is true by ``initial``.

    A select, not a multiplication by ``1 - done``: an NTM's initial state is not zero.
    ``initial`` may be expanded (stride-0) views; the result never aliases them.
    """
    return where_state(episode_start, initial, state)


def state_numel(state: State) -> int:
    """Floats per environment held by a state (all leaves, batch dimension excluded)."""
    return sum(leaf[0].numel() for leaf in state_leaves(state))


def save_state(state: State, path: str | os.PathLike) -> None:
    """Write a state to ``path`` (any device; loads back with :func:`load_state`)."""
    torch.save(state, path)


def load_state(path: str | os.PathLike, map_location: torch.device | str | None = None) -> State:
    """Read a state written by :func:`save_state`, without unpickling arbitrary objects."""
    from ntm_rl.cores import STATE_TYPES  # the registry of state classes that may be loaded

    with torch.serialization.safe_globals(list(STATE_TYPES)):
        return torch.load(path, map_location=map_location, weights_only=True)
