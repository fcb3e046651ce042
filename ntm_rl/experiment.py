"""Experiments from configs: run directories, training with checkpoints and resume, evaluation, inspection.

A run directory holds everything one run produced::

    runs/<name>-s<seed>-<time>/
      config.yaml              the resolved config (what --resume trains on)
      checkpoints/step_N.zip   the agent at N env steps (SB3 zip: loads with RecurrentPPO.load)
      checkpoints/step_N.pkl   what resuming also needs: VecNormalize statistics and RNG states
      model.zip, vecnormalize.pkl   the final agent
      monitor.csv, progress.csv, tensorboard/, wandb/
      eval.json                the final evaluation
      plots/                   memory plots of one episode (NTM cores)

Every checkpoint file is written to a temporary name and renamed into place, the ``.pkl`` before
its ``.zip``: a run killed at any moment leaves only whole checkpoints, and resuming takes the
newest one whose two files exist.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import math
import os
import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import CSVOutputFormat, Logger, TensorBoardOutputFormat
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize

from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.callbacks import DeviceEnvMonitor, MemoryMetrics, PeriodicSave, ProgressBar
from ntm_rl.config import (
    ACTIVATIONS,
    SCHEDULE_KEYS,
    ConfigError,
    ExperimentConfig,
    did_you_mean,
    load_config,
    parse_schedule,
    to_yaml,
)
from ntm_rl.cores import NTMCore
from ntm_rl.envs import CLASSIC_CONTROL, PROBES
from ntm_rl.inspect import plot_heads, plot_weightings, record_episodes
from ntm_rl.tracking import WandbOutputFormat, finish_wandb, log_to_wandb, start_wandb
from ntm_rl.vec import TorchVecEnvToSB3

logger = logging.getLogger(__name__)

ALGORITHMS: dict[str, type[RecurrentOnPolicyAlgorithm]] = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}
TORCH_ENVS = {f"ntm_rl/{name}-v0": env_class for name, env_class in (PROBES | CLASSIC_CONTROL).items()}
ATARI_ID = "ntm_rl/Atari-v0"


# --------------------------------------------------------------------------- environments
def env_class(env_id: str) -> type | None:
    """The class a config's ``env.kwargs`` go to: a batched ntm-rl env, ``AtariVecEnv``, or
    ``None`` for another gymnasium id (made with ``gym.make``)."""
    if env_id in TORCH_ENVS:
        return TORCH_ENVS[env_id]
    if env_id == ATARI_ID:
        from ntm_rl.envs.atari import AtariVecEnv

        return AtariVecEnv
    if env_id in gym.registry:
        return None
    raise ConfigError(
        f"unknown env id {env_id!r}{did_you_mean(env_id, gym.registry)}; `ntm-rl list` shows the ntm-rl ids."
    )


def make_env(config: ExperimentConfig, n_envs: int, device: torch.device | str = "cpu", training: bool = True,
             monitor_file: Path | None = None) -> VecEnv:  # fmt: skip
    """``n_envs`` envs of ``config.env`` as an SB3 ``VecEnv``, with ``VecNormalize`` if the config asks.

    A batched ntm-rl env lives on ``device``; without normalisation it is returned bare, so that
    rollouts step it as tensors (its episodes reach ``monitor_file`` through
    :class:`~ntm_rl.callbacks.DeviceEnvMonitor`); every other env is behind ``VecMonitor``. Atari
    runs in evaluation mode (whole games, unclipped rewards) when ``training`` is false.
    """
    env_id, kwargs = config.env.id, dict(config.env.kwargs)
    target = env_class(env_id)
    try:
        if target is None:
            env: VecEnv = DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * n_envs)
        elif env_id == ATARI_ID:
            env = target(num_envs=n_envs, training=training, **kwargs)
        else:
            env = TorchVecEnvToSB3(target(num_envs=n_envs, device=device, **kwargs))
    except (ValueError, TypeError, gym.error.Error) as error:
        raise ConfigError(f"env {env_id!r} with kwargs {kwargs}: {error}") from None
    if isinstance(env, TorchVecEnvToSB3) and not config.env.normalize:
        return env
    env = VecMonitor(env, filename=None if monitor_file is None else str(monitor_file))
    return VecNormalize(env, training=training, norm_reward=training) if config.env.normalize else env


def resolve_device(device: str) -> torch.device:
    """The device a config names; ``"auto"`` is CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}.") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use device=cpu or auto.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")  # fmt: skip
    return parsed


