"""Environments (installed as ``ntm_rl.envs``). None is shipped yet: see the README's roadmap."""
