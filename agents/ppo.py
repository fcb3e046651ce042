"""Recurrent PPO over any memory core, built on SB3's on-policy algorithm base class.

It behaves as SB3's PPO does (``learn``, ``save``/``load``, ``predict``, callbacks, loggers,
VecNormalize, ``evaluate_policy``) with three differences that a recurrent core needs:

- the rollout is tensor-native: observations become tensors once per step, and an env that
  lives on the device (a :class:`~ntm_rl.vec.TorchVecEnv` behind ``TorchVecEnvToSB3``) is stepped
  directly, with no numpy in the loop;
- the buffer keeps the policy's recurrent state only where a training sequence starts, and
  training unrolls whole sequences of ``sequence_length`` steps from those states;
- a truncated episode bootstraps from the value of its terminal observation, computed with the
  recurrent state of that moment.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv

from ntm_rl.buffers import RecurrentRolloutBuffer
from ntm_rl.cores.state import index_state
from ntm_rl.policies import (
    ActorCriticState,
    RecurrentActorCriticPolicy,
    RecurrentCnnPolicy,
    RecurrentMlpPolicy,
    RecurrentMultiInputPolicy,
)
from ntm_rl.vec import TorchVecEnvToSB3


class RecurrentPPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization (clipped) with a recurrent memory core.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class;
        ``policy_kwargs=dict(core="ntm" | "lstm" | "gru", core_kwargs=..., shared_core=...)``
        picks the memory.
    :param env: an SB3 ``VecEnv``, a gymnasium env or its id.
    :param learning_rate: learning rate, or a schedule of the remaining progress.
    :param n_steps: steps per environment per rollout.
    :param batch_size: minibatch size in env steps (a multiple of ``sequence_length``).
    :param n_epochs: passes over each rollout.
    :param gamma: discount factor.
    :param gae_lambda: GAE's bias-variance trade-off.
    :param clip_range: policy clipping, or a schedule.
    :param clip_range_vf: value clipping (``None``: none), or a schedule.
    :param normalize_advantage: normalise advantages per minibatch.
    :param ent_coef: entropy bonus coefficient.
    :param vf_coef: value loss coefficient.
    :param max_grad_norm: gradient norm clipping.
    :param target_kl: stop an update's epochs once the approximate KL exceeds 1.5 times this.
    :param sequence_length: training sequence length (divides ``n_steps``).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": RecurrentMlpPolicy,
        "CnnPolicy": RecurrentCnnPolicy,
        "MultiInputPolicy": RecurrentMultiInputPolicy,
    }
    policy: RecurrentActorCriticPolicy
    rollout_buffer: RecurrentRolloutBuffer

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int = 512,
        n_epochs: int = 4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        sequence_length: int = 32,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        if batch_size % sequence_length != 0 or batch_size < sequence_length:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of sequence_length ({sequence_length}): "
                "minibatches are made of whole sequences."
            )
        self.batch_size, self.n_epochs, self.sequence_length = batch_size, n_epochs, sequence_length
        self.clip_range, self.clip_range_vf = clip_range, clip_range_vf
        self.normalize_advantage, self.target_kl = normalize_advantage, target_kl
        self._last_state: ActorCriticState | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        self.rollout_buffer = RecurrentRolloutBuffer(
            self.n_steps, self.n_envs, self.observation_space, self.action_space, self.sequence_length,
            self.device, self.gamma, self.gae_lambda,
        )  # fmt: skip
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _excluded_save_params(self) -> list[str]:
        # The rollout's recurrent state and last observations are transient, like the env.
        return [*super()._excluded_save_params(), "_last_state", "_last_obs", "_last_episode_starts"]

    def _setup_learn(self, total_timesteps: int, callback: MaybeCallback = None, reset_num_timesteps: bool = True,
                     tb_log_name: str = "run", progress_bar: bool = False):  # fmt: skip
        if self._last_obs is None or reset_num_timesteps:
            self._last_state = None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if self._last_state is None:
            self._last_state = self.policy.initial_state(self.n_envs)
        return result

    def _to_tensor(self, observation: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        if isinstance(observation, dict):
            return {key: torch.as_tensor(value, device=self.device) for key, value in observation.items()}
        return torch.as_tensor(observation, device=self.device)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RecurrentRolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Fill the buffer with ``n_rollout_steps`` steps of every env."""
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        device_env = env.env if isinstance(env, TorchVecEnvToSB3) else None  # stepped without numpy
        obs = self._to_tensor(self._last_obs)
        starts = torch.as_tensor(self._last_episode_starts, device=self.device).bool()
        state = self._last_state
        if device_env is not None:
            episode_returns = getattr(self, "_episode_returns", torch.zeros(self.n_envs, device=self.device))
            episode_lengths = getattr(self, "_episode_lengths", torch.zeros(self.n_envs, device=self.device))
            finished: list[torch.Tensor] = []
        for _ in range(n_rollout_steps):
            with torch.no_grad():
                actions, values, log_probs, next_state = self.policy(obs, state, starts)
            env_actions = actions
            if isinstance(self.action_space, spaces.Box):
                low, high = (
                    torch.as_tensor(b, device=self.device) for b in (self.action_space.low, self.action_space.high)
                )
                env_actions = torch.clamp(actions, low, high)
            if device_env is not None:
                step = device_env.step(env_actions)
                new_obs, rewards, dones = step.observation, step.reward.clone(), step.episode_start
                truncated, final_obs = step.truncated, step.final_observation
                episode_returns += step.reward
                episode_lengths += 1
                finished.append(torch.stack([torch.where(dones, episode_returns, torch.nan), episode_lengths]))
                episode_returns = torch.where(dones, 0.0, episode_returns)
                episode_lengths = torch.where(dones, 0.0, episode_lengths)
            else:
                new_obs_np, rewards_np, dones_np, infos = env.step(env_actions.cpu().numpy())
                self._update_info_buffer(infos, dones_np)
                new_obs, rewards = self._to_tensor(new_obs_np), torch.as_tensor(rewards_np, device=self.device).float()
                dones = torch.as_tensor(dones_np, device=self.device)
                truncated_np = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
                truncated = torch.as_tensor(truncated_np & dones_np, device=self.device)
                final_obs = infos
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            if bool(truncated.any()):
                rewards = rewards + self.gamma * self._terminal_values(truncated, final_obs, next_state)
            rollout_buffer.add(obs, actions, rewards, starts, values, log_probs, state)
            obs, starts, state = new_obs, dones, next_state

        with torch.no_grad():
            last_values = self.policy.predict_values(obs, state, starts)
        rollout_buffer.compute_returns_and_advantage(last_values, starts)
        self._last_obs, self._last_episode_starts, self._last_state = obs, starts.cpu().numpy(), state
        if device_env is not None:
            self._episode_returns, self._episode_lengths = episode_returns, episode_lengths
            stats = torch.stack(finished, dim=2).cpu().numpy()  # one host copy per rollout
            for episode_return, episode_length in stats.transpose(1, 2, 0).reshape(-1, 2):
                if not np.isnan(episode_return):
                    self.ep_info_buffer.extend([{"r": float(episode_return), "l": int(episode_length)}])
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _terminal_values(self, truncated: torch.Tensor, final_obs: Any, state: ActorCriticState) -> torch.Tensor:
        """Values of truncated envs' terminal observations (0 elsewhere), with their current state."""
        index = truncated.nonzero().squeeze(1)
        if isinstance(final_obs, list):  # SB3 infos: terminal observations in numpy
            picked = [final_obs[i]["terminal_observation"] for i in index.tolist()]
            terminal = self._to_tensor({k: np.stack([p[k] for p in picked]) for k in picked[0]}
                                       if isinstance(picked[0], dict) else np.stack(picked))  # fmt: skip
        else:
            terminal = {k: v[index] for k, v in final_obs.items()} if isinstance(final_obs, dict) else final_obs[index]
        no_reset = torch.zeros(len(index), dtype=torch.bool, device=self.device)
        with torch.no_grad():
            values = self.policy.predict_values(terminal, index_state(state, index), no_reset)
        return torch.zeros(self.n_envs, device=self.device).index_put((index,), values)

    def train(self) -> None:
        """PPO's clipped update over minibatches of whole sequences."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)
        entropy_losses, pg_losses, value_losses, clip_fractions, approx_kl_divs = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for batch in self.rollout_buffer.sequences(self.batch_size // self.sequence_length):
                values, log_prob, entropy = self.policy.evaluate_actions(
                    batch.observations, batch.actions, batch.state, batch.episode_starts
                )
                advantages = batch.advantages.flatten()
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                old_log_prob, old_values, returns = (x.flatten() for x in (batch.old_log_prob, batch.old_values,
                                                                             batch.returns))  # fmt: skip

                ratio = torch.exp(log_prob - old_log_prob)
                policy_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is not None:
                    values = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(returns, values)
                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with torch.no_grad():
                    log_ratio = log_prob - old_log_prob
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                approx_kl_divs.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        buffer = self.rollout_buffer
        explained_var = explained_variance(
            buffer.values.flatten().cpu().numpy(), buffer.returns.flatten().cpu().numpy()
        )
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(self, total_timesteps: int, callback: MaybeCallback = None, log_interval: int = 1,
              tb_log_name: str = "RecurrentPPO", reset_num_timesteps: bool = True, progress_bar: bool = False):  # fmt: skip
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
