"""Memory ladders: the NTM, LSTM and GRU cores at rising memory demand, over seeds, in one command.

A *ladder* raises one task's memory demand rung by rung; a *rung* is a registered env id with its
keyword arguments, a budget of env steps and a rollout length. Every cell (ladder, rung, core,
seed) is an ordinary ``ntm-rl train`` run: the ladder's base config from ``configs/`` with the
rung's env, budget and ``n_steps`` and the core at the suite's size (about equal parameter counts,
within 8% of each other on every ladder: an NTM with a 32-unit LSTM controller and 32x8 memory
whose heads start as a ring buffer, LSTM-40, GRU-48; ``--cores ntm_focused`` adds the NTM as the
shipped configs have it, 16 rows, all heads starting on row 0), in a run directory of its own
under ``<out>/runs/``, so that ``ntm-rl eval`` and ``ntm-rl inspect`` open any cell. Every other
setting is the base config's (the library defaults for the probes, gamma 0.99).

Each cell's final deterministic evaluation is normalised (optimal 1, random actions 0) and its
learning curve (the mean return of the last 100 training episodes) gives the env steps to a
normalised 0.9. The suite writes, in ``--out``:

- ``results.csv``: a row per cell;
- ``results.md``: per ladder, the median and interquartile range over seeds of the normalised
  evaluation per rung and core, the env steps to 0.9, the highest rung each core solves (median
  >= 0.9) and each core's env steps/s;
- ``<ladder>.png``: normalised evaluation against rung, a line per core with its IQR band;
- ``<ladder>_curves.png``: the learning curves, a panel per rung, a line per seed;
- ``cells.jsonl``: the results so far. A rerun skips the cells stored there and resumes a cell
  that was stopped midway from its newest checkpoint.

    python benchmarks/memory_suite.py --quick --workers 2      # every ladder's first two rungs, one seed
    python benchmarks/memory_suite.py --workers 2              # every ladder, 3 seeds, the full budgets
    python benchmarks/memory_suite.py --ladders tmaze repeat_previous --cores ntm gru --seeds 0 1 2 3 4
    python benchmarks/memory_suite.py --ladders repeat_previous --cores ntm ntm_focused lstm gru --speed 16384
    python benchmarks/memory_suite.py --report --cores ntm gru   # every stored cell's results, after runs in parts

Cells run in ``--workers`` processes of one torch thread each; time both sides of a comparison
under the same load.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from learning import normalised, run_cells, steps_to  # the sibling module
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from stable_baselines3.common.monitor import load_results

from ntm_rl.config import config_from_dict
from ntm_rl.experiment import load_agent, make_env, make_model, train
from ntm_rl.registry import env_class
from ntm_rl.runs import RunDirectory

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CORES: dict[str, tuple[str, dict]] = {
    # the NTM's heads start walking a row a step, its read heads spread over the rows (a ring
    # buffer whose read lag is learned); 32 rows hold repeat-previous's delay 32 and copy's 20 symbols
    "ntm": ("ntm", dict(controller_size=32, memory_size=32, word_size=8, shift_init=1, read_init="diffuse")),
    "lstm": ("lstm", dict(hidden_size=40)),
    "gru": ("gru", dict(hidden_size=48)),
    # the suite's NTM before that initialisation: the shipped configs' NTM, all heads starting on row 0
    "ntm_focused": ("ntm", dict(controller_size=32, memory_size=16, word_size=8)),
}
"""Each suite core by name: the core and its keywords, at about equal parameter counts (7,000-12,000 in the core)."""
DEFAULT_CORES = ["ntm", "lstm", "gru"]

REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    # (normalised 1, normalised 0) for envs without an optimal_return: CartPole's maximum, and for
    # Pendulum a reference of good full-observation agents (rl-zoo3's benchmark lists -150 to -200
    # for Pendulum; its true optimum depends on the start state); random actions as measured
    "ntm_rl/CartPole-v0": (500.0, 22.5),
    "ntm_rl/Pendulum-v0": (-150.0, -1227.0),
}
SOLVED = 0.9
"""The normalised return at which a rung counts as solved."""


@dataclass(frozen=True)
class Rung:
    """One difficulty: the env's keyword arguments, the full run's budget and rollout length."""

    name: str
    env_kwargs: dict
    budget: int
    n_steps: int | None = None  # None: the base config's
    eval_episodes: int = 100


@dataclass(frozen=True)
class Ladder:
    """Rungs of one task, easiest first, trained from ``base`` (a config in ``configs/``)."""

    base: str
    rungs: tuple[Rung, ...]
    quick_budget: int = 25_000


def _repeat_previous(delay: int, budget: int) -> Rung:
    # an episode holds the delay three times over; a rollout is at least an episode long
    length = 3 * delay
    return Rung(f"delay {delay}", dict(num_symbols=4, delay=delay, length=length), budget, max(128, length))


def _tmaze(corridor: int, budget: int) -> Rung:
    # a rollout holds two whole episodes (the cue always lies in its junction's rollout)
    n_steps = max(128, 2 * (corridor + 1))
    return Rung(f"corridor {corridor}", dict(corridor_length=corridor), budget, n_steps, 100 if corridor <= 100 else 20)


def _observed(observation: str, budget: int) -> Rung:
    name = {"full": "full", "no_velocity": "no velocities", "flicker": "flicker 0.5"}[observation]
    kwargs = dict(observation=observation) | (dict(flicker_prob=0.5) if observation == "flicker" else {})
    return Rung(name, kwargs, budget, eval_episodes=20)


LADDERS: dict[str, Ladder] = {
    "repeat_previous": Ladder(
        "repeat_previous_ntm.yaml",
        tuple(
            _repeat_previous(d, b)
            for d, b in [(4, 300_000), (8, 500_000), (16, 1_000_000), (32, 2_000_000), (64, 2_000_000)]
        ),  # fmt: skip
    ),
    "tmaze": Ladder(
        "tmaze_ntm.yaml",
        tuple(_tmaze(c, b) for c, b in [(10, 100_000), (100, 500_000), (300, 1_000_000), (1000, 2_000_000)]),
        quick_budget=40_000,
    ),
    "copy": Ladder(
        "copy_ntm.yaml",
        tuple(
            Rung(f"length {n}", dict(num_symbols=4, length=n, delay=0), b)
            for n, b in [(5, 500_000), (10, 1_000_000), (20, 2_000_000)]
        ),  # fmt: skip
    ),
    "associative_recall": Ladder(
        "associative_recall_ntm.yaml",
        # 16 symbols on every rung, so that only the number of pairs changes
        tuple(
            Rung(f"{n} pairs", dict(num_pairs=n, num_symbols=16), b)
            for n, b in [(3, 500_000), (6, 1_000_000), (12, 2_000_000)]
        ),  # fmt: skip
    ),
    "counting": Ladder(
        "count_recall_ntm.yaml",
        # counts capped at half the length: a cap of 8 over 64 steps would make "8" the answer to
        # half the queries, an easier rung than 16 steps
        tuple(
            Rung(f"{n} steps", dict(num_symbols=4, length=n, max_count=n // 2), b, max(128, n))
            for n, b in [(16, 1_000_000), (64, 2_000_000)]
        ),  # fmt: skip
    ),
    "cartpole": Ladder(
        "cartpole_novel_ntm.yaml",
        tuple(_observed(o, 300_000) for o in ("full", "no_velocity", "flicker")),
        quick_budget=40_000,
    ),
    "pendulum": Ladder(
        "pendulum_novel_ntm.yaml",
        tuple(_observed(o, 500_000) for o in ("full", "no_velocity", "flicker")),
        quick_budget=40_000,
    ),
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def rung_of(ladder: str, rung: str) -> Rung:
    return next(r for r in LADDERS[ladder].rungs if r.name == rung)


def cell_budget(ladder: str, step: Rung, quick: bool) -> int:
    """A cell's env steps: the rung's budget, capped at the ladder's quick budget in ``--quick``."""
    return min(step.budget, LADDERS[ladder].quick_budget) if quick else step.budget


