"""Recurrent agents over any memory core (installed as ``ntm_rl.agents``)."""

from ntm_rl.agents.a2c import RecurrentA2C
from ntm_rl.agents.on_policy import NonFiniteError
from ntm_rl.agents.ppo import RecurrentPPO

__all__ = ["NonFiniteError", "RecurrentA2C", "RecurrentPPO"]
