"""Learning parity: ntm-rl's RecurrentPPO with an LSTM core, set up as sb3-contrib's RecurrentPPO
defaults, beside sb3-contrib's RecurrentPPO itself, on the same envs and seeds.

Both agents see the same env (an ntm-rl batched env behind ``TorchVecEnvToSB3`` and SB3's
``VecMonitor``, so both go through SB3's numpy ``VecEnv`` interface) with 16 envs and
``n_steps=128``. sb3-contrib runs with every default (``MlpLstmPolicy``: LSTM 256, a separate
critic LSTM, ``net_arch=dict(pi=[64, 64], vf=[64, 64])``, tanh, orthogonal init, Adam lr 3e-4 and
eps 1e-5, batch 128, 10 epochs, gamma 0.99, GAE 0.95, clip 0.2, no entropy bonus). ntm-rl's agent
copies each of them; the one thing it cannot copy is the sequence handling: sb3-contrib cuts each
minibatch of 128 consecutive steps (a random offset into the env-major rollout) into episodes and
pads them, while ntm-rl trains on whole envs over the rollout (``sequence_length=n_steps=128``,
one env per minibatch of 128), cut only where episodes end, from the state stored at the rollout's
start.

Each cell (task, agent, seed) records the mean return of the last 100 training episodes after every
rollout (the learning curve), its env steps/s, and a final deterministic evaluation over 100
episodes. Cells run in ``--workers`` processes of one torch thread each and are kept in
``<out>/cells.jsonl``: a rerun skips the cells already there (``learning.run_cells``). The end prints a table per task and
seed, a summary (mean and standard deviation over seeds) and writes ``<out>/parity.png``.

    python benchmarks/parity.py                                   # 3 tasks x 2 agents x seeds 0-4
    python benchmarks/parity.py --tasks repeat_previous --seeds 0 1 --workers 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from learning import LearningCurve, evaluate, run_cells  # the sibling module
from stable_baselines3.common.vec_env import VecMonitor

from ntm_rl.envs import CartPole, RepeatPrevious, TMaze
from ntm_rl.vec import TorchVecEnv, TorchVecEnvToSB3

TASKS: dict[str, tuple[Callable[[int], TorchVecEnv], int]] = {
    # name: (env of n envs, training steps)
    "repeat_previous": (lambda n: RepeatPrevious(n, num_symbols=4, delay=3, length=32), 100_000),
    "tmaze": (lambda n: TMaze(n, corridor_length=10), 100_000),
    "cartpole_novel": (lambda n: CartPole(n, observation="no_velocity"), 150_000),
}
AGENTS = ("ntm-rl", "sb3-contrib")
N_ENVS, N_STEPS = 16, 128


def make_agent(agent: str, env: VecMonitor, seed: int):
    if agent == "sb3-contrib":
        from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

        return ContribRecurrentPPO("MlpLstmPolicy", env, n_steps=N_STEPS, seed=seed)
    from ntm_rl.agents import RecurrentPPO

    return RecurrentPPO(
        "MlpPolicy", env, n_steps=N_STEPS, batch_size=128, n_epochs=10, sequence_length=N_STEPS, learning_rate=3e-4,
        gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, seed=seed,
        policy_kwargs=dict(core="lstm", core_kwargs=dict(hidden_size=256, chrono_init=None), shared_core=False,
                           net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh, ortho_init=True,
                           optimizer_kwargs=dict(eps=1e-5)),
    )  # fmt: skip


def run_cell(task: str, agent: str, seed: int, steps: int | None = None) -> dict:
    make_env, task_steps = TASKS[task]
    steps = steps or task_steps
    env = VecMonitor(TorchVecEnvToSB3(make_env(N_ENVS)))
    env.seed(seed)
    model = make_agent(agent, env, seed)
    curve = LearningCurve()
    start = time.perf_counter()
    model.learn(steps, callback=curve)
    seconds = time.perf_counter() - start
    eval_mean = evaluate(model, VecMonitor(TorchVecEnvToSB3(make_env(20))), 100, seed + 1000)
    return {"steps": steps, "seconds": round(seconds, 1), "fps": round(steps / seconds), "eval_mean": eval_mean,
            "curve": curve.points}  # fmt: skip


def report(cells: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(c["task"] == t for c in cells)]
    print(f"\n{'task':16s} {'seed':>4s} " + " ".join(f"{a + ' eval':>17s} {a + ' steps/s':>20s}" for a in AGENTS))
    for task in tasks:
        for seed in sorted({c["seed"] for c in cells if c["task"] == task}):
            row = {c["agent"]: c for c in cells if c["task"] == task and c["seed"] == seed}
            print(f"{task:16s} {seed:4d} " + " ".join(
                f"{row[a]['eval_mean']:17.3f} {row[a]['fps']:20,d}" if a in row else f"{'-':>17s} {'-':>20s}"
                for a in AGENTS))  # fmt: skip
    print("\nmean +- std over seeds (final deterministic evaluation; last training-curve point; env steps/s)")
    for task in tasks:
        for agent in AGENTS:
            runs = [c for c in cells if c["task"] == task and c["agent"] == agent]
            if runs:
                evals = [c["eval_mean"] for c in runs]
                lasts = [c["curve"][-1][-1] for c in runs if c["curve"]]
                print(f"{task:16s} {agent:12s} n={len(runs)}  eval {np.mean(evals):8.3f} +- {np.std(evals):6.3f}   "
                      f"training {np.mean(lasts):8.3f} +- {np.std(lasts):6.3f}   "
                      f"{np.mean([c['fps'] for c in runs]):8,.0f} steps/s")  # fmt: skip

    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for agent, colour in zip(AGENTS, ("tab:blue", "tab:orange"), strict=True):
            for i, cell in enumerate(c for c in cells if c["task"] == task and c["agent"] == agent):
                x, y = (np.array(cell["curve"])[:, [0, -1]].T) if cell["curve"] else ([], [])
                axis.plot(x, y, color=colour, alpha=0.7, lw=1, label=agent if i == 0 else None)
        axis.set(title=task, xlabel="env steps", ylabel="mean training-episode return")
        axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out / "parity.png", dpi=110)
    print(f"\ncurves: {out / 'parity.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--steps", type=int, help="training steps of every task (default: each task's own)")
    parser.add_argument("--out", type=Path, default=Path("runs/parity"))
    args = parser.parse_args()
    cells = [
        dict(task=t, agent=a, seed=s, steps=args.steps) for t in args.tasks for s in args.seeds for a in args.agents
    ]
    results = run_cells(run_cell, cells, args.out / "cells.jsonl", args.workers, fields=("task", "agent", "seed"))
    report(results, args.out)


if __name__ == "__main__":
    main()
