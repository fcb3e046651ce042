"""Scale-out on one machine: env steps/s and learning of 1 vs 2 data-parallel processes.

Three set-ups of one probe config, each trained to its ``total_timesteps`` with ``ntm-rl train``
(one torch thread per process), for each seed:

- ``1 x n``: one process with the config's ``n`` envs (the baseline);
- ``1 x 2n``: one process with twice the envs: the same algorithm as ``2 x n``, which computes
  its gradients (tests/test_distributed.py checks this to 1e-5);
- ``2 x n``: ``--nproc 2``, each process with ``n`` envs;
- ``1 x n, twice at once``: two independent one-process runs side by side (seeds ``s`` and
  ``s + 1000``), their env steps/s summed: what the cores give two processes that never wait for
  each other, the ceiling for ``2 x n``.

It prints, per set-up, env steps/s (SB3's ``time/fps`` at the end of training: the env steps
over the training's wall time, without start-up and the final evaluation) and the final
evaluation over seeds, then the speed-ups of ``2 x n`` over both one-process set-ups (per seed,
then their median). The runs go one after another, so that none competes for the cores.

    python benchmarks/distributed.py                          # tmaze_ntm, seeds 0-2 (about 25 min here)
    python benchmarks/distributed.py --config configs/repeat_first_ntm.yaml --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, runs: list[tuple[int, int, int]], runs_root: Path) -> list[dict[str, float]]:
    """``ntm-rl train`` runs started together, one per ``(seed, n_envs, nproc)``: each one's env
    steps/s, final evaluation and wall time."""
    processes = []
    for seed, n_envs, nproc in runs:
        command = [sys.executable, "-m", "ntm_rl.cli", "train", str(config), f"seed={seed}", f"env.n_envs={n_envs}",
                   "torch_threads=1", "logging.progress_bar=false", "--runs-root", str(runs_root), "--nproc", str(nproc)]  # fmt: skip
        processes.append((command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                    env=os.environ | {"OMP_NUM_THREADS": "1"})))  # fmt: skip
    started, results = time.perf_counter(), []
    for command, process in processes:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
        root = Path(stdout.strip().splitlines()[-1].removeprefix("run written to "))
        with open(root / "progress.csv") as file:
            rows = list(csv.DictReader(file))
        results.append({"steps_per_s": float(rows[-1]["time/fps"]), "wall_s": time.perf_counter() - started,
                        "eval": json.loads((root / "eval.json").read_text())["mean_return"]})  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tmaze_ntm.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmark_runs").resolve() / "distributed")
    args = parser.parse_args()
    n = yaml.safe_load(args.config.read_text())["env"]["n_envs"]
    twice = f"1 x {n}, twice at once"
    setups = {f"1 x {n}": [(0, n, 1)], f"1 x {2 * n}": [(0, 2 * n, 1)], f"2 x {n}": [(0, n, 2)],
              twice: [(0, n, 1), (1000, n, 1)]}  # seed offsets  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
    print(f"{args.config.name}, seeds {args.seeds}, {os.cpu_count()} cores, 1 torch thread per process")
    for seed in args.seeds:
        for name, runs in setups.items():
            together = train(args.config, [(seed + offset, n_envs, nproc) for offset, n_envs, nproc in runs], args.out)
            result = together[0] | {"steps_per_s": sum(r["steps_per_s"] for r in together)}
            results[name].append(result)
            print(f"  seed {seed}, {name}: {result['steps_per_s']:,.0f} env steps/s, eval {result['eval']:.3g} "
                  f"({result['wall_s']:.0f} s)", flush=True)  # fmt: skip
    print(f"\n| processes x envs | env steps/s (median) | final eval, mean +- std over {len(args.seeds)} seeds |")
    print("| --- | ---: | ---: |")
    for name, runs in results.items():
        speed, scores = np.median([r["steps_per_s"] for r in runs]), [r["eval"] for r in runs]
        print(f"| {name} | {speed:,.0f} | {np.mean(scores):.3g} +- {np.std(scores):.2g} |")
    two = [r["steps_per_s"] for r in results[f"2 x {n}"]]
    for baseline in (f"1 x {n}", f"1 x {2 * n}", twice):
        ratios = [a / b["steps_per_s"] for a, b in zip(two, results[baseline], strict=True)]
        print(f"2 x {n} over {baseline}: {np.median(ratios):.2f}x env steps/s (per seed: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
