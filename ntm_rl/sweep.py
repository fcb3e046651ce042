"""Independent runs of one config side by side: seeds, and values of chosen keys (``ntm-rl sweep``).

Each run is an ordinary ``ntm-rl train`` run in a run directory of its own (``eval``, ``inspect``
and ``--resume`` open it), trained in a worker process; ``workers`` of them at a time, each with
an equal share of this machine's cores for torch (unless the config sets ``torch_threads``). To
spread a sweep over machines, give each machine (a job of a job array) its own seeds: the runs
never talk to each other.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from ntm_rl.config import ConfigError, load_config


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-4"``, ``"0,3,7"`` or a mix (``"0-2,10"``), in order, without repeats."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            span = range(int(first), int(last or first) + 1)
            if not span:
                raise ValueError
            seeds += [seed for seed in span if seed not in seeds]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not a list of seeds; write them as 0-4, 0,3,7 or 0-2,10.") from None
    return seeds


def split_values(text: str) -> list[str]:
    """``"a,b,[1,2]"`` -> ``["a", "b", "[1,2]"]``: commas inside brackets, braces or quotes stay."""
    values, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:index])
            start = index + 1
    return [*values, text[start:]]


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """Every combination of the overrides' values: ``["core=ntm,gru", "seed..."]`` -> one list of
    ``key=value`` overrides per combination (an override with one value is in all of them)."""
    choices = []
    for override in overrides:
        key, sign, value = override.partition("=")
        if not sign or not key:
            raise ConfigError(f"override {override!r} is not key=value (or key=a,b,c to train each value).")
        choices.append([f"{key}={v}" for v in split_values(value)])
    return [list(cell) for cell in itertools.product(*choices)]


def run_sweep(config_path: str | Path, grid: list[list[str]], seeds: list[int], workers: int = 1,
              runs_root: str | Path = "runs", report: Callable[[str], None] = print,
              gym_packages: list[str] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """Train ``config_path`` once per combination in ``grid`` and seed, ``workers`` runs at a time.

    Every run's config is checked before the first starts. A run that fails is reported and the
    others go on. Writes ``<runs_root>/sweep-<name>-<time>.csv`` (one row per run) and reports, per
    combination, the mean and standard deviation of the final evaluation over the seeds.

    :param gym_packages: packages each worker imports first (``--gym-packages``: they register envs).
    :return: one dict per run: ``overrides``, ``seed``, ``run``, ``mean_return``, ``error``.
    """
    cells = [(overrides, seed) for overrides in grid for seed in seeds]
    name = ""
    for overrides, seed in cells:  # mistakes show before hours of other runs
        name = load_config(config_path, [*overrides, f"seed={seed}"]).name
    threads = max(1, (os.cpu_count() or 1) // workers)
    report(f"sweep: {len(cells)} runs of {config_path}, {workers} at a time")
    results, started = [], time.perf_counter()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {}
        for overrides, seed in cells:
            arguments = (str(config_path), [*overrides, f"seed={seed}"], str(runs_root), threads, list(gym_packages))
            futures[pool.submit(_train_one, *arguments)] = (overrides, seed)
        for future in as_completed(futures):
            overrides, seed = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # a crash in one run must not lose the others
                outcome = {"error": f"{type(error).__name__}: {error}"}
            results.append({"overrides": " ".join(overrides), "seed": seed, "run": None, "mean_return": None,
                            "error": None} | outcome)  # fmt: skip
            what = f"seed {seed}" + (f" {' '.join(overrides)}" if overrides else "")
            done = f"[{len(results)}/{len(cells)}, {time.perf_counter() - started:.0f} s]"
            if results[-1]["error"] is None:
                report(f"{done} {what}: mean return {results[-1]['mean_return']:.4g} ({results[-1]['run']})")
            else:
                report(f"{done} {what}: failed: {results[-1]['error']}")
    results.sort(key=lambda r: (r["overrides"], r["seed"]))
    Path(runs_root).mkdir(parents=True, exist_ok=True)
    table = Path(runs_root) / f"sweep-{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}.csv"
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["overrides", "seed", "run", "mean_return", "error"])
        writer.writeheader()
        writer.writerows({key: r[key] for key in writer.fieldnames} for r in results)
    for overrides in grid:
        returns = [r["mean_return"] for r in results if r["overrides"] == " ".join(overrides) and r["error"] is None]
        label = " ".join(overrides) or name
        if returns:
            report(f"{label}: mean return {np.mean(returns):.4g} +- {np.std(returns):.3g} over {len(returns)} seed(s)")
    report(f"wrote {table}")
    return results


def _train_one(config_path: str, overrides: list[str], runs_root: str, threads: int,
               gym_packages: list[str]) -> dict[str, Any]:  # fmt: skip
    """One run of the sweep, in a worker process (a fresh interpreter: it imports the env packages itself)."""
    from ntm_rl.agents import NonFiniteError
    from ntm_rl.experiment import train
    from ntm_rl.registry import import_gym_packages

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import_gym_packages(gym_packages, "--gym-packages")
    config = load_config(config_path, overrides)
    extra = [] if config.torch_threads is not None else [f"torch_threads={threads}"]
    config = load_config(config_path, [*overrides, *extra, "logging.progress_bar=false"])
    try:
        run, result = train(config, runs_root=runs_root)
    except (ConfigError, NonFiniteError, OSError) as error:
        return {"error": str(error)}
    return {"run": str(run.root), "mean_return": result["mean_return"]}
