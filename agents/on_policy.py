"""What recurrent on-policy agents share: SB3's on-policy base, with tensor-native rollouts.

Recurrent PPO and A2C differ only in their update. Both collect rollouts here:

- observations become tensors once per step; an env that lives on the device (a
  :class:`~ntm_rl.vec.TorchVecEnv` behind ``TorchVecEnvToSB3``) is stepped directly, with no numpy
  in the loop, and any other SB3 ``VecEnv`` through numpy. Each kind has its step function
  (``_step_device_env``, ``_step_sb3_env``), and both return one :class:`EnvStep`; the numpy view
  that SB3 callbacks read is made on the device path only when a callback may read it;
- the buffer keeps the policy's recurrent state only where a training sequence starts, and the
  update unrolls whole sequences of ``sequence_length`` steps from those states;
- a truncated episode bootstraps from the value of its terminal observation, computed with the
  recurrent state of that moment.
"""

from __future__ import annotations

import io
import pathlib
import time
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, NamedTuple, Self

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, ProgressBarCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import open_path
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv

from ntm_rl import distributed
from ntm_rl.buffers import RecurrentRolloutBuffer
from ntm_rl.checks import check_positive_int
from ntm_rl.cores.state import index_state
from ntm_rl.policies import (
    ActorCriticState,
    RecurrentActorCriticPolicy,
    RecurrentCnnPolicy,
    RecurrentMlpPolicy,
    RecurrentMultiInputPolicy,
    from_sb3_contrib_names,
)
from ntm_rl.serialization import add_description, safe_custom_objects
from ntm_rl.vec import TorchVecEnv, TorchVecEnvToSB3, VecStep
from ntm_rl.vec.adapters import sb3_infos


class RolloutStep(NamedTuple):
    """One rollout step as callbacks see it (``model.last_step``, set before ``on_step``): the
    recurrent state the step's policy call produced, and the episode-start flags ``[n_envs]`` of
    the observations it acted on."""

    state: ActorCriticState
    episode_starts: torch.Tensor


class EnvStep(NamedTuple):
    """One step of every env, as a rollout uses it, whichever kind of env made it."""

    observation: torch.Tensor | dict[str, torch.Tensor]
    """``[n_envs, ...]`` next observations (a new episode's first where ``episode_start``)."""
    reward: torch.Tensor
    """``[n_envs]`` float rewards."""
    episode_start: torch.Tensor
    """``[n_envs]`` bool: the episode ended with this step and ``observation`` begins the next."""
    truncated_values: torch.Tensor | None
    """``[n_envs]`` values of truncated episodes' terminal observations (0 elsewhere) to bootstrap
    from, or ``None`` when no episode was truncated."""
    sb3_locals: dict[str, Any]
    """The step as SB3 callbacks read it (numpy ``new_obs``, ``rewards``, ``actions``, ``dones``,
    ``infos``), or ``{}`` when no callback reads them."""


class NonFiniteError(RuntimeError):
    """Training met a NaN or infinity (in an observation, a reward, the loss or the gradients)."""


