"""Environments (installed as ``ntm_rl.envs``), registered with gymnasium on import.

Memory probes (:mod:`ntm_rl.envs.probes`) and partially observable CartPole and Pendulum
(:mod:`ntm_rl.envs.classic_control`) ship today, each as a batched :class:`TorchVecEnv` and,
one at a time, as ``gym.make("ntm_rl/<Name>-v0", **kwargs)``. Atari
(:mod:`ntm_rl.envs.atari`) is an SB3 ``VecEnv`` over ale-py's native vector env, and
``gym.make("ntm_rl/Atari-v0", game="pong", ...)`` gives one game.
"""

from functools import partial

import gymnasium as gym

from ntm_rl.envs.classic_control import CartPole, Pendulum
from ntm_rl.envs.probes import AssociativeRecall, Copy, CountRecall, RepeatFirst, RepeatPrevious, TMaze
from ntm_rl.vec import TorchVecEnv, TorchVecEnvToSB3, VecEnvAsGym

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


def make_single_env(env_class: type[TorchVecEnv], render_mode: str | None = None, **kwargs) -> VecEnvAsGym:
    """One env of ``env_class`` (with its difficulty ``kwargs``), on the CPU, as a gymnasium ``Env``
    (``render_mode="rgb_array"`` draws it)."""
    return VecEnvAsGym(TorchVecEnvToSB3(env_class(num_envs=1, device="cpu", **kwargs), render_mode=render_mode))


def make_atari_env(**kwargs) -> VecEnvAsGym:
    """One Atari game (:class:`~ntm_rl.envs.atari.AtariVecEnv` keywords) as a gymnasium ``Env``."""
    from ntm_rl.envs.atari import AtariVecEnv  # ale-py loads its ROMs only when Atari is asked for

    return VecEnvAsGym(AtariVecEnv(num_envs=1, **kwargs))


for _name, _env_class in (PROBES | CLASSIC_CONTROL).items():
    if f"ntm_rl/{_name}-v0" not in gym.registry:
        gym.register(f"ntm_rl/{_name}-v0", entry_point=partial(make_single_env, _env_class))
if "ntm_rl/Atari-v0" not in gym.registry:
    gym.register("ntm_rl/Atari-v0", entry_point=make_atari_env)

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
