"""How a memory core uses its memory, from read and write weightings over time.

Every function takes numpy arrays laid out ``[T, B, heads, N]`` (time, env, head, memory row)
and ``episode_starts[T, B]`` (true where an env's memory was reset before that step), so the same
numbers come from an inspected episode (``B = 1``) and from a training rollout.
"""

from __future__ import annotations

import numpy as np

WRITTEN_MASS = 0.5
"""A row counts as written once the write weightings put a total of this much on it in an episode."""

RETRIEVAL_OVERLAP = 0.5
"""A read retrieves a write when this share of its weighting falls on rows the write weighting covers."""


def weighting_entropy(weights: np.ndarray) -> float:
    """Mean entropy (nats) of the weightings ``[..., N]``: 0 is one row, ``log N`` is uniform."""
    return float(-(weights * np.log(np.clip(weights, 1e-12, None))).sum(-1).mean())


def focus(weights: np.ndarray) -> float:
    """Mean largest weight of the weightings ``[..., N]``: 1 when each step addresses one row."""
    return float(weights.max(-1).mean())


def _segments(episode_starts: np.ndarray):
    """``(env, start, stop)`` of every stretch of one episode inside the recorded window."""
    steps, envs = episode_starts.shape
    for env in range(envs):
        bounds = [0, *np.flatnonzero(episode_starts[1:, env]) + 1, steps]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            if stop > start:
                yield env, start, stop


def memory_utilisation(write_weights: np.ndarray, episode_starts: np.ndarray) -> float:
    """Mean share of memory rows written (total write mass >= ``WRITTEN_MASS``) per episode."""
    shares = [
        float((write_weights[start:stop, env].sum(axis=(0, 1)) >= WRITTEN_MASS).mean())
        for env, start, stop in _segments(episode_starts)
    ]
    return float(np.mean(shares))


def write_read_lags(read_weights: np.ndarray, write_weights: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
    """For every read that retrieves an earlier write of the same episode, steps since that write.

    The retrieved write is the most recent earlier step whose write weighting overlaps the read's
    (``sum(min(r, w)) >= RETRIEVAL_OVERLAP``, best write head); a step writes after it reads, so a
    lag is at least 1. Reads with no such write are left out.
    """
    lags = []
    for env, start, stop in _segments(episode_starts):
        reads, writes = read_weights[start:stop, env], write_weights[start:stop, env]  # [L, R, N], [L, W, N]
        for t in range(1, stop - start):
            overlap = np.minimum(reads[t][None, :, None, :], writes[:t, None, :, :]).sum(-1).max(-1)  # [t, R]
            for head in range(reads.shape[1]):
                hits = np.flatnonzero(overlap[:, head] >= RETRIEVAL_OVERLAP)
                if hits.size:
                    lags.append(t - hits[-1])
    return np.asarray(lags, dtype=np.int64)


def memory_metrics(read_weights: np.ndarray, write_weights: np.ndarray, episode_starts: np.ndarray) -> dict[str, float]:
    """The metrics ntm-rl logs: entropies, write focus, utilisation, write-to-read lag.

    :param read_weights: ``[T, B, R, N]``.
    :param write_weights: ``[T, B, W, N]``.
    :param episode_starts: ``[T, B]``.
    :return: ``read_entropy`` and ``write_entropy`` (nats), ``write_focus``, ``utilisation``,
        ``retrieved_reads`` (share of reads after the first step that retrieve a write) and
        ``mean_lag`` (steps; NaN when no read retrieves a write).
    """
    lags = write_read_lags(read_weights, write_weights, episode_starts)
    reads_after_first = read_weights.shape[2] * sum(stop - start - 1 for _, start, stop in _segments(episode_starts))
    return {
        "read_entropy": weighting_entropy(read_weights),
        "write_entropy": weighting_entropy(write_weights),
        "write_focus": focus(write_weights),
        "utilisation": memory_utilisation(write_weights, episode_starts),
        "retrieved_reads": lags.size / max(reads_after_first, 1),
        "mean_lag": float(lags.mean()) if lags.size else float("nan"),
    }
