"""``python -m ntm_rl.zoo train|enjoy [rl-zoo3 arguments]``: rl-zoo3 with ntm-rl's agents.

    python -m ntm_rl.zoo train --algo ntm_ppo --env ntm_rl/TMaze-v0 -f logs --seed 0
    python -m ntm_rl.zoo enjoy --algo ntm_ppo --env ntm_rl/TMaze-v0 -f logs --no-render -n 500
    python -m ntm_rl.zoo train --algo ntm_ppo --env ntm_rl/TMaze-v0 -optimize --n-trials 20 --n-jobs 1
    python -m ntm_rl.zoo train --algo ntm_ppo --env CartPoleNoVel-v1 -conf ppo_lstm.yml  # sb3-contrib names

Every argument after the command is rl-zoo3's (``--help`` lists them). With ``--algo ntm_ppo`` or
``ntm_a2c`` and no ``-conf``, ``train`` reads ntm-rl's shipped hyperparameters. A missing rl-zoo3
or an unknown command prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ntm_rl.zoo import INSTALL_HINT, default_conf_file, register

PROG = "python -m ntm_rl.zoo"
COMMANDS = ("train", "enjoy")


def _error(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def _with_default_conf_file(args: list[str]) -> list[str]:
    """``args``, led by ``--conf-file <shipped yaml>`` when they choose an ntm-rl algorithm.

    The default goes first, so a ``-conf`` or ``--conf-file`` of the user's, in any spelling
    argparse accepts, comes later and wins."""
    peek = argparse.ArgumentParser(prog=f"{PROG} train", add_help=False)
    peek.add_argument("--algo")
    known, _ = peek.parse_known_args(args)
    conf_file = default_conf_file(known.algo) if known.algo else None
    return args if conf_file is None else ["--conf-file", str(conf_file), *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Run rl-zoo3's ``train`` or ``enjoy`` with ntm-rl's agents registered; the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not args or args[0] not in COMMANDS:
        given = f"unknown command {args[0]!r}" if args else "no command given"
        return _error(f"{given}; choose one of: {', '.join(COMMANDS)} (--help for more).")
    command, rest = args[0], args[1:]
    try:
        register()
        from rl_zoo3.enjoy import enjoy
        from rl_zoo3.train import train
    except ImportError as error:
        return _error(f"rl-zoo3 is needed for this command ({error}); install it with: {INSTALL_HINT}")
    run: Callable[[], None] = train if command == "train" else enjoy
    if command == "train":
        rest = _with_default_conf_file(rest)
    # rl-zoo3's commands parse sys.argv; the program name makes their usage lines read as this command.
    saved_argv, sys.argv = sys.argv, [f"{PROG} {command}", *rest]
    try:
        run()
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
