"""Experiment configs: YAML files checked against a schema before anything is built.

A config names an environment, an algorithm, a memory core and their keywords::

    name: tmaze_ntm
    env: {id: ntm_rl/TMaze-v0, kwargs: {corridor_length: 8}, n_envs: 32}
    algo: ppo
    core: ntm
    core_kwargs: {controller_size: 32, memory_size: 16, word_size: 8}
    algo_kwargs: {n_steps: 32, batch_size: 256, sequence_length: 16, learning_rate: 1.0e-3}
    total_timesteps: 70000

:func:`load_config` reads a file, applies ``key=value`` overrides (dotted keys, YAML values) and
checks every key and type: the fixed sections against the dataclasses below, the keyword
sections (``env.kwargs``, ``core_kwargs``, ``policy_kwargs``, ``algo_kwargs``) against the
signatures of the classes they are passed to. Any mistake raises :class:`ConfigError` naming the
key, the value and the fix (with the nearest valid name for a misspelt key).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import yaml
from stable_baselines3.common.utils import LinearSchedule

from ntm_rl.agents.ppo import MINIBATCHES
from ntm_rl.checks import ConfigError, did_you_mean
from ntm_rl.cores import CORES
from ntm_rl.policies import RecurrentActorCriticPolicy
from ntm_rl.registry import ALGORITHMS, env_class, import_gym_packages, parse_device
from ntm_rl.serialization import ACTIVATIONS

SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
"""Algorithm keywords that take a number or ``"lin_<start>"`` (linear decay to 0, as rl-zoo3)."""


MAX_CONFIG_BYTES = 1 << 20
"""Configs are short; a bigger file is a mistake (or an attack), refused before it is parsed."""


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but floats as YAML 1.2 writes them: ``1e-3`` and ``1e5`` are numbers
    (YAML 1.1, which PyYAML follows, wants a dot, ``1.0e-3``, and reads ``1e-3`` as text); a key
    given twice is refused rather than silently taking the last value; and aliases (``*name``) are
    refused, as a few lines of them can expand into gigabytes of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"YAML aliases (*name) are not allowed in configs (line {mark.line + 1}); "
                              "write the value out.")  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML's own error follows
            if key in seen:
                raise ConfigError(f"key {_short(key)} appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                  "keep one.")  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # _YamlLoader is a SafeLoader


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


@dataclass
class EnvConfig:
    """The training environment.

    :param id: a gymnasium id: ``ntm_rl/<Probe>-v0``, ``ntm_rl/CartPole-v0``, ``ntm_rl/Atari-v0``
        or any registered gymnasium env.
    :param kwargs: the env's keywords (difficulty, observation mode, game, ...).
    :param n_envs: environments stepped together.
    :param normalize: wrap in SB3's ``VecNormalize`` (observations and rewards).
    :param wrappers: gymnasium wrappers around each env that ``gym.make`` builds, innermost
        first, as rl-zoo3's ``env_wrapper``: a name, or ``{name: {keyword: value}}``. Names are
        ntm-rl's (``HideEntries``, ``GaussianNoise``, ``Flicker``, ``PreviousActionReward``) or
        the ``gymnasium.wrappers`` listed in ``ntm_rl.envs.wrappers.GYMNASIUM_WRAPPERS``; or an
        import path ``module.Class`` into a module that ``packages`` lists.
    :param packages: installed modules imported before the env is made, so that the gymnasium ids
        they register work as ``id`` (as rl-zoo3's ``--gym-packages``). Imported when a config is
        trained; when a run directory is read (``eval``, ``inspect``, ``--resume``), only if
        ``--gym-packages`` names them too.
    """

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 8
    normalize: bool = False
    wrappers: list[Any] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    """The evaluation at the end of training (and of ``ntm-rl eval``)."""

    episodes: int = 20
    deterministic: bool = True


@dataclass
class LoggingConfig:
    """Where training reports to.

    :param memory_metrics_freq: env steps between memory-metric records (NTM cores; 0: never).
    :param wandb_mode: ``"auto"`` is online when a wandb API key is configured, else offline.
    """

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "ntm-rl"
    wandb_mode: Literal["auto", "online", "offline"] = "auto"
    memory_metrics_freq: int = 10_000
    progress_bar: bool = True
    log_interval: int = 1


@dataclass
class ExperimentConfig:
    """One experiment: env, algorithm, core, budget, and how the run is kept."""

    name: str
    env: EnvConfig
    algo: Literal["ppo", "a2c"] = "ppo"
    policy: Literal["MlpPolicy", "CnnPolicy", "MultiInputPolicy"] = "MlpPolicy"
    core: Literal["ntm", "lstm", "gru"] = "ntm"
    core_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    total_timesteps: int = 100_000
    seed: int = 0
    device: str = "auto"
    torch_threads: int | None = None  # None: torch's default; small cores run fastest on 1
    checkpoint_freq: int = 10_000
    keep_checkpoints: int = 2
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: Iterable[str] = (), import_packages: bool = True) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, and validate the result.

    :param import_packages: import the config's ``env.packages``; ``False`` (a run directory's
        config) refuses those not imported already (see :func:`~ntm_rl.registry.import_gym_packages`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; give the path of a YAML file (see configs/).")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,} "
                          "(is it the right file?).")  # fmt: skip
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}); give a YAML config file.") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {_short(' '.join(str(error).split()), 300)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}.")
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data, import_packages)


def config_from_dict(data: dict[str, Any], import_packages: bool = True) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from plain data (a parsed YAML file)."""
    config = _build(ExperimentConfig, data, "")
    validate(config, import_packages)
    return config


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``data[a][b] = value`` for an override ``a.b=value``; the value is parsed as YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not key=value; write e.g. algo_kwargs.n_steps=64.")
    try:
        value = _load_yaml(text) if text else ""
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parents[: depth + 1])} is not a section.")
        node = child
    node[leaf] = value