def make_model(config: ExperimentConfig, env: VecEnv, device: torch.device) -> RecurrentOnPolicyAlgorithm:
    """A fresh agent for ``config`` on ``env``."""
    space = env.observation_space
    is_dict = isinstance(space, spaces.Dict)
    if is_dict != (config.policy == "MultiInputPolicy") or (config.policy == "CnnPolicy" and not is_image_space(space)):
        fitting = "MultiInputPolicy" if is_dict else "CnnPolicy" if is_image_space(space) else "MlpPolicy"
        raise ConfigError(f"policy {config.policy!r} does not fit {config.env.id}'s observations ({space}); "
                          f"use policy={fitting}.")  # fmt: skip
    algo_kwargs = dict(config.algo_kwargs)
    for key in SCHEDULE_KEYS:
        if algo_kwargs.get(key) is not None:
            algo_kwargs[key] = parse_schedule(key, algo_kwargs[key])
    policy_kwargs = dict(config.policy_kwargs, core=config.core, core_kwargs=dict(config.core_kwargs))
    policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs.get("activation_fn", "tanh")]
    try:
        return ALGORITHMS[config.algo](config.policy, env, seed=config.seed, device=device,
                                       policy_kwargs=policy_kwargs, **algo_kwargs)  # fmt: skip
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{config.algo} with core {config.core!r}: {error}") from None


# ------------------------------------------------------------------------- run directory
def step_of(checkpoint: Path) -> int:
    """The env-step count in a checkpoint's name, ``step_<N>.zip`` or ``.pkl``."""
    return int(checkpoint.stem.removeprefix("step_"))


