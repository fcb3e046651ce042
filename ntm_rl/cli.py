"""The ``ntm-rl`` command: train, evaluate and inspect agents from YAML configs, list what ships.

    ntm-rl train configs/tmaze_ntm.yaml [key=value ...] [--seed N] [--device cuda] [--wandb] [--nproc N]
    ntm-rl train --resume runs/<run> [--nproc N]
    ntm-rl sweep configs/tmaze_ntm.yaml --seeds 0-4 [key=a,b ...] [--workers K]
    ntm-rl eval runs/<run> [--episodes 20] [--stochastic]
    ntm-rl inspect runs/<run> [--episodes 3] [--out DIR]
    ntm-rl list

``--gym-packages PKG ...`` (train, eval, inspect) imports packages that register gymnasium envs
first, as rl-zoo3's flag does, so that a config's ``env.id`` can name their ids; a config's
``env.packages`` does the same when it is trained (a run directory's only with the flag).

``--nproc N`` trains one agent with N data-parallel processes on this machine, through
``torch.distributed.run`` (torchrun); ``torchrun --nproc-per-node N [--nnodes M ...] -m ntm_rl.cli
train CONFIG`` does the same across machines (see :mod:`ntm_rl.distributed`).

A mistake the user can fix (an unknown key, a wrong type, a missing file, an unknown env id, CUDA
where there is none) prints one line, ``ntm-rl: error: ...``, and exits with code 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from pathlib import Path

from ntm_rl import distributed
from ntm_rl.config import ConfigError
from ntm_rl.registry import import_gym_packages

SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit code 2, like every other user error."""

    def error(self, message: str):
        sys.stderr.write(f"ntm-rl: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ntm-rl", description="Memory-augmented RL with Stable-Baselines3: train, eval, inspect.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train an agent from a YAML config (or resume a run)")
    train.add_argument("config", nargs="?", help="YAML experiment config (see configs/)")
    train.add_argument("overrides", nargs="*", help="config overrides, key=value with dotted keys")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    train.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the config)")
    train.add_argument("--seed", type=int, help="random seed (overrides the config)")
    train.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                       help="log to wandb (offline when no API key is configured)")  # fmt: skip
    train.add_argument("--runs-root", default="runs", help="where new run directories go (default: runs)")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train with N data-parallel processes on this machine (torchrun; default 1)")  # fmt: skip

    sweep = commands.add_parser("sweep", help="train a config for several seeds (and values), K runs at a time")
    sweep.add_argument("config", help="YAML experiment config (see configs/)")
    sweep.add_argument("overrides", nargs="*",
                       help="key=value overrides; key=a,b,c trains each value (brackets keep a list whole)")  # fmt: skip
    sweep.add_argument("--seeds", default="0-2", help="seeds, as 0-4 or 0,3,7 (default: 0-2)")
    sweep.add_argument("--workers", type=int, default=1, metavar="K", help="runs at a time, one process each")
    sweep.add_argument("--runs-root", default="runs", help="where the run directories go (default: runs)")

    evaluate = commands.add_parser("eval", help="evaluate a trained agent")
    evaluate.add_argument("target", metavar="RUN_OR_MODEL", help="a run directory or a model .zip inside one")
    evaluate.add_argument("--episodes", type=int, default=None, help="episodes (default: the config's eval.episodes)")
    evaluate.add_argument("--stochastic", action="store_true",
                          help="sample actions instead of taking the mode (default: the config's eval.deterministic)")  # fmt: skip
    evaluate.add_argument("--device", default="auto")

    look = commands.add_parser("inspect", help="trace the memory of a trained NTM agent and plot it")
    look.add_argument("target", metavar="RUN_OR_MODEL", help="a run directory or a model .zip inside one")
    look.add_argument("--episodes", type=int, default=3)
    look.add_argument("--out", type=Path, help="output directory (default: RUN/inspect)")
    look.add_argument("--stochastic", action="store_true", help="as for eval")
    look.add_argument("--device", default="auto")

    for command in (train, sweep, evaluate, look):
        command.add_argument("--gym-packages", nargs="+", default=[], metavar="PKG",
                             help="import these packages first (they register gymnasium envs the config names)")  # fmt: skip

    commands.add_parser("list", help="list environments, cores, algorithms and shipped configs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # argparse fills a positional list only once, so overrides written after a flag come back unknown.
    if (
        unknown
        and args.command in ("train", "sweep")
        and all("=" in arg and not arg.startswith("-") for arg in unknown)
    ):
        args.overrides = [*args.overrides, *unknown]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ntm_rl.agents import NonFiniteError

    try:
        import_gym_packages(getattr(args, "gym_packages", []), "--gym-packages")
        commands = {"train": _train, "sweep": _sweep, "eval": _eval, "inspect": _inspect, "list": _list}
        return commands[args.command](args) or 0
    except (ConfigError, NonFiniteError, OSError) as error:  # OSError: a path that cannot be read or written
        sys.stderr.write(f"ntm-rl: error: {error}\n")
        return 2
    except distributed.LostProcessError as error:  # another process of the run is gone
        sys.stderr.write(f"ntm-rl: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(
            "\nntm-rl: interrupted; `ntm-rl train --resume RUN_DIR` continues the run (its directory is logged at the start) from its newest checkpoint.\n"
        )
        return 130


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}.")


