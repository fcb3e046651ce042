"""Recurrent memory cores: the NTM, and LSTM and GRU behind the same :class:`MemoryCore` contract."""

from ntm_rl.cores.base import MemoryCore
from ntm_rl.cores.ntm import NTMCore, NTMState, NTMStepTrace
from ntm_rl.cores.rnn import GRUCore, GRUState, LSTMCore, LSTMState
from ntm_rl.cores.state import (
    cat_states,
    detach_state,
    index_state,
    load_state,
    map_state,
    reset_state,
    save_state,
    state_leaves,
    state_numel,
    state_to,
    unflatten_state,
    where_state,
)

CORES: dict[str, type[MemoryCore]] = {"ntm": NTMCore, "lstm": LSTMCore, "gru": GRUCore}
"""Core classes by the name a config or ``policy_kwargs`` uses."""

STATE_TYPES = (NTMState, LSTMState, GRUState)
"""State classes that :func:`load_state` may reconstruct."""


def make_core(name: str, input_dim: int, **kwargs) -> MemoryCore:
    """Build a core by name (``"ntm"``, ``"lstm"`` or ``"gru"``) with its keyword arguments."""
    if name not in CORES:
        raise ValueError(f"Unknown core {name!r}; choose one of {sorted(CORES)}.")
    return CORES[name](input_dim, **kwargs)


__all__ = [
    "CORES",
    "GRUCore",
    "GRUState",
    "LSTMCore",
    "LSTMState",
    "MemoryCore",
    "NTMCore",
    "NTMState",
    "NTMStepTrace",
    "STATE_TYPES",
    "cat_states",
    "detach_state",
    "index_state",
    "load_state",
    "make_core",
    "map_state",
    "reset_state",
    "save_state",
    "state_leaves",
    "state_numel",
    "state_to",
    "unflatten_state",
    "where_state",
]
