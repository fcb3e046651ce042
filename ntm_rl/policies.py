"""Recurrent actor-critic policies whose recurrent feature extractor is any :class:`MemoryCore`.

``observation -> SB3 features extractor -> memory core -> MLP heads -> action distribution / value``

The memory core (NTM by default; LSTM or GRU by the ``core`` keyword) is shared by the actor
and the critic, or duplicated for the critic (``shared_core=False``). Everything before and
after the core is SB3's own (features extractors, ``MlpExtractor``, action distributions), so
comparing cores changes nothing else.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, NamedTuple, Self

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution, make_proba_distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from ntm_rl.cores import LSTMCore, LSTMState, MemoryCore, make_core
from ntm_rl.cores.state import State
from ntm_rl.serialization import policy_parameters_from_json, policy_parameters_to_json


class ActorCriticState(NamedTuple):
    """Recurrent state of a policy: the actor's core state and, with separate cores, the critic's
    (``()`` when the core is shared)."""

    actor: State
    critic: State


class RecurrentActorCriticPolicy(BasePolicy):
    """Actor-critic policy with a memory core as recurrent feature extractor.

    :param observation_space: observation space.
    :param action_space: ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` or ``Box``.
    :param lr_schedule: learning-rate schedule (gives the optimiser's initial rate).
    :param net_arch: hidden layers of the actor and critic heads after the core, as SB3's
        ``MlpExtractor`` takes them (a list, or ``dict(pi=[...], vf=[...])``).
    :param activation_fn: activation of those heads.
    :param ortho_init: orthogonal initialisation of the features extractor and the heads, with SB3's
        gains (the memory core keeps its own initialisation, as sb3-contrib's LSTM does).
    :param log_std_init: initial log standard deviation for ``Box`` actions.
    :param features_extractor_class: SB3 features extractor in front of the core.
    :param features_extractor_kwargs: its keywords.
    :param normalize_images: divide image observations by 255.
    :param optimizer_class: optimiser.
    :param optimizer_kwargs: its keywords (besides the learning rate); ``None``: Adam's ``eps=1e-10``.
    :param core: ``"ntm"``, ``"lstm"`` or ``"gru"``.
    :param core_kwargs: keywords of the core (e.g. ``memory_size``, ``hidden_size``).
    :param shared_core: one core for actor and critic, or (the default, as sb3-contrib's
        ``enable_critic_lstm``) a second core of the same kind for the critic. A shared core also
        takes the value loss, whose scale grows with the returns: at gamma 0.99 on tasks with a
        reward at every step it drowned the policy's gradient and the agents stayed at chance.
    :param compile_core: compile each core's step with ``torch.compile``
        (:meth:`~ntm_rl.cores.MemoryCore.compile_step`). It pays on an NTM, whose step is many small
        operations (README, memory ladders: the agent's env steps/s with and without), after a
        compilation of about a minute at the start; the LSTM and GRU unroll training sequences in
        one fused call and gain little.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        core: str = "ntm",
        core_kwargs: dict[str, Any] | None = None,
        shared_core: bool = False,
        compile_core: bool = False,
    ):
        if use_sde:
            raise ValueError("use_sde=True is not supported by recurrent ntm-rl policies; use use_sde=False.")
        _check_observation_space(observation_space)
        if optimizer_kwargs is None:
            # Not SB3's 1e-5: PPO's loss is a mean over every step of a minibatch, so a rare rewarded
            # decision gives the memory's weights gradients far below 1e-5 (about 5e-9 on the
            # 1,000-step T-maze), which Adam then barely moves (README, "Adam's epsilon").
            optimizer_kwargs = {"eps": 1e-10} if optimizer_class is torch.optim.Adam else {}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs or {},
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
        )
        self.net_arch = [] if net_arch is None else net_arch
        self.activation_fn, self.ortho_init, self.log_std_init = activation_fn, ortho_init, log_std_init
        self.core_name, self.core_kwargs, self.shared_core = core, dict(core_kwargs or {}), shared_core
        self.compile_core = compile_core

        self.features_extractor = self.make_features_extractor()
        features_dim = self.features_extractor.features_dim
        self.core: MemoryCore = make_core(core, features_dim, **self.core_kwargs)
        self.critic_core: MemoryCore | None = None if shared_core else make_core(core, features_dim, **self.core_kwargs)
        if compile_core:
            for memory_core in (self.core, self.critic_core):
                if memory_core is not None:
                    memory_core.compile_step()
        self.mlp_extractor = MlpExtractor(self.core.output_dim, self.net_arch, activation_fn, self.device)
        self.action_dist: Distribution = make_proba_distribution(action_space)
        if isinstance(action_space, spaces.Box):
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(
                self.mlp_extractor.latent_dim_pi, log_std_init=log_std_init
            )
        else:
            self.action_net = self.action_dist.proba_distribution_net(self.mlp_extractor.latent_dim_pi)
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if ortho_init:
            gains = {self.features_extractor: np.sqrt(2), self.mlp_extractor: np.sqrt(2), self.action_net: 0.01,
                     self.value_net: 1.0}  # fmt: skip
            for module, gain in gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = optimizer_class(self.parameters(), lr=lr_schedule(1), **optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            lr_schedule=self._dummy_schedule,  # as SB3's policies: a policy saved alone does not train on
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            ortho_init=self.ortho_init,
            log_std_init=self.log_std_init,
            core=self.core_name,
            core_kwargs=self.core_kwargs,
            shared_core=self.shared_core,
            compile_core=self.compile_core,
        )
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights and the constructor parameters, which :meth:`load` reads back without
        unpickling (SB3's own policy files pickle the parameters). Parameters that name a class
        outside :data:`ntm_rl.serialization.KNOWN_CLASSES` raise ``TypeError``."""
        parameters = policy_parameters_to_json(self._get_constructor_parameters())
        torch.save({"state_dict": self.state_dict(), "parameters": parameters}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "auto") -> Self:
        """The policy :meth:`save` wrote, read with ``torch.load(weights_only=True)``."""
        device = get_device(device)
        saved = torch.load(path, map_location=device, weights_only=True)
        policy = cls(**policy_parameters_from_json(saved["parameters"]), lr_schedule=cls._dummy_schedule)
        policy.load_state_dict(saved["state_dict"])
        return policy.to(device)

    # ------------------------------------------------------------------------------ state
    def initial_state(self, n_envs: int) -> ActorCriticState:
        """The recurrent state of ``n_envs`` environments at the start of an episode."""
        critic = () if self.critic_core is None else self.critic_core.initial_state(n_envs, self.device)
        return ActorCriticState(self.core.initial_state(n_envs, self.device), critic)

    # ------------------------------------------------------------------ one step, B envs
    def _latents(
        self, obs: PyTorchObs, state: ActorCriticState, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, ActorCriticState]:
        features = self.extract_features(obs, self.features_extractor)
        latent_pi, actor_state = self.core.step(features, state.actor, episode_start)
        if self.critic_core is None:
            latent_vf, critic_state = latent_pi, ()
        else:
            latent_vf, critic_state = self.critic_core.step(features, state.critic, episode_start)
        return latent_pi, latent_vf, ActorCriticState(actor_state, critic_state)

    def forward(
        self, obs: PyTorchObs, state: ActorCriticState, episode_start: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ActorCriticState]:
        """Act for one step: actions, values ``[B]``, log-probabilities ``[B]``, next state."""
        latent_pi, latent_vf, state = self._latents(obs, state, episode_start)
        distribution = self._distribution(self.mlp_extractor.forward_actor(latent_pi))
        actions = distribution.get_actions(deterministic=deterministic)
        values = self.value_net(self.mlp_extractor.forward_critic(latent_vf)).squeeze(-1)
        return actions, values, distribution.log_prob(actions), state

    def predict_values(self, obs: PyTorchObs, state: ActorCriticState, episode_start: torch.Tensor) -> torch.Tensor:
        """Values ``[B]`` of one step's observations (the state it would lead to is dropped)."""
        features = self.extract_features(obs, self.features_extractor)
        if self.critic_core is None:
            latent_vf, _ = self.core.step(features, state.actor, episode_start)
        else:
            latent_vf, _ = self.critic_core.step(features, state.critic, episode_start)
        return self.value_net(self.mlp_extractor.forward_critic(latent_vf)).squeeze(-1)

    # ------------------------------------------------------------ sequences, for training
    def _sequence_features(self, obs: PyTorchObs, episode_starts: torch.Tensor) -> torch.Tensor:
        """Features ``[L, b, D]`` of observations ``[L, b, ...]``, extracted for all steps at once."""
        length, batch = episode_starts.shape

        def merge_time(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(length * batch, *x.shape[2:])

        flat_obs = {key: merge_time(x) for key, x in obs.items()} if isinstance(obs, dict) else merge_time(obs)
        return self.extract_features(flat_obs, self.features_extractor).reshape(length, batch, -1)

    @torch.no_grad()
    def unroll_state(self, obs: PyTorchObs, state: ActorCriticState, episode_starts: torch.Tensor) -> ActorCriticState:
        """The state after the sequences ``[k, b, ...]`` from ``state``, without gradient (burn-in)."""
        features = self._sequence_features(obs, episode_starts)
        _, actor = self.core(features, state.actor, episode_starts)
        critic = () if self.critic_core is None else self.critic_core(features, state.critic, episode_starts)[1]
        return ActorCriticState(actor, critic)

    def evaluate_actions(
        self,
        obs: PyTorchObs,
        actions: torch.Tensor,
        state: ActorCriticState,
        episode_starts: torch.Tensor,
        checkpoint_steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unroll over sequences ``[L, b, ...]`` from ``state``; values, log-probs, entropy ``[L * b]``.

        :param checkpoint_steps: gradient checkpointing over chunks of this many steps (see
            :meth:`~ntm_rl.cores.MemoryCore.forward`).
        """
        length, batch = episode_starts.shape
        features = self._sequence_features(obs, episode_starts)
        latent_pi, _ = self.core(features, state.actor, episode_starts, checkpoint_steps)
        latent_vf = (
            latent_pi
            if self.critic_core is None
            else self.critic_core(features, state.critic, episode_starts, checkpoint_steps)[0]
        )
        latent_pi = self.mlp_extractor.forward_actor(latent_pi.reshape(length * batch, -1))
        latent_vf = self.mlp_extractor.forward_critic(latent_vf.reshape(length * batch, -1))
        distribution = self._distribution(latent_pi)
        flat_actions = actions.reshape(length * batch, *actions.shape[2:])
        values = self.value_net(latent_vf).squeeze(-1)
        return values, distribution.log_prob(flat_actions), distribution.entropy()

    def _distribution(self, latent_pi: torch.Tensor) -> Distribution:
        mean_actions = self.action_net(latent_pi)
        if isinstance(self.action_space, spaces.Box):
            return self.action_dist.proba_distribution(mean_actions, self.log_std)
        return self.action_dist.proba_distribution(action_logits=mean_actions)

    # ------------------------------------------------------------- SB3's predict interface
    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError(
            "A recurrent policy predicts with its state: call predict(obs, state, episode_start)."
        )

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: ActorCriticState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, ActorCriticState]:
        """Actions for ``observation`` and the next recurrent state, as sb3-contrib's policies.

        :param state: the state returned by the previous call; ``None`` starts every env afresh.
        :param episode_start: ``[n_envs]`` flags; true resets that env's state first.
        :return: actions (numpy, clipped to a ``Box`` action space) and the next state.
        """
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        n_envs = next(iter(obs_tensor.values())).shape[0] if isinstance(obs_tensor, dict) else obs_tensor.shape[0]
        if state is None:
            state = self.initial_state(n_envs)
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        starts = torch.as_tensor(np.asarray(episode_start), device=self.device).reshape(n_envs).bool()
        with torch.no_grad():
            actions, _, _, state = self.forward(obs_tensor, state, starts, deterministic)
        actions = actions.cpu().numpy().reshape((-1, *self.action_space.shape))
        if isinstance(self.action_space, spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, state

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> torch.Tensor:
        return features_extractor(preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images))


def to_sb3_contrib_state(state: ActorCriticState) -> tuple[np.ndarray, np.ndarray]:
    """An LSTM core's state as sb3-contrib's ``RecurrentPPO.predict`` returns it: the actor's
    ``(h, c)``, numpy arrays ``[1, n_envs, hidden]`` (one layer). ntm-rl's ``predict`` returns an
    :class:`ActorCriticState` of batch-first tensors instead, which holds every core's state."""
    if not isinstance(state.actor, LSTMState):
        raise TypeError(f"sb3-contrib's state is an LSTM's (h, c); this one is a {type(state.actor).__name__} "
                        "(use an LSTM core, or keep ntm-rl's ActorCriticState).")  # fmt: skip
    return state.actor.h[None].cpu().numpy(), state.actor.c[None].cpu().numpy()


def from_sb3_contrib_state(policy: RecurrentActorCriticPolicy, lstm_states: tuple[Any, Any]) -> ActorCriticState:
    """The :class:`ActorCriticState` for ``policy`` (an LSTM core's) of sb3-contrib's ``(h, c)``
    (``[1, n_envs, hidden]``). sb3-contrib's ``predict`` returns the actor's state only: a separate
    critic core starts from its initial state, which changes no action."""
    if not isinstance(policy.core, LSTMCore):
        raise TypeError(f"sb3-contrib's state is an LSTM's (h, c); this policy's core is {policy.core_name!r}.")
    h, c = (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=policy.device) for x in lstm_states)
    expected = (1, h.shape[1] if h.ndim == 3 else -1, policy.core.hidden_size)
    if h.ndim != 3 or h.shape != c.shape or tuple(h.shape) != expected:
        raise ValueError(f"sb3-contrib's (h, c) are [1, n_envs, {policy.core.hidden_size}] arrays, got shapes "
                         f"{tuple(h.shape)} and {tuple(c.shape)}.")  # fmt: skip
    critic = () if policy.critic_core is None else policy.critic_core.initial_state(h.shape[1], policy.device)
    return ActorCriticState(LSTMState(h[0], c[0]), critic)


SB3_CONTRIB_POLICIES = {"MlpLstmPolicy": "MlpPolicy", "CnnLstmPolicy": "CnnPolicy",
                        "MultiInputLstmPolicy": "MultiInputPolicy"}  # fmt: skip
"""sb3-contrib's ``RecurrentPPO`` policy names, and the ntm-rl policy each stands for (with an LSTM core)."""

SB3_CONTRIB_LSTM_KWARGS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_kwargs")


def from_sb3_contrib_names(policy: Any, policy_kwargs: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None]:
    """``policy`` and ``policy_kwargs`` in ntm-rl's names, given sb3-contrib's ``RecurrentPPO`` names.

    So that an sb3-contrib (or rl-zoo3 ``ppo_lstm``) configuration runs as is: ``MlpLstmPolicy``
    and the other ``*LstmPolicy`` names mean ntm-rl's policy with ``core="lstm"``, 256 units unless
    ``lstm_hidden_size`` says otherwise (sb3-contrib's default); ``shared_lstm=True`` means
    ``shared_core=True``. Two differences remain, by design: the LSTM core keeps ntm-rl's
    initialisation (``chrono_init``; pass ``core_kwargs=dict(chrono_init=None)`` for PyTorch's, which
    is sb3-contrib's), and a shared core also takes the value loss (sb3-contrib detaches it).
    ``enable_critic_lstm=False`` (a critic without memory) has no ntm-rl equivalent: it becomes a
    shared core, with a warning. Anything else is returned unchanged.
    """
    is_contrib_policy = isinstance(policy, str) and policy in SB3_CONTRIB_POLICIES
    kwargs = dict(policy_kwargs or {})
    contrib = {key: kwargs.pop(key) for key in SB3_CONTRIB_LSTM_KWARGS if key in kwargs}
    if not is_contrib_policy and not contrib:
        return policy, policy_kwargs
    core = kwargs.get("core", "lstm")
    if core != "lstm":
        raise ValueError(f"sb3-contrib's LSTM names ({policy!r}, {sorted(contrib)}) mean core='lstm', but "
                         f"policy_kwargs has core={core!r}; drop one of them.")  # fmt: skip
    if contrib.get("n_lstm_layers", 1) != 1:
        raise ValueError(f"n_lstm_layers={contrib['n_lstm_layers']!r}: ntm-rl's LSTM core has one layer; use "
                         "n_lstm_layers=1 (or a larger lstm_hidden_size).")  # fmt: skip
    if contrib.get("lstm_kwargs"):
        raise ValueError(f"lstm_kwargs={contrib['lstm_kwargs']!r} has no ntm-rl equivalent; pass the LSTM core's "
                         "own keywords as core_kwargs (hidden_size, chrono_init).")  # fmt: skip
    core_kwargs = dict(kwargs.get("core_kwargs") or {})
    core_kwargs.setdefault("hidden_size", contrib.get("lstm_hidden_size", 256))
    shared = bool(contrib.get("shared_lstm", False))
    if not shared and not contrib.get("enable_critic_lstm", True):
        warnings.warn("enable_critic_lstm=False (a critic without memory) has no ntm-rl equivalent: the critic "
                      "shares the actor's LSTM core instead (shared_core=True).", stacklevel=3)  # fmt: skip
        shared = True
    kwargs.update(core="lstm", core_kwargs=core_kwargs)
    if "shared_lstm" in contrib or "enable_critic_lstm" in contrib:
        kwargs["shared_core"] = shared
    return SB3_CONTRIB_POLICIES.get(policy, policy) if is_contrib_policy else policy, kwargs


def _check_observation_space(space: spaces.Space, where: str = "") -> None:
    """Refuse the observation spaces SB3's preprocessing cannot take, with the wrapper that fixes it."""
    if isinstance(space, spaces.Dict):
        for key, subspace in space.spaces.items():
            _check_observation_space(subspace, f"{where}[{key!r}]")
    elif not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise ValueError(
            f"{type(space).__name__} observations{' at ' + where if where else ''} are not supported ({space}): "
            "wrap the env in gymnasium.wrappers.FlattenObservation (or use a Dict space and MultiInputPolicy). "
            "Box, Discrete, MultiDiscrete, MultiBinary and Dict of them are."
        )


class RecurrentMlpPolicy(RecurrentActorCriticPolicy):
    """Flattened vector observations (``FlattenExtractor``) in front of the core."""


class RecurrentCnnPolicy(RecurrentActorCriticPolicy):
    """Images through SB3's ``NatureCNN`` in front of the core."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class RecurrentMultiInputPolicy(RecurrentActorCriticPolicy):
    """``Dict`` observations through SB3's ``CombinedExtractor`` in front of the core."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
