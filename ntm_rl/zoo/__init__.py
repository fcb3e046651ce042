"""rl-zoo3 integration: ntm-rl's agents as the rl-zoo3 algorithms ``ntm_ppo`` and ``ntm_a2c``.

``python -m ntm_rl.zoo train|enjoy [rl-zoo3 arguments]`` runs rl-zoo3's own ``train`` and
``enjoy`` after :func:`register`, which adds

- ``ntm_ppo`` (:class:`~ntm_rl.agents.RecurrentPPO`) and ``ntm_a2c``
  (:class:`~ntm_rl.agents.RecurrentA2C`) to rl-zoo3's ``ALGOS``;
- their Optuna samplers and converters (:mod:`ntm_rl.zoo.samplers`) for ``-optimize``;
- ntm-rl's gymnasium ids (``ntm_rl/RepeatPrevious-v0``, ...).

``train`` with ``--algo ntm_ppo`` or ``ntm_a2c`` reads the hyperparameters shipped in
``ntm_rl/zoo/hyperparams/<algo>.yml`` unless ``-conf`` names another file. Those files hold the
settings of ntm-rl's experiment configs (``configs/*.yaml``) for the probes, partially observable
CartPole and Pendulum (ntm-rl's ids and rl-zoo3's ``*NoVel`` ones) and Atari. An sb3-contrib
``ppo_lstm`` file runs as well (``--algo ntm_ppo -conf ppo_lstm.yml``): the agents read
``MlpLstmPolicy``, ``lstm_hidden_size``, ``enable_critic_lstm`` and ``shared_lstm`` as an LSTM
core. rl-zoo3 is an optional dependency: ``pip install "ntm-rl[zoo]"``.

What runs code from files: the model zips that ntm-rl's agents write load without unpickling (see
:mod:`ntm_rl.serialization`), but rl-zoo3 around them trusts its inputs. It evaluates
``policy_kwargs`` (and ``normalize``) strings of a hyperparameter file as Python, and ``enjoy``
reads a run's ``config.yml`` and ``args.yml`` with PyYAML's unsafe loader and, for an entry with
``normalize: true``, unpickles the run's ``vecnormalize.pkl``. Run only hyperparameter files and
rl-zoo3 log folders from sources you trust. (rl-zoo3's ``lin_<start>`` schedules are described as
data like SB3's, so a zip trained with them loads safely everywhere, and ``train -i`` goes on.)
"""

from __future__ import annotations

from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from ntm_rl import registry
from ntm_rl.zoo.samplers import (
    convert_ntm_a2c_params,
    convert_ntm_ppo_params,
    sample_ntm_a2c_params,
    sample_ntm_ppo_params,
)

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {f"ntm_{name}": cls for name, cls in registry.ALGORITHMS.items()}
"""ntm-rl's agents by their rl-zoo3 algorithm name (``ntm_ppo``, ``ntm_a2c``: a config's ``algo``, prefixed)."""

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
"""The shipped rl-zoo3 hyperparameter files, ``<algo>.yml``."""

INSTALL_HINT = 'pip install "ntm-rl[zoo]"'


def default_conf_file(algo: str) -> Path | None:
    """The shipped hyperparameter file of ``algo``, or ``None`` for an algorithm that is not ntm-rl's."""
    return HYPERPARAMS_DIR / f"{algo}.yml" if algo in ALGORITHMS else None


def register() -> None:
    """Add ``ntm_ppo`` and ``ntm_a2c`` (agents, Optuna samplers and converters) to rl-zoo3's tables,
    and ntm-rl's env ids to gymnasium's registry. Calling it again changes nothing.

    :raises ImportError: when rl-zoo3 is not installed (``pip install "ntm-rl[zoo]"``).
    """
    # rl-zoo3's train, enjoy and ExperimentManager all import these same dict objects by name,
    # so entries added here are seen everywhere, including by the parsers' --algo choices.
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    import ntm_rl.envs  # noqa: F401  (registers the ntm_rl/... ids)

    ALGOS.update(ALGORITHMS)
    HYPERPARAMS_SAMPLER.update(ntm_ppo=sample_ntm_ppo_params, ntm_a2c=sample_ntm_a2c_params)
    HYPERPARAMS_CONVERTER.update(ntm_ppo=convert_ntm_ppo_params, ntm_a2c=convert_ntm_a2c_params)


__all__ = [
    "ALGORITHMS",
    "HYPERPARAMS_DIR",
    "convert_ntm_a2c_params",
    "convert_ntm_ppo_params",
    "default_conf_file",
    "register",
    "sample_ntm_a2c_params",
    "sample_ntm_ppo_params",
]