def _train(args: argparse.Namespace) -> int | None:
    from ntm_rl.config import load_config
    from ntm_rl.experiment import train

    _positive("--nproc", args.nproc)
    if args.resume is not None and (args.config is not None or args.seed is not None):
        raise ConfigError("--resume continues a run with its saved config: drop CONFIG, overrides and --seed.")
    if args.resume is None and args.config is None:
        raise ConfigError("train needs a CONFIG file (see `ntm-rl list`) or --resume RUN_DIR.")
    if args.nproc > 1:
        return _launch(args)
    if args.resume is not None:
        run, result = train(None, resume=args.resume, wandb=args.wandb, device=args.device)
    else:
        overrides = list(args.overrides)
        overrides += [f"device={args.device}"] if args.device is not None else []
        overrides += [f"seed={args.seed}"] if args.seed is not None else []
        run, result = train(load_config(args.config, overrides), runs_root=args.runs_root, wandb=args.wandb)
    if not result:  # a distributed run's other processes: rank 0 reports
        return None
    print(f"evaluation: mean return {result['mean_return']:.4g} +- {result['std_return']:.3g} over "
          f"{result['episodes']} episodes after {result['num_timesteps']:,} env steps")  # fmt: skip
    print(f"run written to {run.root}")
    return None


def _launch(args: argparse.Namespace) -> int:
    """``train --nproc N``: the same command in N processes started by ``torch.distributed.run``,
    with a one-line report of the first process that failed."""
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from ntm_rl.config import load_config
    from ntm_rl.experiment import RUN_DIR_HINT
    from ntm_rl.runs import RunDirectory

    if distributed.launched():
        raise ConfigError("--nproc starts the processes itself; under torchrun give --nproc-per-node to torchrun.")
    # The mistakes one process can find are found before N start.
    _ = RunDirectory.find(args.resume).config if args.resume is not None else load_config(args.config, args.overrides)
    command = [*([args.config, *args.overrides] if args.resume is None else ["--resume", args.resume]),
               *(["--device", args.device] if args.device else []), *(["--seed", str(args.seed)] if args.seed is not None else []),
               *([] if args.wandb is None else ["--wandb" if args.wandb else "--no-wandb"]),
               "--runs-root", args.runs_root, *(["--gym-packages", *args.gym_packages] if args.gym_packages else [])]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        hint = Path(scratch) / "run_dir"
        os.environ[RUN_DIR_HINT] = str(hint)
        try:
            run(
                parse_args(["--standalone", "--nproc-per-node", str(args.nproc), "-m", "ntm_rl.cli", "train", *command])
            )
        except ChildFailedError as error:
            rank, failure = error.get_first_failure()
            how = (
                f"was killed by {failure.signal_name()}"
                if failure.exitcode < 0
                else f"exited with code {failure.exitcode}"
            )
            where = hint.read_text() if hint.exists() else args.resume
            where = where if where and Path(where).is_dir() else None  # a run that never started is removed
            resume = (f"; `ntm-rl train --resume {where} --nproc {args.nproc}` continues from its newest whole checkpoint"
                      if where else "")  # fmt: skip
            sys.stderr.write(f"ntm-rl: error: process {rank} of {args.nproc} (pid {failure.pid}) {how}, so the run "
                             f"stopped{resume}.\n")  # fmt: skip
            return 1
        finally:
            del os.environ[RUN_DIR_HINT]
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ntm_rl.sweep import expand_grid, parse_seeds, run_sweep

    _positive("--workers", args.workers)
    results = run_sweep(args.config, expand_grid(args.overrides), parse_seeds(args.seeds), args.workers,
                        args.runs_root, report=print, gym_packages=args.gym_packages)  # fmt: skip
    return 0 if all(r["error"] is None for r in results) else 1


def _eval(args: argparse.Namespace) -> None:
    from ntm_rl.experiment import evaluate, load_agent

    _positive("--episodes", args.episodes)
    model, config, normalizer = load_agent(args.target, args.device)
    episodes = args.episodes or config.eval.episodes
    deterministic = config.eval.deterministic and not args.stochastic
    result = evaluate(model, config, normalizer, episodes, deterministic=deterministic)
    print(f"mean return {result['mean_return']:.4g} +- {result['std_return']:.3g} over {episodes} episodes "
          f"({'deterministic' if deterministic else 'stochastic'}, mean length {result['mean_length']:.1f})")  # fmt: skip
    print(json.dumps(result))


def _inspect(args: argparse.Namespace) -> None:
    from ntm_rl.experiment import inspect_agent, load_agent
    from ntm_rl.runs import RunDirectory

    _positive("--episodes", args.episodes)
    model, config, normalizer = load_agent(args.target, args.device)
    out = args.out or RunDirectory.find(args.target).root / "inspect"
    deterministic = config.eval.deterministic and not args.stochastic
    written = inspect_agent(model, config, normalizer, out, args.episodes, deterministic=deterministic)
    for metrics in json.loads((out / "metrics.json").read_text()):
        print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    print(f"wrote {len(written)} files to {out}")


def _list(args: argparse.Namespace) -> None:
    from ntm_rl.cores import CORES
    from ntm_rl.registry import ALGORITHMS, ATARI_ID, TORCH_ENVS, env_class

    print("environments (any registered gymnasium id works too):")
    for env_id in [*TORCH_ENVS, ATARI_ID]:
        parameters = inspect.signature(env_class(env_id)).parameters.values()
        keywords = " ".join(
            f"{p.name}={p.default!r}" for p in parameters if p.name not in ("num_envs", "device", "training")
        )
        print(f"  {env_id:32s} {keywords}")
    print(f"cores: {', '.join(CORES)}")
    print(f"algorithms: {', '.join(ALGORITHMS)}")
    configs = sorted({*SHIPPED_CONFIGS.glob("*.yaml"), *Path("configs").resolve().glob("*.yaml")})
    print("configs:" if configs else "configs: none found (run from the ntm-rl repository)")
    for path in configs:
        print(f"  {path}")


if __name__ == "__main__":
    sys.exit(main())
