"""Recurrent agents over any memory core (installed as ``ntm_rl.agents``)."""

from ntm_rl.agents.a2c import RecurrentA2C
from ntm_rl.agents.ppo import RecurrentPPO

__all__ = ["RecurrentA2C", "RecurrentPPO"]
