"""Run directories: their layout, checkpoints written whole and read only when whole, the run lock.

A run directory holds everything one run produced::


    runs/<name>-s<seed>-<time>/
      config.yaml              the resolved config (what --resume trains on)
      lock                     PID and host of the process training the run, while it does
      checkpoints/step_N/      the agent at N env steps:
        model.zip                SB3's zip (loads with RecurrentPPO.load), with ntm_rl.json
        vecnormalize.npz         VecNormalize statistics (normalised envs only)
        rng.npz                  the random generators' states (rng_rank<r>.npz: process r's, in a
                                 distributed run; its manifest holds the number of processes)
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
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ntm_rl.agents import NonFiniteError
from ntm_rl.agents.on_policy import RecurrentOnPolicyAlgorithm
from ntm_rl.config import ConfigError, ExperimentConfig, load_config, to_yaml
from ntm_rl.serialization import normalizer_arrays, npz_bytes, rng_arrays

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
RESUMABLE_KEYS = ("total_timesteps", "logging", "device", "torch_threads", "checkpoint_freq", "keep_checkpoints",
                  "eval")  # fmt: skip
"""Config keys that may change before ``--resume``: none of them changes what the agent learns."""
_CHECKPOINT_NAME = re.compile(r"step_(\d+)")


def rng_file(rank: int) -> str:
    """The name of process ``rank``'s RNG states in a snapshot."""
    return "rng.npz" if rank == 0 else f"rng_rank{rank}.npz"


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
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True  # one host sync


def write_snapshot(directory: Path, files: dict[str, bytes], num_timesteps: int, config: ExperimentConfig,
                   world_size: int = 1) -> None:  # fmt: skip
    """Write ``files`` into ``directory``, then (last) a manifest of their SHA-256 sums, the step
    count, the config and the number of processes that trained it: a snapshot without a whole
    manifest is never read."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for name, data in files.items():
        atomic_write(directory / name, data)
    manifest = {"format": FORMAT, "num_timesteps": num_timesteps, "config": config.to_dict(), "world_size": world_size,
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
        return load_config(self.config_file, import_packages=False)  # see EnvConfig.packages

    def checkpoint_dir(self, steps: int) -> Path:
        return self.checkpoints / f"step_{steps}"

    def checkpoint_steps(self) -> list[int]:
        """Env-step counts of the checkpoints that have a manifest (not yet verified), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        names = (_CHECKPOINT_NAME.fullmatch(p.name) for p in self.checkpoints.iterdir())
        return sorted(int(m[1]) for m in names if m and (self.checkpoints / m[0] / MANIFEST).is_file())

    def save_checkpoint(self, model: RecurrentOnPolicyAlgorithm, config: ExperimentConfig,
                        rng_states: list[bytes] | None = None) -> Path:  # fmt: skip
        """Checkpoint the agent, its normalisation statistics and the RNG states (and ``config``, which
        it was trained with); keep the newest ``config.keep_checkpoints``.

        ``rng_states``: each process's RNG states as NPZ bytes, in rank order, in a distributed run
        (``None``: this process's).

        A model with a non-finite weight or optimiser state is not written
        (:class:`~ntm_rl.agents.NonFiniteError`), so that the checkpoints on disk stay usable.
        """
        steps = model.num_timesteps
        if not is_finite(model):
            raise NonFiniteError(f"the agent's weights or optimiser state are not finite at {steps} env steps; "
                                 "nothing was saved, and the checkpoints on disk are the last finite ones.")  # fmt: skip
        self.checkpoints.mkdir(exist_ok=True)  # a user may have deleted it
        files = self._agent_files(model, rng_states)
        write_snapshot(self.checkpoint_dir(steps), files, steps, config, len(rng_states or [None]))
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
    def _agent_files(model: RecurrentOnPolicyAlgorithm, rng_states: list[bytes] | None = None) -> dict[str, bytes]:
        rng_states = rng_states or [npz_bytes(rng_arrays())]
        files = {"model.zip": model_bytes(model)} | {rng_file(r): data for r, data in enumerate(rng_states)}
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
