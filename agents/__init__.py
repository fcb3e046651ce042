"""Recurrent agents over any memory core (installed as ``ntm_rl.agents``)."""

from ntm_rl.agents.ppo import RecurrentPPO

__all__ = ["RecurrentPPO"]
