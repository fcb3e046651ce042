"""What the names in a config and on the command line stand for, in one place: algorithms, env
ids and the classes their keywords go to, and devices.

The config checks and the experiment runner both read these; this module imports the agents
and the envs, and neither of those imports it, so nothing here can form an import cycle.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable

import gymnasium as gym
import torch

from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.checks import ConfigError, did_you_mean
from ntm_rl.envs import CLASSIC_CONTROL, PROBES

ALGORITHMS: dict[str, type[RecurrentOnPolicyAlgorithm]] = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}
"""A config's ``algo``."""

TORCH_ENVS = {f"ntm_rl/{name}-v0": env_class for name, env_class in (PROBES | CLASSIC_CONTROL).items()}
"""The batched ntm-rl envs (probes and classic control) by gymnasium id."""

ATARI_ID = "ntm_rl/Atari-v0"
"""Atari games through ale-py's vector env (``env.kwargs.game`` names the game)."""


def env_class(env_id: str) -> type | None:
    """The class a config's ``env.kwargs`` go to: a batched ntm-rl env, ``AtariVecEnv``, or
    ``None`` for another gymnasium id (made with ``gym.make``)."""
    if env_id in TORCH_ENVS:
        return TORCH_ENVS[env_id]
    if env_id == ATARI_ID:
        from ntm_rl.envs.atari import AtariVecEnv  # imports ale-py, which only Atari runs need

        return AtariVecEnv
    if env_id in gym.registry:
        return None
    raise ConfigError(
        f"unknown env id {env_id!r}{did_you_mean(env_id, gym.registry)}; `ntm-rl list` shows the ntm-rl ids, and "
        "env.packages (or --gym-packages) imports a package that registers others."
    )


MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
"""An importable module name; no part starts with ``_``, so ``pkg.__main__`` (which runs a program
when imported) cannot be named."""


def import_gym_packages(names: Iterable[str], where: str, import_new: bool = True) -> None:
    """Import the modules ``names`` (importing one registers its gymnasium envs, as with rl-zoo3's
    ``--gym-packages``); ``where`` names their source in messages.

    :param import_new: import modules not yet imported; ``False`` refuses them instead (a run
        directory's config: reading a run never imports what it names unless the user asks).
    """
    for name in names:
        if not (isinstance(name, str) and MODULE_NAME.fullmatch(name)):
            raise ConfigError(f"{where}: {name!r} is not a module name (dotted names of letters, digits and '_', "
                              "no part starting with '_'); give the module that registers the envs.")  # fmt: skip
        if name in sys.modules:
            continue
        if not import_new:
            raise ConfigError(f"{where} names {name!r}, which is not imported when a run directory is read; give "
                              f"--gym-packages {name} to import it.")  # fmt: skip
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(f"{where} {name}: {error}; install the package or fix its name.") from None


def parse_device(device: str) -> torch.device | None:
    """The device a config names (``None`` for ``"auto"``), without asking whether this machine
    has it (a config may be written on one machine and run on another)."""
    if device == "auto":
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}.")
    return parsed


def resolve_device(device: str) -> torch.device:
    """The device to run on: ``"auto"`` is CUDA when there is one, else the CPU; a CUDA device
    this machine lacks is refused."""
    parsed = parse_device(device)
    if parsed is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use device=cpu or auto.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")  # fmt: skip
    return parsed
