"""Saving and loading that never executes code from the file.

SB3 saves an agent as a zip whose ``data`` entry pickles (with cloudpickle) what JSON cannot
hold: the spaces, the schedules, the policy class, the classes in ``policy_kwargs`` and the
episode statistics. Unpickling runs whatever the file says, so a shared or downloaded model can
run code on the machine that loads it. ntm-rl's agents therefore write a second entry,
``ntm_rl.json``, into the same zip, which describes each pickled entry as data (a space by its
bounds, a schedule by its numbers, a class by a name from a fixed list). By default they load from
that description instead: every pickled entry is rebuilt from known types and handed to SB3 as
``custom_objects``, so SB3 unpickles nothing. The weights are ``.pth`` entries that SB3 already
reads with ``torch.load(weights_only=True)``. A zip without the description, or with a pickled
entry it does not cover, is refused unless the caller passes ``trusted=True``.

What else a run keeps (VecNormalize statistics, RNG states) is written here as NPZ and read with
``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
"""The activations a config names (``policy_kwargs.activation_fn``); saved models may name these too."""

MODEL_DESCRIPTION = "ntm_rl.json"
"""The zip entry that describes the pickled entries of SB3's ``data`` as plain data."""

FORMAT = 1

KNOWN_CLASSES: dict[str, type] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in [
        *ACTIVATIONS.values(),
        nn.Identity,
        nn.GELU,
        nn.SiLU,
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.RMSprop,
        torch.optim.SGD,
        FlattenExtractor,
        NatureCNN,
        CombinedExtractor,
    ]
}
"""The classes a model's ``policy_kwargs`` may name and still load safely (looked up, never imported)."""


class UnsafeModelError(ValueError):
    """A model file that cannot be loaded without unpickling (running) code from it."""


# ----------------------------------------------------------------------------- spaces
def _array(value: np.ndarray) -> Any:
    """An array as JSON: one number when every element is the same, else nested lists."""
    flat = np.unique(value)
    return flat[0].item() if flat.size == 1 else value.tolist()


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """``space`` as plain data (the space types SB3's policies accept)."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": space.dtype.str,
                "low": _array(space.low), "high": _array(space.high)}  # fmt: skip
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": space.dtype.str,
                "start": space.start.tolist()}  # fmt: skip
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": space.n if isinstance(space.n, int) else list(space.n)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, space_to_json(sub)] for key, sub in space.spaces.items()]}
    raise TypeError(f"cannot describe {type(space).__name__} spaces as data")


def space_from_json(data: Mapping[str, Any]) -> spaces.Space:
    """The space :func:`space_to_json` described."""
    kind = data["type"]
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(int(n) for n in data["shape"])
        low, high = (np.broadcast_to(np.asarray(data[k], dtype=dtype), shape) for k in ("low", "high"))
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(data["nvec"]), dtype=np.dtype(data["dtype"]),
                                    start=np.asarray(data["start"]))  # fmt: skip
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({str(key): space_from_json(sub) for key, sub in data["spaces"]})
    raise ValueError(f"unknown space type {kind!r}")


# ----------------------------------------------------------------- entries of SB3's data
def describe(value: Any, policy_aliases: Mapping[str, type]) -> dict[str, Any] | None:
    """One pickled entry of SB3's ``data`` as plain data, or ``None`` where that is not possible."""
    if isinstance(value, spaces.Space):
        try:
            return {"space": space_to_json(value)}
        except TypeError:
            return None
    if isinstance(value, FloatSchedule | ConstantSchedule | LinearSchedule) or _is_zoo_schedule(value):
        inner = value.value_schedule if isinstance(value, FloatSchedule) else value
        wrapped = isinstance(value, FloatSchedule)
        if isinstance(inner, ConstantSchedule):
            return {"schedule": {"constant": float(inner.val), "float_schedule": wrapped}}
        if isinstance(inner, LinearSchedule):
            linear = {"linear": inner.start, "end": inner.end, "end_fraction": inner.end_fraction}
            return {"schedule": linear | {"float_schedule": wrapped}}
        if _is_zoo_schedule(inner):  # the same function as SB3's LinearSchedule(start, 0, 1), rebuilt as that
            return {"schedule": {"linear": float(inner.initial_value), "float_schedule": wrapped}}
        return None
    if isinstance(value, type):
        alias = next((name for name, cls in policy_aliases.items() if cls is value), None)
        return None if alias is None else {"policy": alias}
    if isinstance(value, deque):
        items = list(value) if _is_json(list(value)) else []  # episode statistics: kept where they are plain data
        return {"deque": {"items": items, "maxlen": value.maxlen}}
    if isinstance(value, dict):
        try:
            return {"kwargs": _kwargs_to_json(value)}
        except TypeError:
            return None
    return None


