"""Optuna search spaces of ``ntm_ppo`` and ``ntm_a2c`` for rl-zoo3's ``-optimize``.

rl-zoo3 builds the agent of a trial outside the ``try`` that prunes failed trials, so a sampled
combination that the agent's constructor refuses would end the whole study. The samplers below
therefore draw only valid combinations: ``n_steps`` is a power of two, ``sequence_length`` a
smaller or equal power of two (so it divides ``n_steps``), and ``batch_size`` a power-of-two
number of whole sequences, at most the ``n_steps * n_envs`` steps of a rollout. Memory sizes are
drawn only for the core that uses them (``hidden_size`` for LSTM and GRU; ``controller_size``,
``memory_size`` and ``word_size`` for the NTM, whose memory always has more rows than its heads
shift).

Each sampler suggests Optuna parameters and returns the agent's keywords, which the matching
converter computes from the parameters alone; rl-zoo3 calls the converter on a stored trial's
parameters (``--storage``, ``--study-name``, ``--trial-id``) to train it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ntm_rl.serialization import ACTIVATIONS

if TYPE_CHECKING:  # optuna comes with rl-zoo3 (the "zoo" extra); it is only a type here
    import optuna

CORE_NAMES = ["ntm", "lstm", "gru"]
HIDDEN_SIZES = [32, 64, 128, 256]
"""LSTM and GRU widths."""
NTM_CONTROLLER_SIZES = [32, 64, 128]
NTM_MEMORY_SIZES = [16, 32, 64, 128]
"""Memory rows ``N``; all exceed the NTM's default ``shift_range`` of 1."""
NTM_WORD_SIZES = [8, 16, 32]
NET_ARCHS: dict[str, list[int] | dict[str, list[int]]] = {
    "none": [],  # the heads read the core's output directly (ntm-rl's default)
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
}
"""Hidden layers of the actor and critic heads after the core, by name."""
ACTIVATION_NAMES = ["tanh", "relu"]
"""Activations of those heads (names of :data:`ntm_rl.serialization.ACTIVATIONS`)."""
PPO_N_STEPS_POW = (4, 10)
"""``n_steps`` of PPO from ``2**4 = 16`` to ``2**10 = 1024``."""
MIN_SEQUENCE_LENGTH_POW = 2
"""Training sequences of at least 4 steps (up to the whole rollout)."""
A2C_N_STEPS_POW = (3, 8)
"""``n_steps`` of A2C, its one training sequence, from 8 to 256."""


def _sample_core(trial: optuna.Trial) -> None:
    """Suggest a core, its size (only the keywords that core takes) and the heads after it."""
    core = trial.suggest_categorical("core", CORE_NAMES)
    if core == "ntm":
        trial.suggest_categorical("controller_size", NTM_CONTROLLER_SIZES)
        trial.suggest_categorical("memory_size", NTM_MEMORY_SIZES)
        trial.suggest_categorical("word_size", NTM_WORD_SIZES)
    else:
        trial.suggest_categorical("hidden_size", HIDDEN_SIZES)
    trial.suggest_categorical("shared_core", [False, True])
    trial.suggest_categorical("net_arch", list(NET_ARCHS))
    trial.suggest_categorical("activation_fn", ACTIVATION_NAMES)
    trial.suggest_categorical("ortho_init", [True, False])


