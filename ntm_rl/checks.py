"""Argument checks shared by cores, envs and agents: one wording for one mistake."""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int``; a ``ValueError`` naming ``name`` unless it is an integer >= ``minimum``.

    NumPy integers count (SB3 computes feature widths with NumPy); bools and floats do not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)