def _unknown(key: str, options: Iterable[str]) -> ConfigError:
    options = sorted(options)
    return ConfigError(
        f"unknown config key {_short(key)}{did_you_mean(key.rsplit('.', 1)[-1][:100], options)}; "
        f"valid: {', '.join(options)}."
    )


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _check_type(key: str, value: Any, kind: Any) -> Any:
    """``value`` if it fits the annotation ``kind`` (ints pass as floats), else a ConfigError."""
    origin = typing.get_origin(kind)
    if origin is Literal:
        if not isinstance(value, Hashable) or value not in typing.get_args(kind):
            choices = ", ".join(repr(c) for c in typing.get_args(kind))
            raise ConfigError(
                f"{key} must be one of {choices}, got {_short(value)}"
                f"{did_you_mean(str(value)[:100], map(str, typing.get_args(kind)))}."
            )
        return value
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(kind):
            try:
                return _check_type(key, value, option)
            except ConfigError:
                continue
        names = " or ".join(_type_name(option) for option in typing.get_args(kind))
        raise ConfigError(f"{key} must be {names}, got {_short(value)} ({type(value).__name__}).")
    expected = origin or kind
    if expected is type(None):
        ok = value is None
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        hint = f" (write {int(value)})" if expected is int and isinstance(value, float) and value.is_integer() else ""
        raise ConfigError(f"{key} must be {_type_name(expected)}, got {_short(value)} ({type(value).__name__}){hint}.")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate the config dataclass ``cls`` from a mapping, checking keys and types."""
    section = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a mapping, got {_short(data)}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise _unknown(prefix + str(key), fields)
    values = {}
    for name, spec in fields.items():
        key = prefix + name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{section} is missing the required key {key!r}.")
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], data[name], key + ".")
        else:
            values[name] = _check_type(key, data[name], hints[name])
    return cls(**values)


def check_kwargs(section: str, kwargs: dict[str, Any], target: Callable, exclude: Iterable[str] = ()) -> None:
    """Check that ``kwargs`` are keywords of ``target`` (names, and types where the default shows one)."""
    parameters = {
        name: p
        for name, p in inspect.signature(target).parameters.items()
        if name not in set(exclude) and not name.startswith("_") and p.kind is not p.VAR_KEYWORD
    }
    for name, value in kwargs.items():
        if name not in parameters:
            raise _unknown(f"{section}.{name}", parameters)
        default = parameters[name].default
        if value is None and "None" in str(parameters[name].annotation):  # e.g. chrono_init: int | None
            continue
        if isinstance(default, bool | int | float | str) and not (section == "algo_kwargs" and name in SCHEDULE_KEYS):
            _check_type(f"{section}.{name}", value, float if type(default) is float else type(default))


def parse_schedule(key: str, value: Any) -> float | Callable[[float], float]:
    """A number, or ``"lin_<start>"``: a schedule from ``start`` down to 0 over training."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            start = float(value[4:])
        except ValueError:
            pass
        else:
            return LinearSchedule(start, 0.0, 1.0)
    raise ConfigError(f"algo_kwargs.{key} must be a number or 'lin_<start>' (e.g. 'lin_1e-3'), got {value!r}.")


