"""What the learning benchmarks share: learning curves, normalised evaluation, and cells run in
parallel processes with their results kept, so that an interrupted run resumes where it stopped.

A *cell* is one training run (a task, an agent or setting, a seed) described by a dict of plain
values; ``run_cells`` runs the cells not yet in a JSON-lines store, ``workers`` at a time, each in a
process of one torch thread, and appends each result as it finishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv


class LearningCurve(BaseCallback):
    """After every rollout: env steps, seconds of training so far, and the mean return of the
    last 100 training episodes (SB3's ``ep_info_buffer``)."""

    def __init__(self):
        super().__init__()
        self.points: list[tuple[int, float, float]] = []
        self.start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        if len(self.model.ep_info_buffer) > 0:
            mean = float(np.mean([episode["r"] for episode in self.model.ep_info_buffer]))
            self.points.append((self.num_timesteps, round(time.perf_counter() - self.start, 2), mean))

    def _on_step(self) -> bool:
        return True


def evaluate(model, env: VecEnv, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` deterministic episodes (the recurrent state threaded through)."""
    env.seed(seed)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, warn=False)
    return float(mean)


def normalised(value: float, optimal: float, random: float) -> float:
    """A return on the scale where random actions score 0 and the optimum 1."""
    return (value - random) / (optimal - random)


def steps_to(curve: list, threshold: float, normalise: Callable[[float], float] = float) -> int | None:
    """Env steps at the first curve point whose (normalised) return reaches ``threshold``."""
    return next((int(point[0]) for point in curve if normalise(point[-1]) >= threshold), None)


def key_of(cell: dict, fields: Iterable[str]) -> tuple:
    return tuple(json.dumps(cell[field], sort_keys=True) for field in fields)


def _run_one(fn: Callable[..., dict], cell: dict) -> dict:
    torch.set_num_threads(1)
    return cell | fn(**cell)


def run_cells(
    fn: Callable[..., dict],
    cells: list[dict],
    store: Path,
    workers: int = 1,
    fields: Iterable[str] | None = None,
    cost: Callable[[dict], float] | None = None,
) -> list[dict]:
    """Run ``fn(**cell)`` for every cell whose key (its ``fields``, all by default) is not in
    ``store`` yet; return every stored result of the requested cells (old and new).

    :param cost: a cell's expected share of the work (its env steps, say), for the time-left
        estimate; without it every cell counts the same.
    """
    store.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or cells[0].keys()) if cells else []
    stored = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    done = {key_of(result, fields) for result in stored if all(f in result for f in fields)}
    todo = [cell for cell in cells if key_of(cell, fields) not in done]
    print(f"{len(todo)} of {len(cells)} cells to run ({len(cells) - len(todo)} already in {store})", flush=True)
    cost = cost or (lambda cell: 1.0)
    total_cost, done_cost = sum(cost(cell) for cell in todo), 0.0
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(_run_one, fn, cell): cell for cell in todo}
        for finished, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            stored.append(result)
            with store.open("a") as f:
                f.write(json.dumps(result) + "\n")
            elapsed = time.perf_counter() - started
            done_cost += cost(futures[future])
            left = elapsed / done_cost * (total_cost - done_cost)
            summary = ", ".join(f"{k}={result[k]}" for k in fields)
            print(f"[{finished}/{len(todo)}, {elapsed / 60:.1f} min, ~{left / 60:.1f} min left] {summary}: "
                  f"eval {result.get('eval_mean', float('nan')):.3f}, {result.get('fps', 0):,} steps/s", flush=True)  # fmt: skip
    wanted = {key_of(cell, fields) for cell in cells}
    return [result for result in stored if key_of(result, fields) in wanted]