class RecurrentOnPolicyAlgorithm(OnPolicyAlgorithm):
    """SB3's ``OnPolicyAlgorithm`` with a recurrent policy and a sequence rollout buffer.

    :param sequence_length: training sequence length (divides ``n_steps``); ``None``: the whole
        rollout, so that gradients cross every episode up to its true start (or the rollout's).
    :param burn_in: steps unrolled without gradient before each training sequence, from the state
        stored there, to give the sequence a starting state from the current parameters
        (``<= sequence_length``; 0: none).
    :param checkpoint_steps: unroll training sequences with gradient checkpointing over chunks of
        this many steps (activation memory of one chunk, for about one more forward pass of time);
        ``None``: keep every step's activations.
    :param nan_policy: ``"raise"``: a non-finite loss or gradient stops training with
        :class:`NonFiniteError`; ``"skip_update"``: that minibatch's update is dropped and counted
        (``train/skipped_updates``). Non-finite observations always stop training, and non-finite
        rewards do under ``"raise"``.
    Other parameters are SB3's (see :class:`~ntm_rl.agents.RecurrentPPO`).
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
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        gae_lambda: float,
        ent_coef: float,
        vf_coef: float,
        max_grad_norm: float,
        sequence_length: int | None,
        burn_in: int = 0,
        checkpoint_steps: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        nan_policy: Literal["raise", "skip_update"] = "raise",
    ):
        check_positive_int("n_steps", n_steps)
        policy, policy_kwargs = from_sb3_contrib_names(policy, policy_kwargs)
        if nan_policy not in ("raise", "skip_update"):
            raise ValueError(f"nan_policy must be 'raise' or 'skip_update', got {nan_policy!r}.")
        sequence_length = n_steps if sequence_length is None else sequence_length
        check_positive_int("sequence_length", sequence_length)
        if checkpoint_steps is not None:
            check_positive_int("checkpoint_steps", checkpoint_steps)
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
        self.sequence_length, self.burn_in, self.checkpoint_steps = sequence_length, burn_in, checkpoint_steps
        self.nan_policy, self.skipped_updates = nan_policy, 0
        # For callbacks (documented attributes, not the rollout's local variables):
        self.last_step: RolloutStep | None = None  # the rollout step that on_step follows
        self.rollout_episodes: list[dict[str, float]] = []  # a device env's episodes ended in the last rollout
        self._last_state: ActorCriticState | None = None
        self._episode_returns: torch.Tensor | None = None  # of the episodes running in a device env
        self._episode_lengths: torch.Tensor | None = None
        self._finished_episodes: list[torch.Tensor] = []  # [2, n_envs] per step: returns (NaN: running), lengths
        self._normalizer_sums: list[np.ndarray] = []  # VecNormalize statistics as all processes last agreed them

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        self.rollout_buffer = RecurrentRolloutBuffer(
            self.n_steps, self.n_envs, self.observation_space, self.action_space, self.sequence_length,
            self.device, self.gamma, self.gae_lambda, self.burn_in,
        )  # fmt: skip

    def _excluded_save_params(self) -> list[str]:
        # The rollout's recurrent state and last observations are transient, like the env.
        return [*super()._excluded_save_params(), "_last_state", "_last_obs", "_last_original_obs",
                "_last_episode_starts", "_episode_returns", "_episode_lengths", "_finished_episodes", "last_step",
                "rollout_episodes", "_normalizer_sums"]  # fmt: skip

    def save(self, path: str | pathlib.Path | io.BufferedIOBase, exclude: Iterable[str] | None = None,
             include: Iterable[str] | None = None) -> None:  # fmt: skip
        """SB3's zip, plus a description of its pickled entries as data, so that :meth:`load` can
        rebuild them without unpickling (see :mod:`ntm_rl.serialization`)."""
        buffer = io.BytesIO()
        super().save(buffer, exclude, include)
        data = add_description(buffer.getvalue(), self)
        file = open_path(path, "w", verbose=0, suffix="zip")
        file.write(data)
        if isinstance(path, str | pathlib.Path):  # a caller's file object stays open, as in SB3
            file.close()

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | pathlib.Path | io.BufferedIOBase, env: GymEnv | None = None,
        device: torch.device | str = "auto", custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False, force_reset: bool = True, trusted: bool = False, **kwargs: Any,
    ) -> Self:  # fmt: skip
        """SB3's ``load``, but without unpickling anything by default.

        :param trusted: unpickle the zip's ``data`` as SB3 does, which runs any code the file holds;
            only for files from a source you trust (needed for zips that ntm-rl did not write).
        Other parameters are SB3's.
        """
        file = open_path(path, "r", verbose=0, suffix="zip")
        zip_bytes = file.read()
        if isinstance(path, str | pathlib.Path):
            file.close()
        if not trusted:
            name = str(path) if isinstance(path, str | pathlib.Path) else "the model"
            custom_objects = safe_custom_objects(zip_bytes, cls, name, custom_objects)
        return super().load(io.BytesIO(zip_bytes), env, device, custom_objects, print_system_info, force_reset,
                            **kwargs)  # fmt: skip

    def _setup_learn(self, total_timesteps: int, callback: MaybeCallback = None, reset_num_timesteps: bool = True,
                     tb_log_name: str = "run", progress_bar: bool = False):  # fmt: skip
        if self._last_obs is None or reset_num_timesteps:
            self._last_state = None
        # VecNormalize's statistics before the reset below counts its first observations: the same in
        # every process of a distributed run (fresh or restored), so the sums all processes start from.
        self._normalizer_sums = [distributed.running_stats_sums(stats) for stats in self._normalizer_stats()]
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self._normalizer_sums = distributed.merge_running_stats(self._normalizer_stats(), self._normalizer_sums)
        if self._last_state is None:  # the env was reset: so are the state and the episode statistics
            self._last_state = self.policy.initial_state(self.n_envs)
            self._episode_returns = torch.zeros(self.n_envs, device=self.device)
            self._episode_lengths = torch.zeros(self.n_envs, device=self.device)
        return result

    def _normalizer_stats(self) -> list[Any]:
        """VecNormalize's running statistics (none without it), which a distributed run merges."""
        normalizer = self.get_vec_normalize_env()
        if normalizer is None or not normalizer.training:
            return []
        observations = normalizer.obs_rms.values() if isinstance(normalizer.obs_rms, dict) else [normalizer.obs_rms]
        return [
            *(observations if normalizer.norm_obs else []),
            *([normalizer.ret_rms] if normalizer.norm_reward else []),
        ]

    def _normalize_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        """Advantages less their mean, over their standard deviation: those of the global minibatch,
        in a distributed run (see :mod:`ntm_rl.distributed`)."""
        mean, std = distributed.global_mean_std(advantages)
        return (advantages - mean) / (std + 1e-8)

    def _gradient_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss``, clip the gradients' norm and step the optimiser, unless the loss or
        the gradients are not finite (see ``nan_policy``)."""
        self.policy.optimizer.zero_grad()
        loss.backward()
        loss = distributed.average_gradients(self.policy.parameters(), loss)  # one all-reduce; identity alone
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        if bool(torch.isfinite(loss) & torch.isfinite(norm)):  # one host sync per minibatch
            self.policy.optimizer.step()
            return
        what = "loss" if not torch.isfinite(loss) else "gradient norm"
        if self.nan_policy == "raise":
            raise NonFiniteError(
                f"the {what} is not finite in the update after {self.num_timesteps} env steps; lower the learning "
                "rate or max_grad_norm, or set nan_policy='skip_update' to drop such minibatches."
            )
        self.policy.optimizer.zero_grad()
        self.skipped_updates += 1
        self.logger.record("train/skipped_updates", self.skipped_updates)

    def _check_rollout_finite(self, buffer: RecurrentRolloutBuffer) -> None:
        """Stop with :class:`NonFiniteError` naming the first non-finite reward or observation of the
        rollout (its step and env index), before it reaches the weights. One host sync per rollout."""
        fields = _observation_fields(buffer.observations)  # first: a bad observation can cause a bad reward
        if self.nan_policy == "raise":  # with "skip_update", a NaN reward spoils its minibatches, which are dropped
            fields.append(("reward", buffer.rewards))
        for what, values in fields:
            found = _first_nonfinite(values)
            if found is not None:
                step, env = found
                first = self.num_timesteps - buffer.n_steps * buffer.n_envs * distributed.world_size()
                raise NonFiniteError(
                    f"non-finite {what} from env {env} at step {step} of the rollout of env steps {first} to "
                    f"{self.num_timesteps}; fix the env, or clip or normalise what it returns."
                )

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
        # SB3 callbacks read a step's new_obs, rewards, actions, dones and infos as numpy: for a device
        # env that is a host copy (on a GPU, a sync) per step, made only when a callback may read them.
        reads_locals = device_env is not None and _reads_step_locals(callback)
        self._finished_episodes = []
        obs = self._to_tensor(self._last_obs)
        episode_starts = torch.as_tensor(self._last_episode_starts, device=self.device).bool()
        state = self._last_state
        bounds = None  # Box actions are clipped to the space before the env sees them
        if isinstance(self.action_space, spaces.Box):
            bounds = [torch.as_tensor(b, device=self.device) for b in (self.action_space.low, self.action_space.high)]
        for _ in range(n_rollout_steps):
            actions, values, log_probs, next_state = self._act(obs, state, episode_starts)
            env_actions = actions if bounds is None else torch.clamp(actions, *bounds)
            if device_env is not None:
                step = self._step_device_env(device_env, env_actions, next_state, reads_locals)
            else:
                step = self._step_sb3_env(env, env_actions, next_state)
            self.num_timesteps += env.num_envs * distributed.world_size()  # every process's steps
            self.last_step = RolloutStep(next_state, episode_starts)
            callback.update_locals(locals() | step.sb3_locals)
            if not callback.on_step():
                # Stopped mid-rollout: keep where the envs are, so that a later learn() goes on from there.
                self._keep_position(step.observation, step.episode_start, next_state)
                return False
            rewards = step.reward if step.truncated_values is None else step.reward + self.gamma * step.truncated_values
            rollout_buffer.add(obs, actions, rewards, episode_starts, values, log_probs, state)
            obs, episode_starts, state = step.observation, step.episode_start, next_state

        self._check_rollout_finite(rollout_buffer)
        self._normalizer_sums = distributed.merge_running_stats(self._normalizer_stats(), self._normalizer_sums)
        with torch.no_grad():
            last_values = self.policy.predict_values(obs, state, episode_starts)
        rollout_buffer.compute_returns_and_advantage(last_values, episode_starts)
        self._keep_position(obs, episode_starts, state)
        self.rollout_episodes = []  # a device env's finished episodes
        if self._finished_episodes:
            stats = torch.stack(self._finished_episodes, dim=2).cpu().numpy()  # [2, B, T], one host copy per rollout
            self.rollout_episodes = [
                {"r": float(r), "l": int(n)} for r, n in stats.transpose(2, 1, 0).reshape(-1, 2) if not np.isnan(r)
            ]
            self.ep_info_buffer.extend(self.rollout_episodes)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _act(
        self, obs: torch.Tensor | dict[str, torch.Tensor], state: ActorCriticState, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ActorCriticState]:
        """The policy's step in a rollout: actions, values, log-probabilities, next state. A
        distribution that refuses NaN parameters is reported as the observation that caused them."""
        with torch.no_grad():
            try:
                return self.policy(obs, state, episode_starts)
            except (ValueError, RuntimeError):
                one_step = {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]
                for what, field in _observation_fields(one_step):
                    if (found := _first_nonfinite(field)) is not None:
                        raise NonFiniteError(f"non-finite {what} from env {found[1]} at {self.num_timesteps} "
                                             "env steps; fix the env, or clip what it returns.") from None  # fmt: skip
                raise

    def _step_device_env(
        self, env: TorchVecEnv, actions: torch.Tensor, state: ActorCriticState, reads_locals: bool
    ) -> EnvStep:
        """Step an env that lives on a device, without numpy (but for ``sb3_locals`` when
        ``reads_locals``), keeping its episodes' returns and lengths, which SB3 reads from a Monitor."""
        # The copies are no-ops where env and policy share a device, the fast case; an env elsewhere
        # (say a CPU env beside a CUDA policy, as device="auto" picks) still works.
        result = env.step(actions.to(env.device))
        reward = result.reward.to(self.device, copy=True)
        episode_start, truncated = result.episode_start.to(self.device), result.truncated.to(self.device)
        self._episode_returns += reward
        self._episode_lengths += 1
        finished = torch.stack([torch.where(episode_start, self._episode_returns, torch.nan), self._episode_lengths])
        self._finished_episodes.append(finished)
        self._episode_returns = torch.where(episode_start, 0.0, self._episode_returns)
        self._episode_lengths = torch.where(episode_start, 0.0, self._episode_lengths)
        # Checking for truncations costs nothing on the CPU, but a host sync per step on a GPU, where
        # every env's terminal value is computed and masked instead.
        truncated_values = None
        if self.device.type != "cpu" or bool(truncated.any()):
            no_reset = torch.zeros_like(episode_start)
            with torch.no_grad():
                terminal_values = self.policy.predict_values(result.final_observation.to(self.device), state, no_reset)
            truncated_values = terminal_values * truncated
        sb3_locals = self._device_step_locals(result, actions, finished) if reads_locals else {}
        return EnvStep(result.observation.to(self.device), reward, episode_start, truncated_values, sb3_locals)

    def _step_sb3_env(self, env: VecEnv, actions: torch.Tensor, state: ActorCriticState) -> EnvStep:
        """Step an SB3 ``VecEnv`` through numpy, as SB3's own rollouts do."""
        actions_np = actions.cpu().numpy()
        new_obs, rewards, dones, infos = env.step(actions_np)
        self._update_info_buffer(infos, dones)
        truncated = dones & np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        truncated_values = None
        if truncated.any():  # SB3 infos hold the terminal observations of the truncated envs, in numpy
            index = np.flatnonzero(truncated)
            picked = [infos[i]["terminal_observation"] for i in index]
            stacked = {k: np.stack([p[k] for p in picked]) for k in picked[0]} if isinstance(picked[0], dict) else \
                np.stack(picked)  # fmt: skip
            index_tensor = torch.as_tensor(index, device=self.device)
            no_reset = torch.zeros(len(index), dtype=torch.bool, device=self.device)
            with torch.no_grad():
                values = self.policy.predict_values(
                    self._to_tensor(stacked), index_state(state, index_tensor), no_reset
                )
            truncated_values = torch.zeros(self.n_envs, device=self.device).index_put((index_tensor,), values)
        sb3_locals = {"new_obs": new_obs, "rewards": rewards, "actions": actions_np, "dones": dones, "infos": infos}
        return EnvStep(self._to_tensor(new_obs), torch.as_tensor(rewards, device=self.device).float(),
                       torch.as_tensor(dones, device=self.device), truncated_values, sb3_locals)  # fmt: skip

    def _device_step_locals(self, step: VecStep, actions: torch.Tensor, finished: torch.Tensor) -> dict[str, Any]:
        """A device env's step as SB3 gives it to callbacks: numpy arrays, and ``infos`` with the
        finished episodes' records (``finished``: ``[2, B]`` returns, NaN where running, and lengths)."""
        dones = step.episode_start.cpu().numpy()
        returns, lengths = finished.cpu().numpy()
        final = step.final_observation.cpu().numpy() if dones.any() else None
        seconds = (time.time_ns() - self.start_time) / 1e9
        infos = sb3_infos(dones, final, step.truncated.cpu().numpy(), returns, lengths, seconds)
        return {"new_obs": step.observation.cpu().numpy(), "rewards": step.reward.float().cpu().numpy(),
                "actions": actions.cpu().numpy(), "dones": dones, "infos": infos}  # fmt: skip

    def _keep_position(self, obs: Any, episode_starts: torch.Tensor, state: ActorCriticState) -> None:
        """Where the envs are now (observation, episode starts, recurrent state), for the next rollout."""
        self._last_obs, self._last_episode_starts, self._last_state = obs, episode_starts.cpu().numpy(), state