def stored_results(out: Path, ladders: list[str], cores: list[str], quick: bool) -> list[dict]:
    """Every cell stored in ``out/cells.jsonl`` of these ladders and cores and of the run's budgets
    (full or ``--quick``), whichever rungs and seeds it holds."""
    store = out / "cells.jsonl"
    if not store.exists():
        raise SystemExit(f"--report: {store} does not exist; run the suite with --out {out} first.")
    rungs = {
        (ladder, step.name): cell_budget(ladder, step, quick) for ladder in ladders for step in LADDERS[ladder].rungs
    }
    results = [json.loads(line) for line in store.read_text().splitlines()]
    results = [r for r in results if rungs.get((r["ladder"], r["rung"])) == r["budget"] and r["core"] in cores]
    if not results:
        raise SystemExit(
            f"--report: {store} holds no cell of ladders {' '.join(ladders)} and cores {' '.join(cores)} at the "
            f"{'--quick' if quick else 'full'} budgets; pass the --cores (and --quick) the cells were run with."
        )
    return results


def cell_config(ladder: str, rung: str, core: str, seed: int, budget: int) -> dict:
    """The cell's config as plain data: the ladder's base config with the rung, core and seed."""
    spec, step = LADDERS[ladder], rung_of(ladder, rung)
    data = yaml.safe_load((CONFIGS / spec.base).read_text())
    base_core = data.get("core_kwargs", {})
    core_type, core_kwargs = CORES[core]
    data |= {
        "name": f"{ladder}-{_slug(rung)}-{core}",
        "core": core_type,
        # the base config's chrono_init stays (the classic-control configs turn it off for every core)
        "core_kwargs": core_kwargs | {k: v for k, v in base_core.items() if k == "chrono_init"},
        "seed": seed,
        "total_timesteps": budget,
        "checkpoint_freq": max(20_000, budget // 10),
        "torch_threads": 1,
    }
    data["env"] = data["env"] | {"kwargs": step.env_kwargs}
    data["eval"] = data.get("eval", {}) | {"episodes": step.eval_episodes}
    if step.n_steps is not None:
        data["algo_kwargs"] = data.get("algo_kwargs", {}) | {"n_steps": step.n_steps}
    data["logging"] = data.get("logging", {}) | {"progress_bar": False, "tensorboard": False, "wandb": False}
    # every core's step compiled: the NTM's env steps/s rise about 1.7x, the GRU's and LSTM's little
    data["policy_kwargs"] = data.get("policy_kwargs", {}) | {"compile_core": True}
    return data


def reference_returns(env_id: str, env_kwargs: dict) -> tuple[float, float]:
    """(optimal, random) returns of an env: a probe's own, else :data:`REFERENCE_RETURNS`."""
    if env_id in REFERENCE_RETURNS:
        return REFERENCE_RETURNS[env_id]
    probe = env_class(env_id)(num_envs=1, **env_kwargs)
    return probe.optimal_return, probe.random_return


def training_curve(run: Path, optimal: float, random: float, points: int = 200) -> list[tuple[int, float, float]]:
    """(env steps, seconds, normalised mean return of the last 100 episodes), at most ``points``
    of them, from the run's monitor files (every attempt's, if it was resumed)."""
    episodes = load_results(str(run))
    if episodes.empty:
        return []
    steps = episodes["l"].cumsum().to_numpy()
    window = min(100, len(episodes))
    mean = episodes["r"].rolling(window, min_periods=window).mean().to_numpy()
    keep = np.unique(np.linspace(window - 1, len(episodes) - 1, min(points, len(episodes) - window + 1)).astype(int))
    return [
        (int(steps[i]), round(float(episodes["t"].iloc[i]), 1), round(float(normalised(mean[i], optimal, random)), 4))
        for i in keep
    ]


def run_cell(ladder: str, rung: str, core: str, seed: int, budget: int, out: str) -> dict:
    """Train one cell in its run directory (resuming one left unfinished), evaluate, normalise."""
    logging.disable(logging.WARNING)  # a worker's runs log to their own files, not to the suite's progress
    data = cell_config(ladder, rung, core, seed, budget)
    parent = Path(out) / "runs" / ladder / _slug(rung) / core
    earlier = max(parent.glob(f"{data['name']}-s{seed}-*"), default=None)  # a run this cell left
    if earlier is not None and not RunDirectory(earlier).checkpoint_steps():
        shutil.rmtree(earlier)  # stopped before its first checkpoint: nothing to resume
        earlier = None
    start = time.perf_counter()
    if earlier is not None and (earlier / "eval.json").is_file():  # trained, not yet stored
        run, result = RunDirectory(earlier), json.loads((earlier / "eval.json").read_text())
    elif earlier is not None:
        # (its curve also counts the episodes between the checkpoint and the interruption, and its
        # steps/s the time in between)
        run, result = train(None, resume=earlier)
    else:
        run, result = train(config_from_dict(data), runs_root=parent)
    seconds = time.perf_counter() - start
    env_id, env_kwargs = data["env"]["id"], data["env"]["kwargs"]
    optimal, random = reference_returns(env_id, env_kwargs)
    curve = training_curve(run.root, optimal, random)
    trained_seconds = curve[-1][1] if curve else seconds
    model, _, _ = load_agent(run.root, "cpu")
    return {"env_id": env_id, "env_kwargs": env_kwargs, "parameters": sum(p.numel() for p in model.policy.core.parameters()),
            "steps": result["num_timesteps"], "seconds": round(trained_seconds, 1),
            "fps": round(result["num_timesteps"] / max(trained_seconds, 1e-9)), "eval_mean": result["mean_return"],
            "normalised": round(normalised(result["mean_return"], optimal, random), 4), "steps_to_solved": steps_to(curve, SOLVED),
            "optimal": optimal, "random": random, "curve": curve, "run": str(run.root)}  # fmt: skip


def measure_speed(ladder: str, cores: list[str], steps: int) -> dict[tuple[str, bool], float]:
    """Each core's training env steps/s on the ladder's first rung, with its step eager and
    compiled, over ``steps`` env steps after 4,096 that take the compilation and first calls."""
    fps = {}
    for compiled in (False, True):
        for core in cores:
            data = cell_config(ladder, LADDERS[ladder].rungs[0].name, core, seed=0, budget=steps)
            data["policy_kwargs"]["compile_core"] = compiled
            config = config_from_dict(data)
            model = make_model(config, make_env(config, config.env.n_envs), torch.device("cpu"))
            model.learn(4096)
            start = time.perf_counter()
            model.learn(steps)
            fps[core, compiled] = steps / (time.perf_counter() - start)
            mode = "compiled" if compiled else "eager"
            print(f"{core:12s} {mode:8s} {fps[core, compiled]:7,.0f} env steps/s", flush=True)
    return fps


# ----------------------------------------------------------------------------------- report
def _median_iqr(values: list[float]) -> tuple[float, float, float]:
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return float(median), float(q25), float(q75)


def _steps_text(results: list[dict]) -> str:
    reached = [r["steps_to_solved"] for r in results if r["steps_to_solved"] is not None]
    if not reached:
        return "never"
    count = "" if len(reached) == len(results) else f" ({len(reached)}/{len(results)})"
    return f"{np.median(reached) / 1000:,.0f}k{count}"


def highest_solved(results: list[dict], ladder: str, core: str) -> int:
    """Index of the highest rung whose median normalised evaluation is solved, -1 if none."""
    solved = [i for i, step in enumerate(LADDERS[ladder].rungs)
              if (runs := _cells(results, ladder, step.name, core)) and np.median([r["normalised"] for r in runs]) >= SOLVED]  # fmt: skip
    return max(solved, default=-1)


def _cells(results: list[dict], ladder: str, rung: str, core: str) -> list[dict]:
    return [r for r in results if (r["ladder"], r["rung"], r["core"]) == (ladder, rung, core)]


def write_report(results: list[dict], ladders: list[str], cores: list[str], out: Path) -> str:
    """``results.csv``, ``results.md`` and the plots; returns the Markdown."""
    with (out / "results.csv").open("w", newline="") as f:
        columns = ["ladder", "rung_index", "rung", "env_id", "env_kwargs", "core", "seed", "parameters", "budget",
                   "steps", "seconds", "fps", "eval_mean", "normalised", "steps_to_solved", "run"]  # fmt: skip
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for r in sorted(results, key=lambda r: (r["ladder"], _rung_index(r), r["core"], r["seed"])):
            writer.writerow(r | {"rung_index": _rung_index(r), "env_kwargs": json.dumps(r["env_kwargs"])})
    lines = [f"Normalised final evaluation (optimal 1, random 0): median [interquartile range] over seeds; env "
             f"steps until the mean training return of the last 100 episodes reached {SOLVED} (median of the seeds "
             "that did; how many did, if not all); a rung is solved when its median is at least "
             f"{SOLVED}.", ""]  # fmt: skip
    for ladder in ladders:
        present = [c for c in cores if any(r["ladder"] == ladder and r["core"] == c for r in results)]
        if not present:
            continue
        params = {
            c: next(r["parameters"] for r in results if r["ladder"] == ladder and r["core"] == c) for c in present
        }
        lines += [f"### {ladder} ({LADDERS[ladder].rungs[0].name} ... {LADDERS[ladder].rungs[-1].name})", "",
                  "| rung | budget | " + " | ".join(f"{c.upper()} ({params[c]:,} parameters)" for c in present) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in present) + " |"]  # fmt: skip
        for step in LADDERS[ladder].rungs:
            row = [step.name, ""]
            for core in present:
                runs = _cells(results, ladder, step.name, core)
                if not runs:
                    row.append("-")
                    continue
                row[1] = f"{max(r['budget'] for r in runs) / 1000:,.0f}k"
                median, q25, q75 = _median_iqr([r["normalised"] for r in runs])
                row.append(f"{median:.2f} [{q25:.2f}, {q75:.2f}], {_steps_text(runs)}, {len(runs)} seeds")
            if any(cell != "-" for cell in row[2:]):
                lines.append("| " + " | ".join(row) + " |")
        solved = {c: highest_solved(results, ladder, c) for c in present}
        names = {c: LADDERS[ladder].rungs[i].name if i >= 0 else "none" for c, i in solved.items()}
        fps = {c: np.median([r["fps"] for r in results if r["ladder"] == ladder and r["core"] == c]) for c in present}
        lines += ["", "Highest rung solved: " + ", ".join(f"{c.upper()} {names[c]}" for c in present) + ". "
                  "Env steps/s (median over the ladder's cells): " + ", ".join(f"{c.upper()} {fps[c]:,.0f}" for c in present)
                  + ".", ""]  # fmt: skip
        plot_ladder(results, ladder, present, out / f"{ladder}.png")
        plot_curves(results, ladder, present, out / f"{ladder}_curves.png")
    if "ntm" in cores and "gru" in cores:
        compared = [lad for lad in ladders if any(r["ladder"] == lad and r["core"] == "ntm" for r in results)
                    and any(r["ladder"] == lad and r["core"] == "gru" for r in results)]  # fmt: skip
        gaps = {lad: highest_solved(results, lad, "ntm") - highest_solved(results, lad, "gru") for lad in compared}

        def among(test) -> str:
            names = [ladder for ladder, gap in gaps.items() if test(gap)]
            return f"{len(names)} ({', '.join(names)})" if names else "0"

        lines += [f"NTM against GRU, highest rung solved, on {len(compared)} ladders: above on {among(lambda g: g > 0)}, "
                  f"level on {among(lambda g: g == 0)}, one rung below on {among(lambda g: g == -1)}, more than one "
                  f"below on {among(lambda g: g < -1)}.", ""]  # fmt: skip
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def _rung_index(result: dict) -> int:
    return [r.name for r in LADDERS[result["ladder"]].rungs].index(result["rung"])