def _is_zoo_schedule(value: Any) -> bool:
    """Whether ``value`` is rl-zoo3's ``lin_<start>`` schedule (``progress_remaining * start``),
    recognised by name, so that rl-zoo3 need not be installed."""
    return type(value).__module__ == "rl_zoo3.utils" and type(value).__qualname__ == "SimpleLinearSchedule"


def rebuild(description: Mapping[str, Any], policy_aliases: Mapping[str, type]) -> Any:
    """The object :func:`describe` described, built from known types only."""
    (kind, data), *rest = description.items()
    if rest:
        raise ValueError(f"an entry has more than one kind: {sorted(description)}")
    if kind == "space":
        return space_from_json(data)
    if kind == "schedule":
        if "constant" in data:
            inner = ConstantSchedule(float(data["constant"]))
        else:  # end and end_fraction: absent in files written before they were recorded, which decayed to 0
            inner = LinearSchedule(
                float(data["linear"]), float(data.get("end", 0.0)), float(data.get("end_fraction", 1.0))
            )
        return FloatSchedule(inner) if data["float_schedule"] else inner
    if kind == "policy":
        if data not in policy_aliases:
            raise ValueError(f"unknown policy {data!r}; known: {sorted(policy_aliases)}")
        return policy_aliases[data]
    if kind == "deque":
        return deque(data["items"], maxlen=data["maxlen"])
    if kind == "kwargs":
        return _kwargs_from_json(data)
    raise ValueError(f"unknown entry kind {kind!r}")


