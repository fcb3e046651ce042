"""PNG plots of an inspected episode, drawn with matplotlib's object API (no display needed).

:func:`plot_weightings` draws, over time, the observation, then each read and write head's
weighting over the memory rows (as the NTM paper's figures do), with rewarded steps marked;
:func:`plot_heads` draws the addressing parameters that produced those weightings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ntm_rl.inspect.trace import EpisodeTrace


def _mark_rewards(axis, rewards: np.ndarray) -> None:
    for step in np.flatnonzero(rewards):
        axis.axvline(step, color="tab:red" if rewards[step] < 0 else "tab:green", linewidth=0.8, alpha=0.7)


def plot_weightings(trace: EpisodeTrace, path: str | Path, title: str = "") -> Path:
    """Heatmaps of the observation and every head's weighting over the episode; returns ``path``."""
    vector_obs = trace.observations.ndim == 2  # images are not drawn
    heads = [("read", i, w) for i, w in enumerate(trace.read_weights.transpose(1, 2, 0))]
    heads += [("write", i, w) for i, w in enumerate(trace.write_weights.transpose(1, 2, 0))]
    panels = len(heads) + int(vector_obs)
    steps = len(trace.rewards)
    figure = Figure(figsize=(max(6.0, min(0.12 * steps, 18.0)), 1.0 + 2.0 * panels), layout="constrained")
    axes = np.atleast_1d(figure.subplots(panels, 1, sharex=True))
    if vector_obs:
        axes[0].imshow(trace.observations.T, aspect="auto", interpolation="nearest", cmap="Greys")
        axes[0].set_ylabel("observation")
    for axis, (kind, index, weights) in zip(axes[int(vector_obs) :], heads, strict=True):
        image = axis.imshow(weights, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
        axis.set_ylabel(f"{kind} head {index}\nmemory row")
        figure.colorbar(image, ax=axis, pad=0.01, fraction=0.02)
    for axis in axes:
        _mark_rewards(axis, trace.rewards)
    axes[-1].set_xlabel("step (vertical lines: rewarded steps, green > 0, red < 0)")
    figure.suptitle(title or f"return {trace.rewards.sum():g} over {steps} steps")
    figure.savefig(path, dpi=100)
    return Path(path)


def plot_heads(trace: EpisodeTrace, path: str | Path, title: str = "") -> Path:
    """Gate, key strength, sharpening and mean shift of every head, erase and add of the write heads."""
    names = [f"read {i}" for i in range(trace.num_read_heads)]
    names += [f"write {i}" for i in range(trace.gate.shape[1] - trace.num_read_heads)]
    offsets = np.arange(trace.shift.shape[2]) - trace.shift.shape[2] // 2
    series = [
        ("gate g (1: content)", trace.gate, names),
        ("key strength beta", trace.strength, names),
        ("sharpening gamma", trace.sharpening, names),
        ("mean shift", trace.shift @ offsets, names),
        ("mean erase", trace.erase.mean(-1), names[trace.num_read_heads :]),
        ("mean |add|", np.abs(trace.add).mean(-1), names[trace.num_read_heads :]),
    ]
    figure = Figure(figsize=(10.0, 2.0 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True)
    for axis, (label, values, legend) in zip(axes, series, strict=True):
        for column, name in enumerate(legend):
            axis.plot(values[:, column], label=name, linewidth=1.0)
        axis.set_ylabel(label)
        axis.legend(loc="upper right", fontsize="small")
        _mark_rewards(axis, trace.rewards)
    axes[-1].set_xlabel("step")
    figure.suptitle(title or "addressing parameters")
    figure.savefig(path, dpi=100)
    return Path(path)
