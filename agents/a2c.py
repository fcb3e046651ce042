"""Recurrent A2C over any memory core: one gradient step per rollout, as SB3's A2C.

Each rollout is one sequence per environment (``sequence_length = n_steps``), unrolled from
the recurrent state at its start. The update is SB3's; its defaults are not (Adam, not RMSprop;
GAE 0.8, normalised advantages, an entropy bonus, 8-step rollouts at lr 3e-3): SB3's left the
memory probes near chance in their budgets, these learn them (README, defaults sweep).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import explained_variance

from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.policies import RecurrentActorCriticPolicy


class RecurrentA2C(RecurrentOnPolicyAlgorithm):
    """Advantage Actor-Critic with a recurrent memory core.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class (and
        sb3-contrib's names, as :class:`~ntm_rl.agents.RecurrentPPO` reads them).
    :param env: an SB3 ``VecEnv``, a gymnasium env or its id.
    :param learning_rate: learning rate, or a schedule of the remaining progress. 3e-3, not SB3's
        7e-4: one gradient step per rollout gives few steps in a probe's budget.
    :param n_steps: steps per environment per rollout (and per training sequence, so gradients
        reach back at most ``n_steps``). 8 (SB3's is 5): at 4, rollout edges cut a 3-step recall too
        often; at 16, half as many gradient steps learned less in the same budget.
    :param gamma: discount factor.
    :param gae_lambda: GAE's lambda. 0.8, as RecurrentPPO's, not SB3's 1.0 (plain n-step returns,
        whose later rewards' noise swamps a per-step reward's advantage).
    :param ent_coef: entropy bonus coefficient. 0.01, as RecurrentPPO's.
    :param vf_coef: value loss coefficient.
    :param max_grad_norm: gradient norm clipping.
    :param rms_prop_eps: RMSprop's epsilon, when ``use_rms_prop``.
    :param use_rms_prop: RMSprop (SB3's and the original A2C's choice) instead of the policy's Adam
        (epsilon 1e-10, see :class:`~ntm_rl.policies.RecurrentActorCriticPolicy`).
    :param normalize_advantage: normalise advantages over the rollout.
    :param checkpoint_steps: gradient checkpointing over chunks of this many steps of the rollout,
        which bounds activation memory when ``n_steps`` is long (``None``: off).
    :param nan_policy: as for :class:`~ntm_rl.agents.RecurrentPPO`.
    """

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-3,
        n_steps: int = 8,
        gamma: float = 0.99,
        gae_lambda: float = 0.8,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = False,
        normalize_advantage: bool = True,
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
        policy_kwargs = dict(policy_kwargs or {})
        if use_rms_prop and "optimizer_class" not in policy_kwargs:
            policy_kwargs["optimizer_class"] = torch.optim.RMSprop
            policy_kwargs["optimizer_kwargs"] = dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0)
        super().__init__(
            policy, env, learning_rate, n_steps, gamma, gae_lambda, ent_coef, vf_coef, max_grad_norm,
            None, 0, checkpoint_steps, stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device,
            nan_policy=nan_policy,
        )  # fmt: skip
        self.normalize_advantage = normalize_advantage
        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """One gradient step over the whole rollout."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        (batch,) = self.rollout_buffer.sequences(self.n_envs)
        values, log_prob, entropy = self.policy.evaluate_actions(
            batch.observations, batch.actions, batch.state, batch.episode_starts, self.checkpoint_steps
        )
        advantages = batch.advantages.flatten()
        if self.normalize_advantage:
            advantages = self._normalize_advantages(advantages)
        policy_loss = -(advantages * log_prob).mean()
        value_loss = F.mse_loss(batch.returns.flatten(), values)
        entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        self._gradient_step(loss)

        self._n_updates += 1
        buffer = self.rollout_buffer
        explained_var = explained_variance(
            buffer.values.flatten().cpu().numpy(), buffer.returns.flatten().cpu().numpy()
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())

    def learn(self, total_timesteps: int, callback=None, log_interval: int = 100, tb_log_name: str = "RecurrentA2C",
              reset_num_timesteps: bool = True, progress_bar: bool = False):  # fmt: skip
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
