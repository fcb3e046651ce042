"""Environments (installed as ``ntm_rl.envs``), registered with gymnasium on import.

Memory probes (:mod:`ntm_rl.envs.probes`) and partially observable CartPole and Pendulum
(:mod:`ntm_rl.envs.classic_control`) ship today, each as a batched :class:`TorchVecEnv` and,
through :class:`TorchEnvAsGym`, as ``gym.make("ntm_rl/<Name>-v0", **kwargs)``. Atari is not
written yet.
"""

from functools import partial

import gymnasium as gym
from ntm_rl.envs.classic_control import CartPole, Pendulum
from ntm_rl.envs.probes import AssociativeRecall, Copy, CountRecall, RepeatFirst, RepeatPrevious, TMaze

from ntm_rl.vec import TorchEnvAsGym, TorchVecEnv

PROBES: dict[str, type[TorchVecEnv]] = {
    "RepeatPrevious": RepeatPrevious,
    "RepeatFirst": RepeatFirst,
    "Copy": Copy,
    "TMaze": TMaze,
    "AssociativeRecall": AssociativeRecall,
    "CountRecall": CountRecall,
}
"""Batched probe classes by name; the gymnasium id of ``name`` is ``ntm_rl/<name>-v0``."""

CLASSIC_CONTROL: dict[str, type[TorchVecEnv]] = {"CartPole": CartPole, "Pendulum": Pendulum}
"""Batched partially observable classic-control envs by name (ids as for the probes)."""


def make_single_env(env_class: type[TorchVecEnv], **kwargs) -> TorchEnvAsGym:
    """One env of ``env_class`` (with its difficulty ``kwargs``) as a gymnasium ``Env``."""
    return TorchEnvAsGym(partial(env_class, **kwargs))


for _name, _env_class in (PROBES | CLASSIC_CONTROL).items():
    if f"ntm_rl/{_name}-v0" not in gym.registry:
        gym.register(f"ntm_rl/{_name}-v0", entry_point=partial(make_single_env, _env_class))

__all__ = [
    "CLASSIC_CONTROL",
    "PROBES",
    "CartPole",
    "Pendulum",
    "AssociativeRecall",
    "CountRecall",
    "Copy",
    "RepeatFirst",
    "RepeatPrevious",
    "TMaze",
]
