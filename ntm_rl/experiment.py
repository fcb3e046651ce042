"""Experiments from configs: run directories, training with checkpoints and resume, evaluation, inspection.

A run directory holds everything one run produced::

    runs/<name>-s<seed>-<time>/
      config.yaml              the resolved config (what --resume trains on)
      lock                     PID and host of the process training the run, while it does
      checkpoints/step_N/      the agent at N env steps:
        model.zip                SB3's zip (loads with RecurrentPPO.load), with ntm_rl.json
        vecnormalize.npz         VecNormalize statistics (normalised envs only)
        rng.npz                  the random generators' states
        manifest.json            written last: N, the config trained with, each file's SHA-256
      model.zip, vecnormalize.npz, rng.npz, manifest.json   the final agent, laid out the same way
      monitor.csv, progress.csv (resumed attempts: resumed-N[-k].monitor.csv, progress-resumed-N[-k].csv)
      tensorboard/, wandb/, eval.json, plots/

Nothing here unpickles: models load through :mod:`ntm_rl.serialization`'s description of their
pickled entries, the rest is NPZ read without pickles, and JSON. A snapshot is read only once
every file matches its manifest, which is written last: a save a kill interrupted, a truncated or
altered file, is skipped with a warning, and resuming, ``eval`` and ``inspect`` take the newest
whole one. A checkpoint is written only when the agent's weights and optimiser state are finite.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import math
import os
import pickle  # only for its exception type: nothing here unpickles
import re
import shutil
import socket
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
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize

from ntm_rl.agents import NonFiniteError, RecurrentA2C, RecurrentPPO
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
from ntm_rl.serialization import load_npz, normalizer_arrays, npz_bytes, restore_normalizer, restore_rng, rng_arrays
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
        f"unknown env id {env_id!r}{did_you_mean(env_id, gym.registry)}; `ntm-rl list` shows the ntm-rl ids, "
        "and --gym-packages PKG imports a package that registers others."
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
    with warnings.catch_warnings():  # the batched env's own episode records are the same numbers
        warnings.filterwarnings("ignore", message="The environment is already wrapped with a `Monitor`")
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
MANIFEST = "manifest.json"
FORMAT = 1
RESUMABLE_KEYS = ("total_timesteps", "logging", "device", "torch_threads", "checkpoint_freq", "keep_checkpoints",
                  "eval")  # fmt: skip
"""Config keys that may change before ``--resume``: none of them changes what the agent learns."""
_CHECKPOINT_NAME = re.compile(r"step_(\d+)")


class DamagedError(ConfigError):
    """A checkpoint or saved model whose files do not match its manifest (or that has none)."""


def model_bytes(model: RecurrentOnPolicyAlgorithm) -> bytes:
    """The agent as its zip, in memory (so that it can be written atomically)."""
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


def is_finite(model: RecurrentOnPolicyAlgorithm) -> bool:
    """Whether every weight and every tensor of the optimiser's state is finite."""
    tensors = [*model.policy.state_dict().values()]
    for state in model.policy.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def write_snapshot(directory: Path, files: dict[str, bytes], num_timesteps: int, config: ExperimentConfig) -> None:
    """Write ``files`` into ``directory``, then (last) a manifest of their SHA-256 sums, the step
    count and the config: a snapshot without a whole manifest is never read."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for name, data in files.items():
        atomic_write(directory / name, data)
    manifest = {"format": FORMAT, "num_timesteps": num_timesteps, "config": config.to_dict(),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}  # fmt: skip
    atomic_write(directory / MANIFEST, json.dumps(manifest, indent=1).encode())


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the snapshot in ``directory``, once every file it lists has its recorded
    SHA-256 sum; :class:`DamagedError` naming what is wrong otherwise."""
    try:
        manifest = json.loads((directory / MANIFEST).read_bytes())
        files, steps = manifest["files"], manifest["num_timesteps"]
        if not isinstance(files, dict) or not isinstance(steps, int) or not isinstance(manifest["config"], dict):
            raise TypeError("fields of the wrong type")
    except FileNotFoundError:
        raise DamagedError(f"{directory} has no {MANIFEST} (a save that did not finish)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedError(f"{directory / MANIFEST} is damaged ({type(error).__name__}: {error})") from None
    for name, digest in files.items():
        if Path(name).name != name:
            raise DamagedError(f"{directory / MANIFEST} lists {name!r}, which is not a file name")
        try:
            actual = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        except OSError as error:
            raise DamagedError(f"{directory / name} cannot be read ({error.strerror or error})") from None
        if actual != digest:
            raise DamagedError(f"{directory / name} does not match its checksum (changed or damaged)")
    return manifest


class RunDirectory:
    """One run's directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config_file = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.monitor_file = self.root / "monitor.csv"
        self.eval_file = self.root / "eval.json"
        self.plots = self.root / "plots"
        self.lock_file = self.root / "lock"
        self.final_model = self.root / "model.zip"

    @classmethod
    def create(cls, config: ExperimentConfig, runs_root: str | Path = "runs") -> RunDirectory:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run = cls(Path(runs_root) / f"{config.name}-s{config.seed}-{stamp}")
        run.checkpoints.mkdir(parents=True)
        run.config_file.write_text(to_yaml(config))
        return run

    @classmethod
    def find(cls, path: str | Path) -> RunDirectory:
        """The run directory ``path`` is, or that holds ``path`` (a model zip or a checkpoint)."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{str(path)!r} does not exist; give a run directory or a model .zip inside one.")
        for candidate in [path, *path.parents][:4]:  # the run, or its model, checkpoint or checkpoint's model
            if (candidate / "config.yaml").is_file():
                return cls(candidate)
        raise ConfigError(f"no config.yaml in or above {str(path)!r}; give a run directory made by `ntm-rl train`.")

    @property
    def config(self) -> ExperimentConfig:
        return load_config(self.config_file)

    def checkpoint_dir(self, steps: int) -> Path:
        return self.checkpoints / f"step_{steps}"

    def checkpoint_steps(self) -> list[int]:
        """Env-step counts of the checkpoints that have a manifest (not yet verified), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        names = (_CHECKPOINT_NAME.fullmatch(p.name) for p in self.checkpoints.iterdir())
        return sorted(int(m[1]) for m in names if m and (self.checkpoints / m[0] / MANIFEST).is_file())

    def save_checkpoint(self, model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig) -> Path:
        """Checkpoint the agent, its normalisation statistics and the RNG states (and ``config``, which
        it was trained with); keep the newest ``config.keep_checkpoints``.

        A model with a non-finite weight or optimiser state is not written
        (:class:`~ntm_rl.agents.NonFiniteError`), so that the checkpoints on disk stay usable.
        """
        steps = model.num_timesteps
        if not is_finite(model):
            raise NonFiniteError(f"the agent's weights or optimiser state are not finite at {steps} env steps; "
                                 "nothing was saved, and the checkpoints on disk are the last finite ones.")  # fmt: skip
        self.checkpoints.mkdir(exist_ok=True)  # a user may have deleted it
        write_snapshot(self.checkpoint_dir(steps), self._agent_files(model), steps, config)
        for old in self.checkpoint_steps()[: -config.keep_checkpoints]:
            shutil.rmtree(self.checkpoint_dir(old))
        for partial in self.checkpoints.glob("step_*"):  # saves a kill interrupted
            if partial.is_dir() and not (partial / MANIFEST).is_file():
                shutil.rmtree(partial)
        return self.checkpoint_dir(steps) / "model.zip"

    def save_final(self, model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig) -> None:
        """The final agent at the run's root: ``model.zip`` (and ``vecnormalize.npz``), then the manifest."""
        write_snapshot(self.root, self._agent_files(model), model.num_timesteps, config)

    @staticmethod
    def _agent_files(model: RecurrentOnPolicyAlgorithm) -> dict[str, bytes]:
        files = {"model.zip": model_bytes(model), "rng.npz": npz_bytes(rng_arrays())}
        normalizer = model.get_vec_normalize_env()
        if normalizer is not None:
            files["vecnormalize.npz"] = npz_bytes(normalizer_arrays(normalizer))
        return files

    def whole_checkpoints(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The checkpoints whose files match their manifests, newest first, with their manifests;
        each damaged one is skipped with a warning."""
        old_format = sorted(self.checkpoints.glob("step_*.pkl")) if self.checkpoints.is_dir() else []
        if old_format:
            logger.warning("%s: %d checkpoint(s) in the pickle format of earlier ntm-rl versions are ignored "
                           "(loading them could run code).", self.checkpoints, len(old_format))  # fmt: skip
        for step in reversed(self.checkpoint_steps()):
            try:
                manifest = read_manifest(self.checkpoint_dir(step))
            except DamagedError as error:
                logger.warning("skipping a damaged checkpoint: %s", error)
                continue
            yield self.checkpoint_dir(step), manifest

    def no_whole_checkpoint(self) -> DamagedError | None:
        """The error to raise when no checkpoint could be used: ``None`` if the run never saved one."""
        if self.checkpoints.is_dir() and any(_CHECKPOINT_NAME.fullmatch(p.name) for p in self.checkpoints.iterdir()):
            return DamagedError(f"{self.checkpoints} holds no whole checkpoint (see the warnings above); "
                                "train the run again from its config.yaml.")  # fmt: skip
        return None

    def agent_snapshots(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The final agent's snapshot (the run's root) if it is whole, then the whole checkpoints,
        newest first (as :meth:`whole_checkpoints`)."""
        if (self.root / MANIFEST).exists() or self.final_model.exists():
            try:
                yield self.root, read_manifest(self.root)
            except DamagedError as error:
                logger.warning("the final model is damaged, using the newest whole checkpoint: %s", error)
        yield from self.whole_checkpoints()


def changed_keys(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


class RunLock:
    """The run's lock file, holding the PID and host of the one process that trains it."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> RunLock:
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not (holder.get("host") == owner["host"] and not _alive(holder.get("pid"))):
                    raise ConfigError(
                        f"{self.path.parent} is being trained by process {holder.get('pid')} on "
                        f"{holder.get('host')} (lock file {self.path}); wait for it to end, or delete the lock "
                        "file if that process is gone."
                    ) from None
                logger.warning("removing the stale lock of process %s (no longer running)",
                               None if holder is None else holder.get("pid"))  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                json.dump(owner, file)
            return self
        raise ConfigError(f"could not take the lock {self.path}; another process keeps taking it.")

    def __exit__(self, *exc_info: object) -> None:
        self.path.unlink(missing_ok=True)

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # half written or unreadable: treated as stale
        return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    device = resolve_device(device or config.device)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    if resume is None:
        run = RunDirectory.create(config, runs_root)
    logger.info("run directory: %s", run.root)
    with RunLock(run.lock_file):
        return run, _train_in(run, config, resume is not None, device, wandb)


def _train_in(run: RunDirectory, config: ExperimentConfig, resuming: bool, device: torch.device,
              wandb: bool | None) -> dict[str, Any]:  # fmt: skip
    """:func:`train`, once the run directory is known and locked."""
    resumed = None
    if resuming:
        for leftover in [*run.root.glob("*.tmp"), *run.checkpoints.glob("*/*.tmp")]:  # writes a kill interrupted
            leftover.unlink()
        resumed = _newest_loadable_checkpoint(run, config, device)
        if resumed is None:
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
    try:
        env = make_env(config, config.env.n_envs, device, monitor_file=monitor_file)
        if resumed is not None:
            model, statistics, rng = resumed
            if isinstance(env, VecNormalize):  # the statistics the run had, in the fresh envs' VecNormalize
                restore_normalizer(env, statistics)
            model.set_env(env)
            restore_rng(rng)
            env.seed(config.seed + resumed_at)  # fresh episodes, not a replay of the first ones
            logger.info("resuming %s at %d env steps", run.root, resumed_at)
        else:
            model = make_model(config, env, device)
    except BaseException:  # a bad setting, or anything else before training starts
        if not resuming:  # nothing was trained: leave no empty run behind
            shutil.rmtree(run.root)
        raise

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

    callbacks = [PeriodicSave(config.checkpoint_freq, lambda: run.save_checkpoint(model, config))]
    if isinstance(env, TorchVecEnvToSB3):
        callbacks.append(DeviceEnvMonitor(str(monitor_file)))
    if config.logging.memory_metrics_freq:
        callbacks.append(MemoryMetrics(config.logging.memory_metrics_freq))
    if config.logging.progress_bar:
        callbacks.append(ProgressBar(config.total_timesteps))
    try:
        model.learn(max(config.total_timesteps - model.num_timesteps, 0), callback=callbacks,
                    log_interval=config.logging.log_interval, reset_num_timesteps=not resumed_at)  # fmt: skip
        run.save_checkpoint(model, config)
        run.save_final(model, config)

        statistics = None if model.get_vec_normalize_env() is None else normalizer_arrays(model.get_vec_normalize_env())
        result = evaluate(model, config, statistics, config.eval.episodes, config.eval.deterministic, device)
        result |= {"model": str(run.final_model), "num_timesteps": model.num_timesteps, "resumed_at": resumed_at}
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


def _newest_loadable_checkpoint(run: RunDirectory, config: ExperimentConfig, device: torch.device):
    """What :func:`load_snapshot` returns for the newest checkpoint that is whole and loads, or
    ``None`` if the run never saved one. A config edited since the checkpoint in more than
    :data:`RESUMABLE_KEYS` is refused."""

    def unchanged(snapshot: Path, manifest: dict[str, Any]) -> None:
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
    if path.is_file():
        if path.name != "model.zip":
            raise ConfigError(f"{str(path)!r} is not a model ntm-rl saved; give a run directory, a checkpoint "
                              "directory or a model.zip inside one.")  # fmt: skip
        snapshot = path.parent
        read_manifest(snapshot)
    elif path != run.root:
        snapshot = path
        read_manifest(snapshot)
    else:  # a run: its final agent, else its newest checkpoint that loads
        loaded = _load_newest(run.agent_snapshots(), config, resolve_device(device))
        if loaded is None:
            raise run.no_whole_checkpoint() or ConfigError(
                f"run {str(run.root)!r} has no model or checkpoint that loads; train it first."
            )
        model, statistics, _ = loaded
        return model, config, statistics
    model, statistics, _ = load_snapshot(config, snapshot, resolve_device(device))
    return model, config, statistics


def load_snapshot(config: ExperimentConfig, snapshot: Path, device: torch.device):
    """The agent, VecNormalize statistics (``None`` without normalisation) and RNG states saved in
    ``snapshot``, read without unpickling; a file that does not load is a :class:`DamagedError`."""
    try:
        model = ALGORITHMS[config.algo].load(snapshot / "model.zip", device=device)
        statistics = load_npz(snapshot / "vecnormalize.npz") if config.env.normalize else None
        rng = load_npz(snapshot / "rng.npz")
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