def _policy_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` of the core parameters that :func:`_sample_core` suggested."""
    core = params["core"]
    if core == "ntm":
        core_kwargs = {key: params[key] for key in ("controller_size", "memory_size", "word_size")}
    else:
        core_kwargs = {"hidden_size": params["hidden_size"]}
    return {
        "core": core,
        "core_kwargs": core_kwargs,
        "shared_core": params["shared_core"],
        "net_arch": NET_ARCHS[params["net_arch"]],
        "activation_fn": ACTIVATIONS[params["activation_fn"]],
        "ortho_init": params["ortho_init"],
    }


def _sample_common(trial: optuna.Trial, max_one_minus_gae_lambda: float) -> None:
    """Suggest what PPO and A2C share: discounting, learning rate, entropy bonus, gradient clipping."""
    # gamma from 0.5 to 0.9999: the shipped configs use 0.5 on repeat-previous and 0.9 on Pendulum.
    trial.suggest_float("one_minus_gamma", 1e-4, 0.5, log=True)
    trial.suggest_float("one_minus_gae_lambda", 1e-4, max_one_minus_gae_lambda, log=True)
    trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True)
    trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
    trial.suggest_float("max_grad_norm", 0.3, 2.0)


def _common_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The agent's keywords of what :func:`_sample_common` and :func:`_sample_core` suggested."""
    return {
        "gamma": 1 - params["one_minus_gamma"],
        "gae_lambda": 1 - params["one_minus_gae_lambda"],
        "learning_rate": params["learning_rate"],
        "ent_coef": params["ent_coef"],
        "max_grad_norm": params["max_grad_norm"],
        "policy_kwargs": _policy_kwargs(params),
    }


def sample_ntm_ppo_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """Suggest :class:`~ntm_rl.agents.RecurrentPPO` hyperparameters (rl-zoo3's sampler signature).

    :param trial: the Optuna trial.
    :param n_actions: size of a ``Box`` action space (unused: PPO samples no action noise).
    :param n_envs: parallel environments; bounds ``batch_size`` by the rollout's ``n_steps * n_envs``.
    :param additional_args: rl-zoo3's extra information (unused).
    :return: keywords for the agent's constructor.
    """
    n_steps_pow = trial.suggest_int("n_steps_pow", *PPO_N_STEPS_POW)
    # A power of two no larger than n_steps divides it; the whole rollout is ntm-rl's default.
    sequence_length_pow = trial.suggest_int("sequence_length_pow", MIN_SEQUENCE_LENGTH_POW, n_steps_pow)
    sequences_per_rollout = n_envs * 2 ** (n_steps_pow - sequence_length_pow)
    # Minibatches of 2**k whole sequences, k as large as the rollout allows (then one minibatch).
    trial.suggest_int("batch_sequences_pow", 0, sequences_per_rollout.bit_length() - 1)
    _sample_common(trial, max_one_minus_gae_lambda=0.2)
    trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3])
    trial.suggest_categorical("n_epochs", [1, 4, 10, 20])
    _sample_core(trial)
    hyperparams = convert_ntm_ppo_params(trial.params)
    for key in ("gamma", "n_steps", "sequence_length", "batch_size"):  # the values, beside their encodings
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams


def convert_ntm_ppo_params(params: dict[str, Any]) -> dict[str, Any]:
    """:class:`~ntm_rl.agents.RecurrentPPO` keywords of the parameters :func:`sample_ntm_ppo_params`
    suggested (rl-zoo3's converter)."""
    sequence_length = 2 ** params["sequence_length_pow"]
    return {
        "n_steps": 2 ** params["n_steps_pow"],
        "sequence_length": sequence_length,
        "batch_size": sequence_length * 2 ** params["batch_sequences_pow"],
        "clip_range": params["clip_range"],
        "n_epochs": params["n_epochs"],
        **_common_kwargs(params),
    }


def sample_ntm_a2c_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """Suggest :class:`~ntm_rl.agents.RecurrentA2C` hyperparameters (rl-zoo3's sampler signature;
    the arguments are those of :func:`sample_ntm_ppo_params`). A2C trains on whole rollouts, so
    ``n_steps`` is also its sequence length and there is no batch size to draw."""
    trial.suggest_int("n_steps_pow", *A2C_N_STEPS_POW)
    # gae_lambda from 0.9 to 0.9999, near SB3's A2C default of 1.0 (plain n-step advantages).
    _sample_common(trial, max_one_minus_gae_lambda=0.1)
    trial.suggest_categorical("normalize_advantage", [False, True])
    trial.suggest_categorical("use_rms_prop", [True, False])
    _sample_core(trial)
    hyperparams = convert_ntm_a2c_params(trial.params)
    for key in ("gamma", "n_steps"):
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams


def convert_ntm_a2c_params(params: dict[str, Any]) -> dict[str, Any]:
    """:class:`~ntm_rl.agents.RecurrentA2C` keywords of the parameters :func:`sample_ntm_a2c_params`
    suggested (rl-zoo3's converter)."""
    return {
        "n_steps": 2 ** params["n_steps_pow"],
        "normalize_advantage": params["normalize_advantage"],
        "use_rms_prop": params["use_rms_prop"],
        **_common_kwargs(params),
    }
