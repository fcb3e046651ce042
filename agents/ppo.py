"""Recurrent PPO over any memory core (clipped objective, GAE, optional value clipping, entropy
bonus, gradient clipping, advantage normalisation, target KL, schedules).

It behaves as SB3's PPO does (``learn``, ``save``/``load``, ``predict``, callbacks, loggers,
VecNormalize, ``evaluate_policy``); rollouts are collected by
:class:`~ntm_rl.agents.on_policy.RecurrentOnPolicyAlgorithm`, and the update below unrolls
minibatches of whole sequences from their stored recurrent states.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance

from ntm_rl import distributed
from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.checks import check_positive_int
from ntm_rl.cores.state import where_state
from ntm_rl.policies import RecurrentActorCriticPolicy

MINIBATCHES = 4
"""Minibatches per epoch when ``batch_size`` is left to its default."""


class RecurrentPPO(RecurrentOnPolicyAlgorithm):
    """Proximal Policy Optimization (clipped) with a recurrent memory core.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class;
        ``policy_kwargs=dict(core="ntm" | "lstm" | "gru", core_kwargs=..., shared_core=...)``
        picks the memory. sb3-contrib's names (``"MlpLstmPolicy"``, ``lstm_hidden_size``,
        ``enable_critic_lstm``, ...) are read as an LSTM core (see
        :func:`~ntm_rl.policies.from_sb3_contrib_names`).
    :param env: an SB3 ``VecEnv``, a gymnasium env or its id.
    :param learning_rate: learning rate, or a schedule of the remaining progress.
    :param n_steps: steps per environment per rollout.
    :param batch_size: minibatch size in env steps (a multiple of ``sequence_length``); ``None``: a
        quarter of the rollout, rounded up to whole sequences (with whole-rollout sequences and 16
        envs, 4 envs per minibatch).
    :param n_epochs: passes over each rollout.
    :param gamma: discount factor.
    :param gae_lambda: GAE's bias-variance trade-off. 0.8, not SB3's 0.95: with a reward at every
        step, 0.95 adds some 17 later rewards' noise to each advantage (README, defaults sweep).
    :param clip_range: policy clipping, or a schedule.
    :param clip_range_vf: value clipping (``None``: none), or a schedule.
    :param normalize_advantage: normalise advantages per minibatch.
    :param ent_coef: entropy bonus coefficient. 0.01, not SB3's 0: without it the choice at a rare
        rewarded decision settled on one action before the memory had learned what to read there.
    :param vf_coef: value loss coefficient.
    :param max_grad_norm: gradient norm clipping.
    :param target_kl: stop an update's epochs once the approximate KL exceeds 1.5 times this.
    :param sequence_length: training sequence length (divides ``n_steps``); ``None``: the whole
        rollout (minibatches are then whole envs over the rollout).
    :param burn_in: steps unrolled without gradient before each training sequence to refresh its
        starting state with the current parameters (R2D2's burn-in; ``<= sequence_length``).
    :param checkpoint_steps: gradient checkpointing over chunks of this many steps of a training
        sequence, which bounds activation memory on long sequences (``None``: off).
    """

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 128,
        batch_size: int | None = None,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.8,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        sequence_length: int | None = None,
        burn_in: int = 0,
        checkpoint_steps: int | None = None,
        nan_policy: Literal["raise", "skip_update"] = "raise",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy, env, learning_rate, n_steps, gamma, gae_lambda, ent_coef, vf_coef, max_grad_norm,
            sequence_length, burn_in, checkpoint_steps, stats_window_size, tensorboard_log, policy_kwargs, verbose,
            seed, device, nan_policy=nan_policy,
        )  # fmt: skip
        if batch_size is None and self.env is not None:  # (load() builds the agent without an env)
            sequences = self.n_envs * max(1, self.n_steps // self.sequence_length)  # per rollout
            batch_size = -(-sequences // MINIBATCHES) * self.sequence_length
        check_positive_int("n_epochs", n_epochs)
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
            if batch_size % self.sequence_length != 0:
                raise ValueError(
                    f"batch_size ({batch_size}) must be a multiple of sequence_length ({self.sequence_length}): "
                    "minibatches are made of whole sequences."
                )
        self.batch_size, self.n_epochs = batch_size, n_epochs
        self.clip_range, self.clip_range_vf = clip_range, clip_range_vf
        self.normalize_advantage, self.target_kl = normalize_advantage, target_kl
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

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
                state = batch.state
                if batch.burn_in is not None:  # starting states recomputed with the current parameters
                    burned = self.policy.unroll_state(batch.burn_in.observations, batch.burn_in.state,
                                                      batch.burn_in.episode_starts)  # fmt: skip
                    state = where_state(batch.burn_in.has_history, burned, state)
                values, log_prob, entropy = self.policy.evaluate_actions(
                    batch.observations, batch.actions, state, batch.episode_starts, self.checkpoint_steps
                )
                advantages = batch.advantages.flatten()
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = self._normalize_advantages(advantages)
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
                if self.target_kl is not None:  # every process stops at the same minibatch
                    approx_kl = distributed.mean_over_processes(approx_kl)
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

                self._gradient_step(loss)
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
