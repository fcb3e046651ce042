"""wandb for training runs: started offline when no API key is configured, never fatal.

Any failure of wandb (at start or while logging) becomes a warning and the run goes on without it.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter

logger = logging.getLogger(__name__)


def wandb_key_configured() -> bool:
    """Whether wandb could log in online: ``WANDB_API_KEY`` or a ``~/.netrc`` entry for api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(project: str, name: str, directory: Path, config: dict[str, Any], mode: str = "auto"):
    """A wandb run logging into ``directory`` (resumed if that directory had one), or ``None``.

    :param mode: ``"online"``, ``"offline"``, or ``"auto"``: online only when a key is configured.
    """
    if mode == "auto":
        mode = "online" if wandb_key_configured() else "offline"
    try:
        import wandb

        id_file = directory / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(directory), config=config,
                         mode=mode, settings=wandb.Settings(silent=True, init_timeout=60))  # fmt: skip
        # Steps are env steps, logged as a field: a resumed run logs again steps that wandb's own
        # step counter has passed, and wandb would drop those.
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
    except Exception as error:  # wandb must never stop a run
        logger.warning("wandb did not start (%s: %s); training goes on without it.", type(error).__name__, error)
        return None
    return run


class WandbOutputFormat(KVWriter):
    """An SB3 logger output that sends every numeric record to a wandb run at the current timestep."""

    def __init__(self, run):
        self.run, self.failed = run, False

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        if self.failed:
            return
        numbers = {
            key: float(value)
            for key, value in key_values.items()
            if isinstance(value, int | float | np.number) and not isinstance(value, bool)
            and "wandb" not in (key_excluded.get(key) or ())
        }  # fmt: skip
        log_to_wandb(self, numbers, step)

    def close(self) -> None:
        pass


def log_to_wandb(output: WandbOutputFormat | None, data: dict[str, Any], step: int) -> None:
    """``run.log(data, step)`` (a ``Path`` value is logged as an image); on a failure, warn and stop using wandb."""
    if output is None or output.failed:
        return
    try:
        import wandb

        images = {k: wandb.Image(str(v)) if isinstance(v, Path) else v for k, v in data.items()}
        output.run.log(images | {"global_step": step})
    except Exception as error:
        output.failed = True
        logger.warning("wandb logging failed (%s: %s); the run goes on without wandb.", type(error).__name__, error)


def finish_wandb(output: WandbOutputFormat | None) -> None:
    """Close the wandb run (flushing an offline run's files); a failure only warns."""
    if output is None:
        return
    try:
        output.run.finish()
    except Exception as error:
        logger.warning("wandb did not finish cleanly (%s: %s).", type(error).__name__, error)
