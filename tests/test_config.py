"""Experiment configs: every shipped config validates; overrides parse; mistakes name the fix."""

from pathlib import Path

import pytest
import torch
import yaml
from stable_baselines3.common.utils import LinearSchedule

from ntm_rl.config import ConfigError, apply_override, config_from_dict, load_config, parse_schedule
from ntm_rl.registry import resolve_device

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
MINIMAL = {"name": "t", "env": {"id": "ntm_rl/TMaze-v0"}}


def test_configs_ship_every_probe_with_every_core_and_the_control_and_atari_experiments():
    names = {path.stem for path in CONFIGS}
    probes = ["tmaze", "repeat_first", "repeat_previous", "copy", "associative_recall", "count_recall"]
    assert {f"{probe}_{core}" for probe in probes for core in ("ntm", "lstm", "gru")} <= names
    assert {"cartpole_novel_ntm", "pendulum_novel_ntm", "pong_standard_ntm", "pong_flicker_ntm"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.name == path.stem
    assert config.core in path.stem


def test_overrides_take_dotted_keys_and_yaml_values():
    data = {"env": {"id": "x"}}
    for override in ["env.n_envs=4", "core_kwargs.memory_size=32", "algo_kwargs.learning_rate=lin_3e-4",
                     "policy_kwargs.net_arch=[64, 64]", "env.normalize=true", "algo_kwargs.target_kl=0.02"]:  # fmt: skip
        apply_override(data, override)
    assert data["env"] == {"id": "x", "n_envs": 4, "normalize": True}
    assert data["core_kwargs"] == {"memory_size": 32}
    assert data["policy_kwargs"]["net_arch"] == [64, 64]
    assert data["algo_kwargs"] == {"learning_rate": "lin_3e-4", "target_kl": 0.02}


def test_exponents_are_numbers_in_files_and_overrides(tmp_path):
    """YAML 1.1 reads ``1e-3`` as text; ntm-rl reads it as YAML 1.2 does, a number."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(MINIMAL) + "algo_kwargs: {learning_rate: 1e-3, gamma: .99}\n")
    config = load_config(tmp_path / "run.yaml", ["algo_kwargs.ent_coef=1E-2", "algo_kwargs.clip_range=lin_2e-1"])
    assert config.algo_kwargs == {"learning_rate": 1e-3, "gamma": 0.99, "ent_coef": 0.01, "clip_range": "lin_2e-1"}
    assert load_config(tmp_path / "run.yaml", ["total_timesteps=100_000"]).total_timesteps == 100_000


def test_defaults_fill_in_and_ints_pass_as_floats():
    config = config_from_dict(MINIMAL | {"algo_kwargs": {"gamma": 1}})
    assert config.algo == "ppo" and config.core == "ntm" and config.env.n_envs == 8
    assert config.algo_kwargs["gamma"] == 1


def test_schedules():
    assert parse_schedule("learning_rate", 3e-4) == 3e-4
    schedule = parse_schedule("learning_rate", "lin_1e-3")
    assert isinstance(schedule, LinearSchedule) and schedule(1.0) == 1e-3 and schedule(0.5) == 5e-4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (MINIMAL | {"totl_timesteps": 5}, "unknown config key 'totl_timesteps' (did you mean 'total_timesteps'?)"),
        (MINIMAL | {"core_kwargs": {"memory_sise": 8}}, "'core_kwargs.memory_sise' (did you mean 'memory_size'?)"),
        (MINIMAL | {"algo_kwargs": {"n_step": 8}}, "'algo_kwargs.n_step' (did you mean 'n_steps'?)"),
        (MINIMAL | {"env": {"id": "ntm_rl/TMaze-v0", "kwargs": {"corridor": 3}}}, "did you mean 'corridor_length'?"),
        (MINIMAL | {"total_timesteps": "many"}, "total_timesteps must be int, got 'many' (str)"),
        (MINIMAL | {"total_timesteps": True}, "total_timesteps must be int, got True (bool)"),
        (MINIMAL | {"total_timesteps": 1e5}, "total_timesteps must be int, got 100000.0 (float) (write 100000)"),
        (MINIMAL | {"core_kwargs": {"memory_size": 1.5}}, "core_kwargs.memory_size must be int, got 1.5"),
        (MINIMAL | {"core": "transformer"}, "core must be one of 'ntm', 'lstm', 'gru', got 'transformer'"),
        (MINIMAL | {"algo_kwargs": {"learning_rate": "fast"}}, "must be a number or 'lin_<start>'"),
        (MINIMAL | {"policy_kwargs": {"activation_fn": "swish"}}, "activation_fn must be one of"),
        (
            {"name": "t", "env": {"id": "ntm_rl/TMaz-v0"}},
            "unknown env id 'ntm_rl/TMaz-v0' (did you mean 'ntm_rl/TMaze-v0'?)",
        ),
        ({"name": "t"}, "missing the required key 'env'"),
        (MINIMAL | {"env": "TMaze"}, "env must be a mapping"),
        (MINIMAL | {"total_timesteps": 0}, "total_timesteps must be at least 1, got 0"),
        (MINIMAL | {"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'"),
        (MINIMAL | {"device": "mps"}, "device must be 'auto', 'cpu' or 'cuda[:N]', got 'mps'"),
    ],
)
def test_mistakes_raise_a_config_error_that_names_the_key_and_the_fix(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert message in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_a_config_for_cuda_loads_anywhere_but_cannot_run_where_there_is_none():
    config = config_from_dict(MINIMAL | {"device": "cuda"})  # e.g. a run made on a GPU machine, evaluated here
    with pytest.raises(ConfigError, match="CUDA is not available here; use device=cpu or auto"):
        resolve_device(config.device)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(tmp_path / "ok.yaml", ["seed"])
