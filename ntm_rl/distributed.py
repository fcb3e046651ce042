"""Data-parallel training over ``torch.distributed``: one learner per process, gradients averaged.

A run launched by ``torchrun`` (or ``ntm-rl train --nproc N``, which calls it) has ``WORLD_SIZE``
processes. Each owns ``env.n_envs`` envs on its own device (``cuda:LOCAL_RANK`` with NCCL where
CUDA is used, else the CPU with gloo) and one replica of the policy. What keeps the replicas one
agent:

- the parameters start as rank 0's (:func:`broadcast_module`);
- every minibatch's gradients are averaged over the processes before clipping and the optimiser
  step (:func:`average_gradients`), so that every optimiser state stays identical;
- advantages are normalised with the mean and standard deviation of the global minibatch
  (:func:`global_mean_std`), so that N processes with ``n`` envs each compute the gradients of
  one process with ``N * n`` envs;
- VecNormalize statistics are merged after every rollout (:func:`merge_running_stats`).

Everything crosses between processes as tensors or JSON bytes: nothing is unpickled. Bytes and
statistics travel over gloo on the CPU; gradients and advantages on their own device. Without an
initialised process group every function here is the single-process identity, so agents call
them unconditionally.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from stable_baselines3.common.running_mean_std import RunningMeanStd

from ntm_rl.checks import ConfigError

TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("NTM_RL_DIST_TIMEOUT", "300")))
"""How long a collective waits for a process that stopped answering before the job fails
(``NTM_RL_DIST_TIMEOUT`` seconds; a rank that dies on the same machine is noticed at once)."""


F = TypeVar("F", bound=Callable[..., Any])


class LostProcessError(RuntimeError):
    """A collective failed: another process of the run died or stopped answering."""


def _collective(function: F) -> F:
    """Report a collective that failed (gloo and NCCL raise ``RuntimeError`` when a peer is gone)
    as a :class:`LostProcessError`, in one line that keeps the cause."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (RuntimeError, dist.DistError) as error:
            if not is_distributed() or isinstance(error, LostProcessError | torch.OutOfMemoryError):
                raise
            cause = " ".join(str(error).split())[:300]
            raise LostProcessError(
                f"process {rank()} of {world_size()}: {function.__name__} failed ({cause}); if another process of "
                "the run died, its own message says why."
            ) from None

    return wrapper  # type: ignore[return-value]


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_process_group() -> None:
    """Join the process group ``torchrun`` describes in the environment: gloo for CPU tensors,
    and NCCL for CUDA tensors where this machine has CUDA."""
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; install one that has, or run one process.")
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)


def process_device(device: torch.device) -> torch.device:
    """This process's device for a run on ``device``: ``cuda:LOCAL_RANK`` for CUDA (one GPU per
    process), else ``device``."""
    if device.type != "cuda" or not launched():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"process {local_rank} on this machine has no GPU of its own (there are "
                          f"{torch.cuda.device_count()}); start at most that many processes per machine.")  # fmt: skip
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


@_collective
def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """``data`` of process ``src`` (``None`` elsewhere), on every process."""
    if not is_distributed():
        assert data is not None
        return data
    size = torch.tensor([0 if data is None else len(data)], dtype=torch.int64)
    dist.broadcast(size, src)
    buffer = torch.empty(int(size), dtype=torch.uint8)
    if rank() == src:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src)
    return buffer.numpy().tobytes()


@_collective
def all_gather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in rank order, on every process."""
    if not is_distributed():
        return [data]
    size = torch.tensor([len(data)], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    if data:
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [g[: int(n)].numpy().tobytes() for g, n in zip(gathered, sizes, strict=True)]


def broadcast_json(value: Any, src: int = 0) -> Any:
    """A JSON value of process ``src`` (anything elsewhere), on every process."""
    data = json.dumps(value).encode() if rank() == src else None
    return json.loads(broadcast_bytes(data, src))


def all_gather_json(value: Any) -> list[Any]:
    """Every process's JSON ``value``, in rank order."""
    return [json.loads(data) for data in all_gather_bytes(json.dumps(value).encode())]


