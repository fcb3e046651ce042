"""SB3 callbacks that ntm-rl's training runs use; each works with any SB3 on-policy agent of ours.

- :class:`ProgressBar`: steps, steps/s, mean episode return and time left, on one line.
- :class:`PeriodicSave`: calls a save function every ``save_freq`` env steps, between rollouts.
- :class:`DeviceEnvMonitor`: SB3's monitor CSV for an env that lives on the device, which the
  rollout steps directly (so no ``VecMonitor`` sees its episodes).
- :class:`GatherEpisodes`: every process's episodes, in rank 0's monitor files and episode
  statistics, in a distributed run.
- :class:`MemoryMetrics`: memory-use metrics of an NTM policy, from the states a rollout computes
  anyway (no extra forward pass).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import ResultsWriter

from ntm_rl import distributed
from ntm_rl.cores import NTMCore
from ntm_rl.inspect.metrics import memory_metrics
from ntm_rl.vec import TorchVecEnvToSB3


class ProgressBar(BaseCallback):
    """A progress line on ``stream``, redrawn in place on a terminal, else printed every tenth of the run.

    :param total_timesteps: the env steps the run will reach (counted from 0, also when resumed).
    """

    reads_sb3_step_locals = False  # see ntm_rl.agents.on_policy: no numpy copies made for it

    def __init__(self, total_timesteps: int, stream: TextIO | None = None, width: int = 30):
        super().__init__()
        self.total, self.stream, self.width = total_timesteps, stream or sys.stderr, width
        self.interactive = self.stream.isatty()
        self._start_time = self._start_steps = 0.0
        self._next_print = self._printed_at = 0

    def _on_training_start(self) -> None:
        self._start_time, self._start_steps = time.perf_counter(), self.num_timesteps
        self._next_print = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.interactive or self.num_timesteps >= self._next_print:
            self._next_print += self.total // 10 or 1
            self._draw(end="\r" if self.interactive else "\n")

    def _on_training_end(self) -> None:
        if self.interactive or self._printed_at != self.num_timesteps:  # end on a line with the final count
            self._draw(end="\n")

    def _draw(self, end: str) -> None:
        done = min(self.num_timesteps / self.total, 1.0)
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        rate = (self.num_timesteps - self._start_steps) / elapsed
        left = (self.total - self.num_timesteps) / rate if rate > 0 else float("inf")
        episodes = self.model.ep_info_buffer
        mean_return = f"{np.mean([e['r'] for e in episodes]):.3g}" if episodes else "-"
        bar = "#" * int(done * self.width) + "." * (self.width - int(done * self.width))
        clear = "\x1b[K" if self.interactive else ""  # erase what a longer previous line left
        self.stream.write(f"[{bar}] {self.num_timesteps:,}/{self.total:,} steps | {rate:,.0f} steps/s | "
                          f"mean return {mean_return} | {max(left, 0):.0f} s left{clear}{end}")  # fmt: skip
        self.stream.flush()
        self._printed_at = self.num_timesteps


class PeriodicSave(BaseCallback):
    """Calls ``save()`` at the first rollout start after every ``save_freq`` env steps.

    Saving between rollouts (after an update, before the next collection) keeps a checkpoint's
    timestep count equal to the steps its parameters were trained on.
    """

    reads_sb3_step_locals = False  # see ntm_rl.agents.on_policy: no numpy copies made for it

    def __init__(self, save_freq: int, save: Callable[[], None]):
        super().__init__()
        self.save_freq, self.save = save_freq, save
        self._next_save = 0

    def _on_training_start(self) -> None:
        self._next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next_save:
            self.save()
            self._next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        return True


class DeviceEnvMonitor(BaseCallback):
    """Writes the episodes a device env finishes to ``filename``, in ``VecMonitor``'s CSV format.

    A ``TorchVecEnvToSB3`` env is stepped as tensors without its wrappers; the agent keeps each
    rollout's finished episodes as ``model.rollout_episodes``.
    """

    reads_sb3_step_locals = False  # see ntm_rl.agents.on_policy: no numpy copies made for it

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    def _on_training_start(self) -> None:
        self._start = time.time()
        self._writer = ResultsWriter(self.filename, header={"t_start": self._start, "env_id": "ntm-rl device env"})

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        now = round(time.time() - self._start, 6)
        for episode in self.model.rollout_episodes:
            self._writer.write_row({"r": episode["r"], "l": episode["l"], "t": now})

    def _on_training_end(self) -> None:
        self._writer.close()


class GatherEpisodes(BaseCallback):
    """In a distributed run, brings the episodes every process finished in a rollout to rank 0.

    Every process runs it (the gathering is a collective at each rollout's end). Rank 0 writes
    process ``r``'s episodes beside its own monitor file ``monitor_file`` (``x.monitor.csv``), as
    ``x.rank<r>.monitor.csv``, which SB3's ``load_results`` reads with the rest, and counts them in
    its episode statistics, so that ``rollout/ep_rew_mean`` and the progress line are over every
    process's episodes.

    :param monitor_file: rank 0's monitor file; ``None`` on the other processes.
    """

    reads_sb3_step_locals = False  # a device env's episodes come from the agent, an SB3 env's infos always exist

    def __init__(self, monitor_file: Path | None):
        super().__init__()
        self.monitor_file = monitor_file
        self._episodes: list[dict[str, float]] = []
        self._writers: dict[int, ResultsWriter] = {}

    def _on_training_start(self) -> None:
        self._start = time.time()
        self._device_env = isinstance(self.model.get_env(), TorchVecEnvToSB3)
        if self.monitor_file is not None:
            stem = self.monitor_file.name.removesuffix("monitor.csv")
            self._writers = {
                r: ResultsWriter(
                    str(self.monitor_file.with_name(f"{stem}rank{r}.monitor.csv")),
                    header={"t_start": self._start, "env_id": f"process {r}"},
                )  # fmt: skip
                for r in range(1, distributed.world_size())
            }

    def _on_step(self) -> bool:
        if not self._device_env:  # VecMonitor put each finished episode in its info
            self._episodes += [{"r": i["episode"]["r"], "l": i["episode"]["l"]} for i in self.locals["infos"]
                               if "episode" in i]  # fmt: skip
        return True

    def _on_rollout_end(self) -> None:
        local = self.model.rollout_episodes if self._device_env else self._episodes
        gathered = distributed.all_gather_json([[float(e["r"]), int(e["l"])] for e in local])
        self._episodes = []
        now = round(time.time() - self._start, 6)
        for rank, writer in self._writers.items():
            episodes = [{"r": r, "l": n} for r, n in gathered[rank]]
            for episode in episodes:
                writer.write_row(episode | {"t": now})
            self.model.ep_info_buffer.extend(episodes)

    def _on_training_end(self) -> None:
        for writer in self._writers.values():
            writer.close()


class MemoryMetrics(BaseCallback):
    """Every ``freq`` env steps, records ``memory/*`` metrics of one rollout (NTM policies only).

    The weightings come from the recurrent states the rollout computes anyway (an NTM state holds
    the step's read and write weightings), for the first ``max_envs`` envs; see
    :func:`~ntm_rl.inspect.metrics.memory_metrics` for what each metric means.
    """

    reads_sb3_step_locals = False  # see ntm_rl.agents.on_policy: no numpy copies made for it

    def __init__(self, freq: int, max_envs: int = 4):
        super().__init__()
        self.freq, self.max_envs = freq, max_envs
        self._next, self._active = 0, False
        self._weights: list[torch.Tensor] = []
        self._episode_starts: list[torch.Tensor] = []

    def _on_training_start(self) -> None:
        self._core = self.model.policy.core if isinstance(self.model.policy.core, NTMCore) else None
        self._next = self.num_timesteps

    def _on_rollout_start(self) -> None:
        self._active = self._core is not None and self.num_timesteps >= self._next
        if self._active:
            self._next = self.num_timesteps + self.freq
        self._weights.clear()
        self._episode_starts.clear()

    def _on_step(self) -> bool:
        if self._active:
            step = self.model.last_step  # the state holds the step's read and write weightings
            self._weights.append(step.state.actor.weights[: self.max_envs])
            self._episode_starts.append(step.episode_starts[: self.max_envs])
        return True

    def _on_rollout_end(self) -> None:
        if not self._active or not self._weights:
            return
        weights = torch.stack(self._weights).cpu().numpy()  # [T, B, R + W, N]: one host copy
        episode_starts = torch.stack(self._episode_starts).cpu().numpy()
        reads = self._core.num_read_heads
        for name, value in memory_metrics(weights[:, :, :reads], weights[:, :, reads:], episode_starts).items():
            if np.isfinite(value):
                self.logger.record(f"memory/{name}", value)
        self._active = False