def model_bytes(model: RecurrentOnPolicyAlgorithm) -> bytes:
    """The agent as SB3's zip, in memory (so that it can be written atomically)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen partly written."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class RunDirectory:
    """One run's directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config_file = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.monitor_file = self.root / "monitor.csv"
        self.eval_file = self.root / "eval.json"
        self.plots = self.root / "plots"
        self.final_model = self.root / "model.zip"
        self.final_normalizer = self.root / "vecnormalize.pkl"

    @classmethod
    def create(cls, config: ExperimentConfig, runs_root: str | Path = "runs") -> RunDirectory:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run = cls(Path(runs_root) / f"{config.name}-s{config.seed}-{stamp}")
        run.checkpoints.mkdir(parents=True)
        run.config_file.write_text(to_yaml(config))
        return run

    @classmethod
    def find(cls, path: str | Path) -> RunDirectory:
        """The run directory ``path`` is, or that holds ``path`` (a model or checkpoint zip)."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{str(path)!r} does not exist; give a run directory or a model .zip inside one.")
        for candidate in [path, *path.parents][:3]:
            if (candidate / "config.yaml").is_file():
                return cls(candidate)
        raise ConfigError(f"no config.yaml in or above {str(path)!r}; give a run directory made by `ntm-rl train`.")

    @property
    def config(self) -> ExperimentConfig:
        return load_config(self.config_file)

    def checkpoint_steps(self) -> list[int]:
        """Env-step counts of the whole checkpoints (both files present), oldest first."""
        steps = [step_of(p) for p in self.checkpoints.glob("step_*.zip")]
        return sorted(s for s in steps if self._extras(s).exists())

    def checkpoint_file(self, steps: int) -> Path:
        return self.checkpoints / f"step_{steps}.zip"

    def _extras(self, steps: int) -> Path:
        return self.checkpoints / f"step_{steps}.pkl"

    def save_checkpoint(self, model: RecurrentOnPolicyAlgorithm, keep: int) -> Path:
        """Checkpoint the agent, its normalisation statistics and the RNG states; keep the newest ``keep``."""
        steps = model.num_timesteps
        normalizer = model.get_vec_normalize_env()
        extras = {"num_timesteps": steps, "vecnormalize": normalizer, "rng": _rng_states()}
        atomic_write(self._extras(steps), pickle.dumps(extras))
        atomic_write(self.checkpoint_file(steps), model_bytes(model))
        for old in self.checkpoint_steps()[:-keep]:
            self.checkpoint_file(old).unlink()
            self._extras(old).unlink()
        for orphan in self.checkpoints.glob("step_*.pkl"):  # a kill between a checkpoint's two writes
            if not self.checkpoint_file(step_of(orphan)).exists():
                orphan.unlink()
        return self.checkpoint_file(steps)

    def load_extras(self, steps: int) -> dict[str, Any]:
        return pickle.loads(self._extras(steps).read_bytes())

    def model_file(self) -> Path:
        """The final model, else the newest checkpoint."""
        if self.final_model.exists():
            return self.final_model
        steps = self.checkpoint_steps()
        if not steps:
            raise ConfigError(f"run {str(self.root)!r} has no model or checkpoint yet; train it first.")
        return self.checkpoint_file(steps[-1])


def _rng_states() -> dict[str, Any]:
    # SB3 seeds and draws from numpy's global (legacy) generator, so that is the state to keep.
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------------------ training
def train(config: ExperimentConfig | None, runs_root: str | Path = "runs", resume: str | Path | None = None,
          wandb: bool | None = None, device: str | None = None) -> tuple[RunDirectory, dict[str, Any]]:  # fmt: skip
    """Train ``config`` in a new run directory, or resume the run at ``resume`` from its newest checkpoint.

    :param config: the experiment (``None`` when resuming: the run's saved config is used).
    :param wandb: force wandb on or off (``None``: as the config says).
    :param device: train on this device instead of the config's (e.g. to resume elsewhere).
    :return: the run directory and the final evaluation.
    """
    if (config is None) == (resume is None):
        raise ConfigError("give exactly one of a config to train and a run directory to resume.")
    if resume is not None:
        run = RunDirectory.find(resume)
        config = run.config
        for leftover in [*run.root.glob("*.tmp"), *run.checkpoints.glob("*.tmp")]:  # writes a kill interrupted
            leftover.unlink()
    device = resolve_device(device or config.device)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    if resume is None:
        run = RunDirectory.create(config, runs_root)
    logger.info("run directory: %s", run.root)

    steps = run.checkpoint_steps()
    resumed_at = steps[-1] if resume is not None and steps else 0
    if resume is not None and not resumed_at:
        logger.warning("%s has no checkpoint yet: training starts from step 0.", run.root)
    # A resumed run keeps its episodes (and progress) in files of its own, so that the earlier
    # attempt's stay, even when it left no checkpoint (SB3's load_results reads every monitor file).
    monitor_file = run.root / f"resumed-{resumed_at}.monitor.csv" if resume is not None else run.monitor_file
    try:
        env = make_env(config, config.env.n_envs, device, monitor_file=monitor_file)
        if resumed_at:
            extras = run.load_extras(resumed_at)
            if extras["vecnormalize"] is not None:  # the statistics the run had, over the fresh envs
                extras["vecnormalize"].set_venv(env.venv)
                env = extras["vecnormalize"]
            model = ALGORITHMS[config.algo].load(run.checkpoint_file(resumed_at), env=env, device=device)
            _restore_rng_states(extras["rng"])
            env.seed(config.seed + resumed_at)  # fresh episodes, not a replay of the first ones
            logger.info("resuming %s at %d env steps", run.root, resumed_at)
        else:
            model = make_model(config, env, device)
    except BaseException:  # a bad setting, or anything else before training starts
        if resume is None:  # nothing was trained: leave no empty run behind
            shutil.rmtree(run.root)
        raise

    suffix = "" if resume is None else f"-resumed-{resumed_at}"
    outputs = [CSVOutputFormat(str(run.root / f"progress{suffix}.csv"))]
    if config.logging.tensorboard:
        outputs.append(TensorBoardOutputFormat(str(run.root / "tensorboard")))
    wandb_output = None
    use_wandb = config.logging.wandb if wandb is None else wandb
    if use_wandb:
        wandb_run = start_wandb(config.logging.wandb_project, run.root.name, run.root, config.to_dict(),
                                config.logging.wandb_mode)  # fmt: skip
        if wandb_run is not None:
            wandb_output = WandbOutputFormat(wandb_run)
            outputs.append(wandb_output)
    model.set_logger(Logger(str(run.root), outputs))

    callbacks = [PeriodicSave(config.checkpoint_freq, lambda: run.save_checkpoint(model, config.keep_checkpoints))]
    if isinstance(env, TorchVecEnvToSB3):
        callbacks.append(DeviceEnvMonitor(str(monitor_file)))
    if config.logging.memory_metrics_freq:
        callbacks.append(MemoryMetrics(config.logging.memory_metrics_freq))
    if config.logging.progress_bar:
        callbacks.append(ProgressBar(config.total_timesteps))
    try:
        model.learn(max(config.total_timesteps - model.num_timesteps, 0), callback=callbacks,
                    log_interval=config.logging.log_interval, reset_num_timesteps=not resumed_at)  # fmt: skip
        run.save_checkpoint(model, config.keep_checkpoints)
        if model.get_vec_normalize_env() is not None:  # before the model that needs it
            atomic_write(run.final_normalizer, pickle.dumps(model.get_vec_normalize_env()))
        atomic_write(run.final_model, model_bytes(model))

        result = evaluate(model, config, model.get_vec_normalize_env(), config.eval.episodes,
                          config.eval.deterministic, device)  # fmt: skip
        result |= {"model": str(run.final_model), "num_timesteps": model.num_timesteps, "resumed_at": resumed_at}
        run.eval_file.write_text(json.dumps(result, indent=2))
        log_to_wandb(wandb_output, {"eval/mean_return": result["mean_return"]}, model.num_timesteps)
        if isinstance(model.policy.core, NTMCore):
            plots = inspect_agent(model, config, model.get_vec_normalize_env(), run.plots, episodes=1)
            log_to_wandb(
                wandb_output, {f"memory/{p.stem}": p for p in plots if p.suffix == ".png"}, model.num_timesteps
            )
    finally:
        model.logger.close()
        env.close()
        finish_wandb(wandb_output)
    return run, result


# ---------------------------------------------------------------------- eval and inspect
def load_agent(path: str | Path, device: str = "auto"):
    """The agent at ``path`` (a run directory, or a model zip inside one), its config and VecNormalize."""
    run = RunDirectory.find(path)
    config = run.config
    path = Path(path)
    model_file = path if path.suffix == ".zip" else run.model_file()
    try:
        model = ALGORITHMS[config.algo].load(model_file, device=resolve_device(device))
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"could not load the agent in {str(model_file)!r} ({type(error).__name__}: {error})."
        ) from None
    normalizer = None
    if config.env.normalize:  # the statistics saved with this model
        if model_file == run.final_model and run.final_normalizer.exists():
            normalizer = pickle.loads(run.final_normalizer.read_bytes())
        elif run.checkpoint_file(model.num_timesteps).exists():
            normalizer = run.load_extras(model.num_timesteps)["vecnormalize"]
        else:
            raise ConfigError(
                f"{str(model_file)!r} was trained with normalised observations, but no statistics saved at "
                f"{model.num_timesteps} steps were found; use the run's model.zip or a checkpoint."
            )
    return model, config, normalizer


def _eval_env(config: ExperimentConfig, normalizer: VecNormalize | None, device: torch.device) -> VecEnv:
    """One env for evaluation, normalised with the training statistics (not updated, rewards raw)."""
    env = make_env(config, 1, device, training=False)
    if isinstance(env, VecNormalize) and normalizer is not None:
        env.obs_rms = normalizer.obs_rms
    return env


def evaluate(model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig, normalizer: VecNormalize | None,
             episodes: int, deterministic: bool = True, device: torch.device | None = None) -> dict[str, Any]:  # fmt: skip
    """Mean and standard deviation of the return over ``episodes`` episodes of one env."""
    env = _eval_env(config, normalizer, device or model.device)
    env.seed(config.seed + 1_000_000)  # episodes training never saw
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=deterministic,
                                       return_episode_rewards=True, warn=False)  # fmt: skip
    env.close()
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": episodes,
            "mean_length": float(np.mean(lengths)), "deterministic": deterministic,
            "returns": [float(r) for r in returns]}  # fmt: skip


def inspect_agent(model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig, normalizer: VecNormalize | None,
                  out_dir: str | Path, episodes: int = 3, deterministic: bool = True) -> list[Path]:  # fmt: skip
    """Trace ``episodes`` episodes; write per episode a trace (.npz), two plots (.png), and metrics.json."""
    if not isinstance(model.policy.core, NTMCore):
        raise ConfigError(f"inspect needs an NTM core, this agent's is {config.core!r}; train with core=ntm.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _eval_env(config, normalizer, model.device)
    env.seed(config.seed + 2_000_000)
    traces = record_episodes(model, env, episodes, deterministic)
    env.close()
    written, metrics = [], []
    for index, trace in enumerate(traces):
        title = f"{config.name}, episode {index}: return {trace.rewards.sum():g} in {len(trace.rewards)} steps"
        trace.save(out_dir / f"episode_{index}.npz")
        written += [out_dir / f"episode_{index}.npz",
                    plot_weightings(trace, out_dir / f"episode_{index}_weightings.png", title),
                    plot_heads(trace, out_dir / f"episode_{index}_heads.png", title)]  # fmt: skip
        metrics.append(trace.metrics())
    metrics = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()} for m in metrics]
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return [*written, out_dir / "metrics.json"]