def validate(config: ExperimentConfig, import_packages: bool = True) -> None:
    """Check the keyword sections and cross-field rules; raise :class:`ConfigError` on the first mistake.
    The config's ``env.packages`` are imported first (or, without ``import_packages``, must be)."""
    if not (isinstance(config.name, str) and RUN_NAME.fullmatch(config.name)):
        raise ConfigError(f"name must be one path component of letters, digits, '.', '_' and '-' (at most 100, "
                          f"not starting with '.' or '-'): it names the run directory; got {_short(config.name)}.")  # fmt: skip
    for name in ("total_timesteps", "checkpoint_freq", "keep_checkpoints", "env.n_envs", "eval.episodes"):
        value = operator.attrgetter(name)(config)
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}.")
    if config.torch_threads is not None and config.torch_threads < 1:
        raise ConfigError(f"torch_threads must be at least 1 or null, got {config.torch_threads}.")
    if config.logging.memory_metrics_freq < 0:
        raise ConfigError(
            f"logging.memory_metrics_freq must be >= 0 (0: off), got {config.logging.memory_metrics_freq}."
        )
    if config.logging.log_interval < 1:
        raise ConfigError(f"logging.log_interval must be at least 1, got {config.logging.log_interval}.")

    import_gym_packages(config.env.packages, "env.packages", import_packages)
    target = env_class(config.env.id)  # raises ConfigError with the nearest id
    if target is not None:
        # The command sets these: the batch size, the device, and training vs evaluation mode (Atari).
        check_kwargs("env.kwargs", config.env.kwargs, target, exclude=("num_envs", "device", "training"))
        if config.env.wrappers:
            raise ConfigError(f"env.wrappers wrap envs that gym.make builds; {config.env.id} is batched: use its "
                              "env.kwargs (e.g. observation: no_velocity) instead.")  # fmt: skip
    env_wrappers(config.env.wrappers, config.env.packages)  # checks names and keywords
    check_kwargs("core_kwargs", config.core_kwargs, CORES[config.core], exclude=("input_dim",))
    check_kwargs("policy_kwargs", config.policy_kwargs, RecurrentActorCriticPolicy,
                 exclude=("observation_space", "action_space", "lr_schedule", "core", "core_kwargs",
                          "features_extractor_class", "optimizer_class", "use_sde"))  # fmt: skip
    activation = config.policy_kwargs.get("activation_fn", "tanh")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"policy_kwargs.activation_fn must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    check_kwargs("algo_kwargs", config.algo_kwargs, ALGORITHMS[config.algo],
                 exclude=("policy", "env", "seed", "device", "policy_kwargs", "tensorboard_log", "verbose"))  # fmt: skip
    for key in SCHEDULE_KEYS:
        if key in config.algo_kwargs and config.algo_kwargs[key] is not None:
            parse_schedule(key, config.algo_kwargs[key])
    _check_ranges(config)
    _check_memory(config)
    parse_device(config.device)  # whether this machine has the device is checked where it is used


RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

ALGO_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "gamma": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "gae_lambda": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "learning_rate": ("> 0", lambda v: v > 0),
    "clip_range": ("> 0", lambda v: v > 0),
    "clip_range_vf": ("> 0 (or null: no value clipping)", lambda v: v > 0),
    "max_grad_norm": ("> 0", lambda v: v > 0),
    "target_kl": ("> 0 (or null: no early stop)", lambda v: v > 0),
    "ent_coef": (">= 0", lambda v: v >= 0),
    "vf_coef": (">= 0", lambda v: v >= 0),
    "rms_prop_eps": ("> 0", lambda v: v > 0),
}
"""The ranges of algorithm keywords that SB3 leaves unchecked (a schedule ``lin_<x>`` is checked at ``x``)."""