def _observation_fields(observations: torch.Tensor | dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Per-step observations ``[T, B, ...]`` named for messages (one per key of a Dict space)."""
    if isinstance(observations, dict):
        return [(f"observation {key!r}", value) for key, value in observations.items()]
    return [("observation", observations)]


def _first_nonfinite(values: torch.Tensor) -> tuple[int, int] | None:
    """``(step, env)`` of the first non-finite entry of per-step data ``[T, B, ...]``, or ``None``."""
    if not values.is_floating_point():
        return None
    bad = ~torch.isfinite(values.reshape(values.shape[0], values.shape[1], -1)).all(dim=2)
    if not bool(bad.any()):
        return None
    step, env = torch.nonzero(bad)[0].tolist()
    return step, env


def _reads_step_locals(callback: BaseCallback) -> bool:
    """Whether ``callback`` may read a rollout step's locals as SB3 gives them (numpy ``new_obs``,
    ``rewards``, ``actions``, ``dones``, ``infos``): SB3 wraps ``callback=None`` as an empty
    ``ConvertCallback``, its progress bar reads only the step count, and a callback whose class says
    ``reads_sb3_step_locals = False`` (ntm-rl's own) reads none of them."""
    if isinstance(callback, CallbackList):
        return any(_reads_step_locals(child) for child in callback.callbacks)
    if isinstance(callback, ConvertCallback):
        return callback.callback is not None
    return not isinstance(callback, ProgressBarCallback) and getattr(callback, "reads_sb3_step_locals", True)