COLOURS = {"ntm": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "ntm_focused": "tab:orange"}


def plot_ladder(results: list[dict], ladder: str, cores: list[str], path: Path) -> None:
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    rungs = LADDERS[ladder].rungs
    for core in cores:
        xs, stats = [], []
        for i, step in enumerate(rungs):
            runs = _cells(results, ladder, step.name, core)
            if runs:
                xs.append(i)
                stats.append(_median_iqr([r["normalised"] for r in runs]))
        medians, q25, q75 = (np.array(s) for s in zip(*stats, strict=True))
        axes.plot(xs, medians, "o-", color=COLOURS.get(core), label=core.upper())
        axes.fill_between(xs, q25, q75, color=COLOURS.get(core), alpha=0.2)
    axes.axhline(SOLVED, color="grey", linestyle=":", linewidth=1)
    axes.set_xticks(range(len(rungs)), [r.name for r in rungs])
    axes.set_xlabel("rung")
    axes.set_ylabel("normalised evaluation (median, IQR)")
    axes.set_ylim(-0.1, 1.1)
    axes.set_title(ladder)
    axes.legend()
    figure.savefig(path, dpi=100)


def plot_curves(results: list[dict], ladder: str, cores: list[str], path: Path) -> None:
    rungs = [r for r in LADDERS[ladder].rungs if any(x["ladder"] == ladder and x["rung"] == r.name for x in results)]
    figure = Figure(figsize=(4 * len(rungs), 3.5), layout="constrained")
    for axes, step in zip(np.atleast_1d(figure.subplots(1, len(rungs), squeeze=False)[0]), rungs, strict=True):
        for core in cores:
            for i, run in enumerate(_cells(results, ladder, step.name, core)):
                if run["curve"]:
                    steps, _, normalised = zip(*run["curve"], strict=True)
                    axes.plot(steps, normalised, color=COLOURS.get(core), alpha=0.7, linewidth=1,
                              label=core.upper() if i == 0 else None)  # fmt: skip
        axes.axhline(SOLVED, color="grey", linestyle=":", linewidth=1)
        axes.set_ylim(-0.2, 1.1)
        axes.set_title(step.name)
        axes.set_xlabel("env steps")
        axes.xaxis.set_major_formatter(EngFormatter())
    figure.axes[0].set_ylabel("normalised training return")
    figure.axes[0].legend()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ladders", nargs="+", default=list(LADDERS), choices=list(LADDERS))
    parser.add_argument("--cores", nargs="+", default=DEFAULT_CORES, choices=list(CORES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (0 with --quick)")
    parser.add_argument("--rungs", type=int, default=None, help="the first N rungs of each ladder (default: all; 2 with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="each ladder's first two rungs, seed 0, 25-40k steps (18 min with --workers 2 on 2 cores)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--speed", type=int, metavar="STEPS", help="train nothing: time each core on the first ladder's first rung, eager and compiled, STEPS env steps each")  # fmt: skip
    parser.add_argument("--report", action="store_true", help="train nothing: write the results and plots of every cell of --ladders and --cores stored in --out, any rung and seed (of --quick's budgets with --quick)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="default: runs/memory_suite (runs/memory_suite_quick with --quick)")  # fmt: skip
    args = parser.parse_args()
    if args.workers < 1 or (args.rungs is not None and args.rungs < 1):
        parser.error(f"--workers and --rungs must be at least 1, got {args.workers} and {args.rungs}.")
    seeds = args.seeds if args.seeds is not None else [0] if args.quick else [0, 1, 2]
    rungs = args.rungs or (2 if args.quick else None)
    out = args.out or Path("runs/memory_suite_quick" if args.quick else "runs/memory_suite")
    torch.set_num_threads(1)
    if args.speed is not None:
        fps = measure_speed(args.ladders[0], args.cores, args.speed)
        if "gru" in args.cores:
            for core in args.cores:
                print(f"{core:12s} time per env step against the GRU's: eager {fps['gru', False] / fps[core, False]:.2f}x, "
                      f"compiled {fps['gru', True] / fps[core, True]:.2f}x (each against the GRU built alike)")  # fmt: skip
        return
    if args.report:
        print(write_report(stored_results(out, args.ladders, args.cores, args.quick), args.ladders, args.cores, out))
        print(f"results.csv, results.md and plots in {out}")
        return
    cells = [dict(ladder=ladder, rung=step.name, core=core, seed=seed, out=str(out),
                  budget=cell_budget(ladder, step, args.quick))
             for ladder in args.ladders for step in LADDERS[ladder].rungs[:rungs] for core in args.cores
             for seed in seeds]  # fmt: skip
    # compiled, an NTM cell takes 2-2.6x as long as an LSTM or GRU cell of the same budget (more in
    # --quick, where the minute or so of compiling is a larger share)
    results = run_cells(run_cell, cells, out / "cells.jsonl", args.workers, fields=("ladder", "rung", "core", "seed", "budget"),
                        cost=lambda cell: cell["budget"] * (2.5 if CORES[cell["core"]][0] == "ntm" else 1))  # fmt: skip
    print("\n" + write_report(results, args.ladders, args.cores, out))
    print(f"results.csv, results.md and plots in {out}")


if __name__ == "__main__":
    main()
