"""Experiments from configs: env and agent building, training with checkpoints and resume,
evaluation, inspection. The run directory a run writes is :mod:`ntm_rl.runs`'s."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle  # only for its exception type: nothing here unpickles
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import CSVOutputFormat, Logger, TensorBoardOutputFormat
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize

from ntm_rl import distributed
from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.callbacks import DeviceEnvMonitor, GatherEpisodes, MemoryMetrics, PeriodicSave, ProgressBar
from ntm_rl.config import (
    SCHEDULE_KEYS,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    env_wrappers,
    parse_schedule,
)
from ntm_rl.cores import NTMCore
from ntm_rl.inspect import plot_heads, plot_weightings, record_episodes
from ntm_rl.registry import ALGORITHMS, ATARI_ID, env_class, resolve_device
from ntm_rl.runs import RESUMABLE_KEYS, DamagedError, RunDirectory, RunLock, changed_keys, read_manifest, rng_file
from ntm_rl.serialization import (
    ACTIVATIONS,
    load_npz,
    normalizer_arrays,
    npz_bytes,
    restore_normalizer,
    restore_rng,
    rng_arrays,
)
from ntm_rl.tracking import WandbOutputFormat, finish_wandb, log_to_wandb, start_wandb
from ntm_rl.vec import TorchVecEnvToSB3

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- environments
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
            wrappers = env_wrappers(config.env.wrappers, config.env.packages)

            def make_one() -> gym.Env:
                env = gym.make(env_id, **kwargs)
                for wrapper, wrapper_kwargs in wrappers:
                    env = wrapper(env, **wrapper_kwargs)
                return env

            env: VecEnv = DummyVecEnv([make_one] * n_envs)
        elif env_id == ATARI_ID:
            env = target(num_envs=n_envs, training=training, **kwargs)
        else:
            env = TorchVecEnvToSB3(target(num_envs=n_envs, device=device, **kwargs))
    except (ValueError, TypeError, gym.error.Error) as error:
        raise ConfigError(f"env {env_id!r} with kwargs {kwargs}: {error}") from None
    if isinstance(env, TorchVecEnvToSB3) and not config.env.normalize:
        return env
    with warnings.catch_warnings():  # the batched env's own episode records are the same numbers
        warnings.filterwarnings("ignore", message="The environment is already wrapped with a `Monitor`")
        env = VecMonitor(env, filename=None if monitor_file is None else str(monitor_file))
    return VecNormalize(env, training=training, norm_reward=training) if config.env.normalize else env


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
    if distributed.launched():
        return _train_distributed(config, runs_root, resume, wandb, device)
    if resume is not None:
        run = RunDirectory.find(resume)
        config = run.config
    device = resolve_device(device or config.device)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    if resume is None:
        run = RunDirectory.create(config, runs_root)
    logger.info("run directory: %s", run.root)
    with RunLock(run.lock_file):
        return run, _train_in(run, config, resume is not None, device, wandb)


RUN_DIR_HINT = "NTM_RL_RUN_DIR_FILE"
"""An environment variable naming a file where rank 0 of a distributed run writes its run directory."""


def _train_distributed(config: ExperimentConfig | None, runs_root: str | Path, resume: str | Path | None,
                       wandb: bool | None, device: str | None) -> tuple[RunDirectory, dict[str, Any]]:  # fmt: skip
    """:func:`train` in one of ``torchrun``'s processes (see :mod:`ntm_rl.distributed`).

    Rank 0 reads the config (or the run's, to resume), makes the run directory and sends both to
    the others, so that every process trains the same config; it alone writes to the run
    directory. The others read a checkpoint to resume from it (on several machines, the run
    directory must be on a file system they share). The others' result is ``{}``.
    """
    distributed.init_process_group()
    try:
        run = None
        if distributed.rank() == 0:
            if resume is not None:
                run = RunDirectory.find(resume)
                config = run.config
            else:
                run = RunDirectory.create(config, runs_root)
            logger.info("run directory: %s (%d processes)", run.root, distributed.world_size())
            if hint := os.environ.get(RUN_DIR_HINT):  # for `ntm-rl train --nproc`'s messages
                Path(hint).write_text(str(run.root))
        setup = distributed.broadcast_json(None if run is None else {"config": config.to_dict(), "root": str(run.root)})
        if run is None:
            config = config_from_dict(setup["config"], import_packages=resume is None)
            run = RunDirectory(setup["root"])
        device = distributed.process_device(resolve_device(device or config.device))
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        with RunLock(run.lock_file) if distributed.rank() == 0 else contextlib.nullcontext():  # rank 0 writes
            return run, _train_in(run, config, resume is not None, device, wandb)
    finally:
        distributed.destroy_process_group()


def _train_in(run: RunDirectory, config: ExperimentConfig, resuming: bool, device: torch.device,
              wandb: bool | None) -> dict[str, Any]:  # fmt: skip
    """:func:`train`, once the run directory is known and locked (by rank 0, in a distributed run)."""
    rank, processes = distributed.rank(), distributed.world_size()
    writer = rank == 0  # the one process that writes the run directory
    resumed = None
    if resuming:
        for leftover in [*run.root.glob("*.tmp"), *run.checkpoints.glob("*/*.tmp")] if writer else []:
            leftover.unlink()  # writes a kill interrupted
        resumed = _newest_loadable_checkpoint(run, config, device)
        if resumed is None and writer:
            logger.warning("%s has no checkpoint yet: training starts from step 0.", run.root)
    resumed_at = 0 if resumed is None else resumed[0].num_timesteps
    # A resumed attempt keeps its episodes (and progress) in files of its own, so that the earlier
    # attempts' stay, even when they left no checkpoint (SB3's load_results reads every monitor file).
    suffix = ""
    if resuming:
        suffix, attempt = f"-resumed-{resumed_at}", 1
        while (run.root / f"progress{suffix}.csv").exists() or (run.root / f"{suffix[1:]}.monitor.csv").exists():
            attempt += 1
            suffix = f"-resumed-{resumed_at}-{attempt}"
    monitor_file = run.root / f"{suffix[1:]}.monitor.csv" if resuming else run.monitor_file
    # Process r's env i plays what a single env seeded seed + r * n_envs + i plays.
    env_seed = config.seed + rank * config.env.n_envs
    try:
        env = make_env(config, config.env.n_envs, device, monitor_file=monitor_file if writer else None)
        if resumed is not None:
            model, statistics, rng = resumed
            if isinstance(env, VecNormalize):  # the statistics the run had, in the fresh envs' VecNormalize
                restore_normalizer(env, statistics)
            model.set_env(env)
            restore_rng(rng)
            env.seed(env_seed + resumed_at)  # fresh episodes, not a replay of the first ones
            if writer:
                logger.info("resuming %s at %d env steps", run.root, resumed_at)
        else:
            model = make_model(config, env, device)
            if rank > 0:  # the same initial weights (seeded alike), but episodes and samples of its own
                set_random_seed(env_seed)
                env.seed(env_seed)
        distributed.broadcast_module(model.policy)
    except BaseException:  # a bad setting, or anything else before training starts
        if not resuming and writer:  # nothing was trained: leave no empty run behind
            shutil.rmtree(run.root)
        raise

    outputs = [CSVOutputFormat(str(run.root / f"progress{suffix}.csv"))] if writer else []
    if config.logging.tensorboard and writer:
        outputs.append(TensorBoardOutputFormat(str(run.root / "tensorboard")))
    wandb_output = None
    use_wandb = (config.logging.wandb if wandb is None else wandb) and writer
    if use_wandb:
        wandb_run = start_wandb(config.logging.wandb_project, run.root.name, run.root, config.to_dict(),
                                config.logging.wandb_mode)  # fmt: skip
        if wandb_run is not None:
            wandb_output = WandbOutputFormat(wandb_run)
            outputs.append(wandb_output)
    model.set_logger(Logger(str(run.root) if writer else None, outputs))

    callbacks = [PeriodicSave(config.checkpoint_freq, lambda: save_checkpoint(run, model, config))]
    if processes > 1:
        callbacks.append(GatherEpisodes(monitor_file if writer else None))
    if isinstance(env, TorchVecEnvToSB3) and writer:
        callbacks.append(DeviceEnvMonitor(str(monitor_file)))
    if config.logging.memory_metrics_freq and writer:
        callbacks.append(MemoryMetrics(config.logging.memory_metrics_freq))
    if config.logging.progress_bar and writer:
        callbacks.append(ProgressBar(config.total_timesteps))
    try:
        model.learn(max(config.total_timesteps - model.num_timesteps, 0), callback=callbacks,
                    log_interval=config.logging.log_interval, reset_num_timesteps=not resumed_at)  # fmt: skip
        save_checkpoint(run, model, config)
        if processes > 1:
            distributed.leave_process_group()  # the last collective: rank 0 finishes the run alone
        if not writer:
            return {}
        run.save_final(model, config)

        statistics = None if model.get_vec_normalize_env() is None else normalizer_arrays(model.get_vec_normalize_env())
        result = evaluate(model, config, statistics, config.eval.episodes, config.eval.deterministic, device)
        result |= {"model": str(run.final_model), "num_timesteps": model.num_timesteps, "resumed_at": resumed_at,
                   "processes": processes}  # fmt: skip
        run.eval_file.write_text(json.dumps(result, indent=2))
        log_to_wandb(wandb_output, {"eval/mean_return": result["mean_return"]}, model.num_timesteps)
        if isinstance(model.policy.core, NTMCore):
            plots = inspect_agent(model, config, statistics, run.plots, episodes=1)
            log_to_wandb(
                wandb_output, {f"memory/{p.stem}": p for p in plots if p.suffix == ".png"}, model.num_timesteps
            )
    finally:
        model.logger.close()
        env.close()
        finish_wandb(wandb_output)
    return result


def save_checkpoint(run: RunDirectory, model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig) -> None:
    """Checkpoint ``model`` in ``run`` with every process's RNG states: in a distributed run every
    process calls this at the same step, and rank 0 writes."""
    rng_states = distributed.all_gather_bytes(npz_bytes(rng_arrays()))
    if distributed.rank() == 0:
        run.save_checkpoint(model, config, rng_states)


def _newest_loadable_checkpoint(run: RunDirectory, config: ExperimentConfig, device: torch.device):
    """What :func:`load_snapshot` returns for the newest checkpoint that is whole and loads, or
    ``None`` if the run never saved one. A config edited since the checkpoint in more than
    :data:`RESUMABLE_KEYS` is refused."""

    def unchanged(snapshot: Path, manifest: dict[str, Any]) -> None:
        trained_by, processes = manifest.get("world_size", 1), distributed.world_size()
        if trained_by != processes:
            raise ConfigError(
                f"{snapshot} was trained by {trained_by} process(es), and this resume has {processes}; resume with "
                f"--nproc {trained_by} (each process's envs and random state continue from the checkpoint)."
            )
        changed = [key for key in changed_keys(manifest["config"], config.to_dict())
                   if key.split(".")[0] not in RESUMABLE_KEYS]  # fmt: skip
        if changed:
            raise ConfigError(
                f"{run.config_file} differs from the config {snapshot.name} was trained with in {', '.join(changed)}; "
                f"only {', '.join(RESUMABLE_KEYS)} may change before --resume (start a new run for the rest)."
            )

    loaded = _load_newest(run.whole_checkpoints(), config, device, unchanged)
    if loaded is None and (error := run.no_whole_checkpoint()) is not None:
        raise error
    return loaded


def _load_newest(snapshots: Iterator[tuple[Path, dict[str, Any]]], config: ExperimentConfig, device: torch.device,
                 check: Callable[[Path, dict[str, Any]], None] | None = None):  # fmt: skip
    """:func:`load_snapshot` of the first of ``snapshots`` that loads (each one that does not is
    skipped with a warning; ``check`` sees each manifest first), or ``None``."""
    for snapshot, manifest in snapshots:
        if check is not None:
            check(snapshot, manifest)
        try:
            return load_snapshot(config, snapshot, device)
        except DamagedError as error:
            logger.warning("skipping a damaged checkpoint or model: %s", error)
    return None


# ---------------------------------------------------------------------- eval and inspect
def load_agent(path: str | Path, device: str = "auto"):
    """The agent at ``path``, its config and its VecNormalize statistics (or ``None``).

    ``path`` is a run directory (its final model, else its newest checkpoint that is whole and
    loads), a checkpoint directory, or a ``model.zip`` of either (refused with
    :class:`DamagedError` if it does not match its manifest). Nothing is unpickled.
    """
    run = RunDirectory.find(path)
    config = run.config
    path = Path(path)
    if path == run.root:  # a run: its final agent, else its newest checkpoint that loads
        loaded = _load_newest(run.agent_snapshots(), config, resolve_device(device))
        if loaded is None:
            raise run.no_whole_checkpoint() or ConfigError(
                f"run {str(run.root)!r} has no model or checkpoint that loads; train it first."
            )
        model, statistics, _ = loaded
        return model, config, statistics
    if path.is_file() and path.name != "model.zip":
        raise ConfigError(f"{str(path)!r} is not a model ntm-rl saved; give a run directory, a checkpoint "
                          "directory or a model.zip inside one.")  # fmt: skip
    snapshot = path.parent if path.is_file() else path
    read_manifest(snapshot)  # a snapshot named explicitly is refused when damaged, not replaced
    model, statistics, _ = load_snapshot(config, snapshot, resolve_device(device))
    return model, config, statistics


def load_snapshot(config: ExperimentConfig, snapshot: Path, device: torch.device):
    """The agent, VecNormalize statistics (``None`` without normalisation) and RNG states saved in
    ``snapshot``, read without unpickling; a file that does not load is a :class:`DamagedError`."""
    try:
        model = ALGORITHMS[config.algo].load(snapshot / "model.zip", device=device)
        statistics = load_npz(snapshot / "vecnormalize.npz") if config.env.normalize else None
        rng = load_npz(snapshot / rng_file(distributed.rank()))
    except (ValueError, KeyError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        message = " ".join(str(error).split())  # torch's refusals run over several lines
        raise DamagedError(f"could not load the agent in {snapshot}: {type(error).__name__}: {message[:300]}") from None
    return model, statistics, rng


def _eval_env(config: ExperimentConfig, statistics: dict[str, np.ndarray] | None, device: torch.device) -> VecEnv:
    """One env for evaluation, normalised with the training statistics (not updated, rewards raw)."""
    env = make_env(config, 1, device, training=False)
    if isinstance(env, VecNormalize) and statistics is not None:
        restore_normalizer(env, statistics)
    return env


def evaluate(model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig, statistics: dict[str, np.ndarray] | None,
             episodes: int, deterministic: bool = True, device: torch.device | None = None) -> dict[str, Any]:  # fmt: skip
    """Mean and standard deviation of the return over ``episodes`` episodes of one env."""
    env = _eval_env(config, statistics, device or model.device)
    env.seed(config.seed + 1_000_000)  # episodes training never saw
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=deterministic,
                                       return_episode_rewards=True, warn=False)  # fmt: skip
    env.close()
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": episodes,
            "mean_length": float(np.mean(lengths)), "deterministic": deterministic,
            "returns": [float(r) for r in returns]}  # fmt: skip


def inspect_agent(model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig, statistics: dict[str, np.ndarray] | None,
                  out_dir: str | Path, episodes: int = 3, deterministic: bool = True) -> list[Path]:  # fmt: skip
    """Trace ``episodes`` episodes; write per episode a trace (.npz), two plots (.png), and metrics.json."""
    if not isinstance(model.policy.core, NTMCore):
        raise ConfigError(f"inspect needs an NTM core, this agent's is {config.core!r}; train with core=ntm.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _eval_env(config, statistics, model.device)
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