def _is_json(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _kwargs_to_json(value: Any) -> Any:
    if isinstance(value, type):
        name = f"{value.__module__}.{value.__qualname__}"
        if KNOWN_CLASSES.get(name) is not value:
            raise TypeError(f"class {name} is not among the classes ntm-rl rebuilds")
        return {":class:": name}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("keys must be strings")
        return {key: _kwargs_to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_kwargs_to_json(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} is not plain data")


def _kwargs_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {":class:"}:
            if value[":class:"] not in KNOWN_CLASSES:
                raise ValueError(f"unknown class {value[':class:']!r}")
            return KNOWN_CLASSES[value[":class:"]]
        return {key: _kwargs_from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_kwargs_from_json(item) for item in value]
    return value


def pickled_keys(data_json: str) -> list[str]:
    """The entries of SB3's ``data`` (its JSON text) that SB3 would unpickle."""
    data = json.loads(data_json)
    return [key for key, item in data.items() if isinstance(item, dict) and ":serialized:" in item]


def add_description(zip_bytes: bytes, model: Any) -> bytes:
    """SB3's zip of ``model`` with :data:`MODEL_DESCRIPTION` added (entries that cannot be
    described are left out: the zip then loads only with ``trusted=True``)."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        keys = pickled_keys(archive.read("data").decode())
    entries = {key: describe(getattr(model, key), model.policy_aliases) for key in keys}
    description = {"format": FORMAT, "algorithm": type(model).__name__,
                   "entries": {k: v for k, v in entries.items() if v is not None}}  # fmt: skip
    buffer = io.BytesIO(zip_bytes)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(MODEL_DESCRIPTION, json.dumps(description))
    return buffer.getvalue()


def safe_custom_objects(zip_bytes: bytes, algorithm: type, name: str,
                        given: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """``custom_objects`` for ``algorithm.load`` (SB3's) that replace every pickled entry of the
    zip, rebuilt from its description; :class:`UnsafeModelError` if some entry has none, and
    ``ValueError`` if another algorithm saved the zip.

    :param name: what the zip is called in messages (its path).
    :param given: the caller's own ``custom_objects`` (they need no description).
    """
    given = dict(given or {})
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            names = archive.namelist()
            keys = [k for k in pickled_keys(archive.read("data").decode()) if k not in given]
            described = json.loads(archive.read(MODEL_DESCRIPTION)) if MODEL_DESCRIPTION in names else None
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError, OSError, EOFError) as error:
        raise ValueError(f"{name} is not a whole model zip ({type(error).__name__}: {error})") from None
    if keys and described is None:
        raise UnsafeModelError(
            f"{name} was not saved by ntm-rl (it has no {MODEL_DESCRIPTION}), and loading it would unpickle "
            f"{', '.join(keys)}, which can run code: load it with trusted=True only if you trust its source."
        )
    saved_by = described.get("algorithm") if isinstance(described, dict) else None
    if saved_by is not None and saved_by != algorithm.__name__:
        raise ValueError(
            f"{name} was saved by {saved_by}; load it with {saved_by}.load, not {algorithm.__name__}.load."
        )
    entries = described.get("entries", {}) if isinstance(described, dict) else {}
    missing = [key for key in keys if key not in entries]
    if missing:
        raise UnsafeModelError(
            f"{name} holds pickled entries ntm-rl cannot rebuild safely ({', '.join(missing)}): load it with "
            "trusted=True only if you trust its source."
        )
    rebuilt = dict(given)
    for key in keys:
        try:
            rebuilt[key] = rebuild(entries[key], algorithm.policy_aliases)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"{name}: the description of {key!r} is damaged ({error})") from None
    return rebuilt


def policy_parameters_to_json(parameters: Mapping[str, Any]) -> str:
    """A policy's constructor parameters as JSON: spaces described, classes named from
    :data:`KNOWN_CLASSES` (``TypeError`` naming any other), the learning-rate schedule left out."""
    data = {}
    for key, value in parameters.items():
        if key == "lr_schedule":
            continue
        data[key] = (
            {"space": space_to_json(value)} if isinstance(value, spaces.Space) else {"value": _kwargs_to_json(value)}
        )
    return json.dumps(data)


def policy_parameters_from_json(text: str) -> dict[str, Any]:
    """The constructor parameters :func:`policy_parameters_to_json` wrote, built from known types only."""
    return {key: space_from_json(item["space"]) if "space" in item else _kwargs_from_json(item["value"])
            for key, item in json.loads(text).items()}  # fmt: skip


# ---------------------------------------------------------------------------------- NPZ
def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """``arrays`` as an uncompressed NPZ file's bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
    return buffer.getvalue()


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an NPZ file, refusing pickled (object) arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _running_stats(normalizer: VecNormalize) -> dict[str, RunningMeanStd]:
    """VecNormalize's running statistics by name: ``obs_rms`` (``obs_rms/<key>`` for Dict
    observations; none when observations are not normalised) and ``ret_rms``."""
    stats = {}
    if isinstance(normalizer.obs_rms, dict):
        stats = {f"obs_rms/{key}": rms for key, rms in normalizer.obs_rms.items()}
    elif normalizer.norm_obs:
        stats = {"obs_rms": normalizer.obs_rms}
    return stats | {"ret_rms": normalizer.ret_rms}


def normalizer_arrays(normalizer: VecNormalize) -> dict[str, np.ndarray]:
    """VecNormalize's running statistics, as arrays named ``obs_rms[/key]/mean`` and so on."""
    arrays = {}
    for name, rms in _running_stats(normalizer).items():
        arrays |= {f"{name}/mean": rms.mean, f"{name}/var": rms.var, f"{name}/count": np.float64(rms.count)}
    return arrays


def restore_normalizer(normalizer: VecNormalize, arrays: Mapping[str, np.ndarray]) -> None:
    """Put the statistics :func:`normalizer_arrays` saved into ``normalizer`` (shapes checked)."""
    for name, rms in _running_stats(normalizer).items():
        mean, var = arrays[f"{name}/mean"], arrays[f"{name}/var"]
        if mean.shape != rms.mean.shape or var.shape != rms.var.shape:
            raise ValueError(f"{name} has shape {mean.shape}, the env's observations {rms.mean.shape}")
        rms.mean, rms.var, rms.count = mean.astype(np.float64), var.astype(np.float64), float(arrays[f"{name}/count"])


def rng_arrays() -> dict[str, np.ndarray]:
    """The states of Python's, numpy's global and torch's generators, as arrays."""
    version, python_state, gauss_next = random.getstate()
    # SB3 seeds and draws from numpy's global (legacy) generator, so that is the state to keep.
    _, key, position, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002
    arrays = {
        "python/version": np.int64(version),
        "python/state": np.asarray(python_state, dtype=np.int64),
        "python/gauss_next": np.float64(np.nan if gauss_next is None else gauss_next),
        "numpy/key": key,
        "numpy/position": np.int64(position),
        "numpy/has_gauss": np.int64(has_gauss),
        "numpy/cached_gaussian": np.float64(cached_gaussian),
        "torch": torch.get_rng_state().numpy(),
    }
    if torch.cuda.is_available():
        arrays["cuda"] = torch.stack(torch.cuda.get_rng_state_all()).numpy()
    return arrays


def restore_rng(arrays: Mapping[str, np.ndarray]) -> None:
    """Set the generators to the states :func:`rng_arrays` saved."""
    gauss_next = float(arrays["python/gauss_next"])
    random.setstate((int(arrays["python/version"]), tuple(int(x) for x in arrays["python/state"]),
                     None if np.isnan(gauss_next) else gauss_next))  # fmt: skip
    np.random.set_state(("MT19937", arrays["numpy/key"].astype(np.uint32), int(arrays["numpy/position"]),  # noqa: NPY002
                         int(arrays["numpy/has_gauss"]), float(arrays["numpy/cached_gaussian"])))  # fmt: skip
    torch.set_rng_state(torch.from_numpy(arrays["torch"].astype(np.uint8)))
    if "cuda" in arrays and torch.cuda.is_available() and len(arrays["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(torch.from_numpy(arrays["cuda"].astype(np.uint8))))
