"""Argument checks shared by cores, envs, agents and configs: one wording for one mistake."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int``; a ``ValueError`` naming ``name`` unless it is an integer >= ``minimum``.

    NumPy integers count (SB3 computes feature widths with NumPy); bools and floats do not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class ConfigError(ValueError):
    """A mistake in a config, an override or a command-line argument that the user can fix."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the option nearest ``name``, or ``""`` when none is near."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