def _check_ranges(config: ExperimentConfig) -> None:
    """Finite numbers everywhere but ``env.kwargs`` (an env may take infinite bounds), and the
    algorithm keywords in their ranges."""

    def walk(key: str, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}.")
        if isinstance(value, dict):
            for child, item in value.items():
                walk(f"{key}.{child}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)

    for section in ("algo_kwargs", "core_kwargs", "policy_kwargs"):
        walk(section, getattr(config, section))
    for key, (allowed, ok) in ALGO_RANGES.items():
        value = config.algo_kwargs.get(key)
        if isinstance(value, str) and key in SCHEDULE_KEYS:
            value = parse_schedule(key, value).start
            if not math.isfinite(value):
                raise ConfigError(f"algo_kwargs.{key} must start at a finite number, got {config.algo_kwargs[key]!r}.")
        if isinstance(value, int | float) and not isinstance(value, bool) and not ok(value):
            raise ConfigError(f"algo_kwargs.{key} must be {allowed}, got {value}.")


def estimated_bytes(config: ExperimentConfig) -> int:
    """A lower bound on the memory a run needs for its cores' states: those stored in the rollout
    buffer and those kept for the backward pass of one minibatch (observations not counted)."""
    defaults = {name: p.default for name, p in inspect.signature(CORES[config.core]).parameters.items()}
    kwargs = defaults | config.core_kwargs
    if config.core == "ntm":
        heads = kwargs["num_read_heads"] + kwargs["num_write_heads"]
        floats = (kwargs["memory_size"] * (kwargs["word_size"] + heads) + kwargs["num_read_heads"] * kwargs["word_size"]
                  + 2 * kwargs["controller_size"])  # fmt: skip
    else:
        floats = 6 * kwargs["hidden_size"]  # state and gate activations per step
    algo = config.algo_kwargs
    n_steps = algo.get("n_steps", inspect.signature(ALGORITHMS[config.algo]).parameters["n_steps"].default)
    n_envs = config.env.n_envs
    sequence_length = algo.get("sequence_length") or n_steps
    batch = algo.get("batch_size") or (
        n_envs * n_steps if config.algo == "a2c" else -(-n_envs // MINIBATCHES) * n_steps
    )
    stored = n_envs * (n_steps // max(sequence_length, 1) + 2)
    return 4 * floats * (stored + batch) + 4 * 8 * n_envs * n_steps


def _check_memory(config: ExperimentConfig) -> None:
    """Refuse a config whose cores cannot fit in this machine's memory (one line, not an allocation error)."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: nothing to compare with
        return
    needed = estimated_bytes(config)
    if needed > available:
        raise ConfigError(
            f"this config needs at least {needed / 2**30:,.1f} GiB for its {config.core} states "
            f"(env.n_envs={config.env.n_envs}, core_kwargs={_short(config.core_kwargs)}), and this machine has "
            f"{available / 2**30:,.1f} GiB; lower env.n_envs, the core's size or algo_kwargs.n_steps."
        )


def env_wrappers(entries: list[Any], packages: Iterable[str] = ()) -> list[tuple[type, dict[str, Any]]]:
    """The wrapper classes and keywords that ``env.wrappers`` lists (checked; ConfigError otherwise).

    A wrapper is named by its name among ntm-rl's and gymnasium's (looked up, never imported), or
    by an import path ``module.Class`` into one of ``packages`` (the config's ``env.packages``,
    imported already under their rules, see :class:`EnvConfig`).
    """
    from ntm_rl.envs.wrappers import GYMNASIUM_WRAPPERS, NTM_RL_WRAPPERS, wrapper_class

    known = [*NTM_RL_WRAPPERS, *GYMNASIUM_WRAPPERS]
    packages = set(packages)
    wrappers = []
    for index, entry in enumerate(entries):
        name, kwargs = None, None
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            ((name, kwargs),) = entry.items()
            kwargs = {} if kwargs is None else kwargs
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise ConfigError(f"env.wrappers[{index}] must be a wrapper name or {{name: {{keyword: value}}}}, "
                              f"got {_short(entry)}.")  # fmt: skip
        module, _, attribute = name.rpartition(".")
        if module:
            if module not in packages:
                raise ConfigError(f"env.wrappers[{index}]: {_short(name)} is in module {_short(module)}, which "
                                  "env.packages must list for its wrappers to be used.")  # fmt: skip
            cls = getattr(sys.modules[module], attribute, None)
            if not (isinstance(cls, type) and issubclass(cls, gym.Wrapper)):
                raise ConfigError(f"env.wrappers[{index}]: {module} has no gymnasium wrapper class {attribute!r}.")
        else:
            cls = wrapper_class(name)
        if cls is None:
            raise ConfigError(f"env.wrappers[{index}]: unknown wrapper {_short(name)}{did_you_mean(name[:100], known)}; "
                              f"known: {', '.join(known)}, or module.Class of a module in env.packages.")  # fmt: skip
        check_kwargs(f"env.wrappers[{index}].{name}", kwargs, cls, exclude=("env",))
        wrappers.append((cls, dict(kwargs)))
    return wrappers


def to_yaml(config: ExperimentConfig) -> str:
    """The config as YAML, in field order (what a run directory keeps as config.yaml)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
