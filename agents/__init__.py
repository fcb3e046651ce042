"""Recurrent agents (installed as ``ntm_rl.agents``). None is shipped yet: see the README's roadmap."""