@_collective
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process the parameters and buffers of process ``src``'s ``module``."""
    if is_distributed():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src)


@_collective
def average_gradients(parameters: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Average the gradients of ``parameters`` over the processes, in place, with one all-reduce;
    return the mean of ``loss`` over the processes (NaN if any process's is not finite, so that
    every process makes the same decision about the step). A parameter that no process used keeps
    no gradient, as alone, so that the optimiser skips it."""
    if not is_distributed():
        return loss
    parameters = [p for p in parameters if p.requires_grad]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    used = loss.new_tensor([p.grad is not None for p in parameters])
    flat = torch.cat([*(g.reshape(-1) for g in grads), used, loss.detach().reshape(1)])
    dist.all_reduce(flat)
    flat /= world_size()
    averages = flat[: -1 - len(parameters)].split([p.numel() for p in parameters])
    for parameter, average, anyone in zip(parameters, averages, flat[-1 - len(parameters) : -1].tolist(), strict=True):
        parameter.grad = average.view_as(parameter) if anyone > 0 else None
    return flat[-1]


@_collective
def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of every process's ``x`` together."""
    if not is_distributed():
        return x.mean(), x.std()
    values = x.detach().double()
    sums = torch.stack([values.sum(), (values * values).sum(), values.new_tensor(float(x.numel()))])
    dist.all_reduce(sums)
    total, squares, count = sums
    mean = total / count
    variance = (squares - count * mean * mean) / (count - 1).clamp(min=1)
    return mean.to(x.dtype), variance.clamp(min=0).sqrt().to(x.dtype)


@_collective
def mean_over_processes(value: float) -> float:
    """``value`` averaged over the processes."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / world_size()


def running_stats_sums(stats: RunningMeanStd) -> np.ndarray:
    """``stats`` as additive sums ``[count, count * mean..., count * (var + mean**2)...]``."""
    mean, var = np.asarray(stats.mean, np.float64).ravel(), np.asarray(stats.var, np.float64).ravel()
    return np.concatenate([[stats.count], stats.count * mean, stats.count * (var + mean * mean)])


@_collective
def merge_running_stats(stats: list[RunningMeanStd], baselines: list[np.ndarray]) -> list[np.ndarray]:
    """Merge each process's running statistics into the statistics of all processes' samples.

    Every process held the same statistics after the last merge (``baselines``, as
    :func:`running_stats_sums`); each has since added its own samples. The sums of the processes
    count the shared baseline once per process, so it is taken away ``world_size - 1`` times.
    Returns the new baselines.
    """
    if not is_distributed() or not stats:
        return [running_stats_sums(s) for s in stats]
    local = [running_stats_sums(s) for s in stats]
    sizes = [len(x) for x in local]
    flat = torch.from_numpy(np.concatenate(local))
    dist.all_reduce(flat)
    merged = np.split(flat.numpy() - (world_size() - 1) * np.concatenate(baselines), np.cumsum(sizes)[:-1])
    for s, sums in zip(stats, merged, strict=True):
        count = float(sums[0])
        width = (len(sums) - 1) // 2
        mean = sums[1 : 1 + width] / count
        s.count = count
        s.mean = mean.reshape(np.shape(s.mean))
        s.var = np.maximum(sums[1 + width :] / count - mean * mean, 0.0).reshape(np.shape(s.var))
    return merged


@_collective
def leave_process_group() -> None:
    """Leave the process group once every process is done with it: a barrier first, so that no
    process tears its connections down while another still uses them."""
    if is_distributed():
        dist.barrier()
    destroy_process_group()


def destroy_process_group() -> None:
    """Leave the process group at once (after an error: the others may be gone)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
