"""Run directories that are safe to share and survive damage: nothing loaded executes code, damaged
checkpoints are skipped, nothing non-finite is saved, configs are checked, one process per run."""

import base64
import hashlib
import io
import json
import logging
import pickle
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv

from ntm_rl.agents import NonFiniteError, RecurrentPPO
from ntm_rl.cli import main
from ntm_rl.config import ConfigError, config_from_dict
from ntm_rl.experiment import make_env, make_model
from ntm_rl.runs import MANIFEST, RunDirectory, is_finite
from ntm_rl.serialization import UnsafeModelError

TINY = {
    "name": "tiny",
    "env": {"id": "ntm_rl/TMaze-v0", "kwargs": {"corridor_length": 3}, "n_envs": 4, "normalize": True},
    "core": "gru",
    "core_kwargs": {"hidden_size": 8},
    "algo_kwargs": {"n_steps": 16, "batch_size": 32, "n_epochs": 1},
    "total_timesteps": 1024,
    "checkpoint_freq": 512,
    "torch_threads": 1,
    "eval": {"episodes": 2},
    "logging": {"progress_bar": False, "tensorboard": False},
}


def extend(run: Path, total_timesteps: int) -> Path:
    """Raise a run's budget, as a user does before resuming a finished run."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(config | {"total_timesteps": total_timesteps}))
    return run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, message: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.startswith("ntm-rl: error: ")]
    return code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished run (checkpoints at 512 and 1,024 steps, a final model), to copy and damage."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(config), "--runs-root", str(root / "runs")]) == 0
    (run,) = (root / "runs").iterdir()
    return run


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


# ------------------------------------------------------------------ nothing executes code
class Payload:
    """Unpickling this creates the file ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def reseal(directory: Path) -> None:
    """Rewrite a snapshot's manifest to match its (altered) files, as an attacker would."""
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"] = {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in manifest["files"]
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))


def plant_in_zip(path: Path, marker: Path, entry: str) -> None:
    """Replace one entry of a model zip by a payload: a pickled ``data`` key, or a ``.pth`` file."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    if entry == "data":
        data = json.loads(files["data"])
        data["observation_space"][":serialized:"] = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
        files["data"] = json.dumps(data).encode()
    else:
        buffer = io.BytesIO()
        torch.save({"payload": Payload(marker)}, buffer)
        files[entry] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)


def plant_in_npz(path: Path, marker: Path) -> None:
    np.savez(path, payload=np.array([Payload(marker)], dtype=object))  # an object array is a pickle


@pytest.mark.parametrize("where", ["data", "policy.pth", "vecnormalize.npz", "rng.npz", "old pickle checkpoint"])
def test_no_command_executes_a_payload_planted_in_a_loadable_file(run, tmp_path, capsys, where):
    marker = tmp_path / "payload-ran"
    snapshots = [run, run / "checkpoints" / "step_1024"]
    for snapshot in snapshots:
        if where in ("data", "policy.pth"):
            plant_in_zip(snapshot / "model.zip", marker, where)
        elif where == "old pickle checkpoint":
            (run / "checkpoints" / "step_4096.pkl").write_bytes(cloudpickle.dumps(Payload(marker)))
        else:
            plant_in_npz(snapshot / where, marker)
        reseal(snapshot)

    if where == "data":
        RecurrentPPO.load(run / "model.zip")  # the entry is rebuilt from its description, never unpickled
        assert not marker.exists()
        with pytest.raises(ValueError, match="not a Gymnasium space"):  # what SB3 does: the payload is live
            RecurrentPPO.load(run / "model.zip", trusted=True)
        assert marker.exists()
        marker.unlink()
    for argv in (["eval", run], ["inspect", run, "--out", tmp_path / "look"], ["eval", run / "model.zip"],
                 ["train", "--resume", extend(run, 2048)]):  # fmt: skip
        code, _, err = cli(capsys, *argv)
        assert code in (0, 2) and "Traceback" not in err, err
        assert not marker.exists(), f"{argv[0]} ran the payload in {where}"


def test_a_zip_not_written_by_ntm_rl_needs_trusted(tmp_path):
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16).save(tmp_path / "sb3")
    with pytest.raises(UnsafeModelError, match="was not saved by ntm-rl .* trusted=True"):
        RecurrentPPO.load(tmp_path / "sb3.zip")


def test_a_saved_agent_loads_back_without_unpickling(tmp_path):
    """Every pickled entry (spaces, schedules, classes in policy_kwargs, episode records) is rebuilt."""
    from stable_baselines3.common.utils import LinearSchedule

    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2)
    model = RecurrentPPO("MlpPolicy", env, n_steps=16, batch_size=32, learning_rate=LinearSchedule(1e-3, 1e-4, 0.5),
                         clip_range_vf=0.3, policy_kwargs=dict(core="lstm", core_kwargs=dict(hidden_size=8),
                                                               activation_fn=torch.nn.ReLU, net_arch=[16]))  # fmt: skip
    model.learn(512)
    model.save(tmp_path / "agent")
    loaded = RecurrentPPO.load(tmp_path / "agent", env=env)
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.policy_kwargs == model.policy_kwargs and loaded.lr_schedule(0.75) == pytest.approx(5.5e-4)
    assert loaded.lr_schedule(0.25) == pytest.approx(1e-4)
    assert loaded.clip_range_vf(1.0) == 0.3 and list(loaded.ep_info_buffer) == list(model.ep_info_buffer)
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[key], value)
    loaded.learn(64)


def test_a_policy_saved_alone_loads_back_without_unpickling(tmp_path):
    from ntm_rl.envs import TMaze
    from ntm_rl.vec import TorchVecEnvToSB3

    env = TorchVecEnvToSB3(TMaze(2, corridor_length=3))
    model = RecurrentPPO("MlpPolicy", env, n_steps=8, policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8),
                                                                         activation_fn=torch.nn.ReLU, net_arch=[16]))  # fmt: skip
    model.policy.save(tmp_path / "policy.pt")
    loaded = type(model.policy).load(tmp_path / "policy.pt")
    assert loaded.core_kwargs == {"hidden_size": 8} and loaded.activation_fn is torch.nn.ReLU
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    obs = env.reset()
    actions, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(actions, model.policy.predict(obs, deterministic=True)[0])

    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "parameters": Payload(marker)}, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError):
        type(model.policy).load(tmp_path / "bad.pt")
    assert not marker.exists()


# ----------------------------------------------------------------------- damaged checkpoints
def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:  # corrupted: bytes in the middle flipped
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :])


@pytest.mark.parametrize("name", ["model.zip", "vecnormalize.npz", "rng.npz", MANIFEST])
def test_resume_skips_a_damaged_newest_checkpoint(trained_run, tmp_path, capsys, caplog, name):
    caplog.set_level(logging.INFO)
    for how in ("truncated", "emptied", "corrupted"):
        run = Path(shutil.copytree(trained_run, tmp_path / how))
        damage(run / "checkpoints" / "step_1024" / name, how)
        code, out, err = cli(capsys, "train", "--resume", extend(run, 1536))
        assert code == 0, err
        assert "skipping a damaged checkpoint" in caplog.text and f"resuming {run} at 512 env steps" in caplog.text
        assert json.loads((run / "eval.json").read_text())["resumed_at"] == 512
        caplog.clear()


def test_no_whole_checkpoint_exits_2_with_one_line(run, capsys):
    for checkpoint in (run / "checkpoints").iterdir():
        damage(checkpoint / "model.zip", "truncated")
    code, _, err = cli(capsys, "train", "--resume", run)
    assert one_line_error(code, err, "holds no whole checkpoint")


def test_eval_falls_back_past_a_final_model_that_does_not_load(run, tmp_path, capsys, caplog):
    np.savez(run / "rng.npz", state=np.array([1, 2, 3], dtype=object))  # checksums resealed: whole but unloadable
    reseal(run)
    code, out, _ = cli(capsys, "eval", run)
    assert code == 0 and "skipping a damaged checkpoint or model" in caplog.text and "over 2 episodes" in out


def test_eval_and_inspect_fall_back_past_a_damaged_final_model(run, tmp_path, capsys, caplog):
    damage(run / "model.zip", "truncated")
    code, out, _ = cli(capsys, "eval", run)
    assert code == 0 and "the final model is damaged" in caplog.text and "over 2 episodes" in out
    code, _, err = cli(capsys, "eval", run / "model.zip")  # named explicitly: refused, not replaced
    assert one_line_error(code, err, "does not match its checksum")


def test_a_kill_between_files_leaves_a_checkpoint_that_is_skipped_and_cleaned(run, capsys, caplog):
    caplog.set_level(logging.INFO)
    (run / "checkpoints" / "step_1024" / MANIFEST).unlink()  # the files were written, the manifest was not
    code, _, _ = cli(capsys, "train", "--resume", extend(run, 1536))
    assert code == 0 and f"resuming {run} at 512 env steps" in caplog.text
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1024", "step_1536"]  # rewritten


# --------------------------------------------------------------------------- finite or nothing
class NonFiniteAt(gym.Wrapper):
    """An env whose ``step``-th step returns a NaN reward or an infinite observation."""

    def __init__(self, env: gym.Env, what: str, step: int = 20):
        super().__init__(env)
        self.what, self.step_at, self.steps = what, step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.step_at:
            if self.what == "reward":
                reward = float("nan")
            else:
                obs = np.full_like(obs, np.inf)
        return obs, reward, terminated, truncated, info


def nonfinite_env(what: str, bad_env: int = 1) -> DummyVecEnv:
    # Pendulum never terminates, so the bad observation is never a terminal one (which SB3 keeps
    # in infos, not in the rollout).
    env_id = "Pendulum-v1" if what == "observation" else "CartPole-v1"
    makers = [lambda: gym.make(env_id)] * 3
    makers[bad_env] = lambda: NonFiniteAt(gym.make(env_id), what)
    return DummyVecEnv(makers)


@pytest.mark.parametrize("what", ["reward", "observation"])
def test_a_nonfinite_reward_or_observation_stops_training_naming_it(what):
    model = RecurrentPPO("MlpPolicy", nonfinite_env(what), n_steps=32, batch_size=32, n_epochs=1, seed=0,
                         policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8)))  # fmt: skip
    with pytest.raises(NonFiniteError, match=f"non-finite {what} from env 1"):
        model.learn(256)
    assert is_finite(model)


def test_skip_update_drops_the_minibatches_that_a_nan_reward_spoils_and_goes_on():
    model = RecurrentPPO("MlpPolicy", nonfinite_env("reward"), n_steps=32, batch_size=32, n_epochs=1,
                         nan_policy="skip_update", policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8)))  # fmt: skip
    model.learn(384)
    assert model.num_timesteps == 384 and model.skipped_updates >= 1 and is_finite(model)


def test_a_checkpoint_is_written_only_from_finite_weights(tmp_path):
    config = config_from_dict(TINY)
    run = RunDirectory.create(config, tmp_path)
    model = make_model(config, make_env(config, 4), torch.device("cpu"))
    with torch.no_grad():
        next(model.policy.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="nothing was saved"):
        run.save_checkpoint(model, config)
    assert run.checkpoint_steps() == [] and not list(run.checkpoints.iterdir())


def test_the_cli_stops_on_a_nan_reward_in_one_line(tmp_path, capsys):
    gym.register("NaNRewardCartPole-v0", entry_point=lambda: NonFiniteAt(gym.make("CartPole-v1"), "reward"))
    config = TINY | {"env": {"id": "NaNRewardCartPole-v0", "n_envs": 2}, "checkpoint_freq": 16}
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(config))
    code, _, err = cli(capsys, "train", tmp_path / "nan.yaml", "--runs-root", tmp_path / "runs")
    assert one_line_error(code, err, "non-finite reward from env 0")


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo_kwargs.gamma=2", "algo_kwargs.gamma must be in [0, 1], got 2"),
        ("algo_kwargs.gamma=-1", "algo_kwargs.gamma must be in [0, 1], got -1"),
        ("algo_kwargs.gae_lambda=5", "algo_kwargs.gae_lambda must be in [0, 1]"),
        ("algo_kwargs.clip_range=-0.2", "algo_kwargs.clip_range must be > 0"),
        ("algo_kwargs.clip_range=lin_-0.2", "algo_kwargs.clip_range must be > 0"),
        ("algo_kwargs.max_grad_norm=-1", "algo_kwargs.max_grad_norm must be > 0"),
        ("algo_kwargs.learning_rate=.inf", "algo_kwargs.learning_rate must be a finite number, got inf"),
        ("algo_kwargs.ent_coef=.nan", "algo_kwargs.ent_coef must be a finite number, got nan"),
        ("name=../../x", "name must be one path component"),
        ("name=/tmp/x", "name must be one path component"),
        ("name=a\0b", "name must be one path component"),
        ("core_kwargs.hidden_size=1000000000", "GiB for its gru states"),
        ("env.n_envs=1000000000", "lower env.n_envs"),
    ],
)
def test_config_values_out_of_range_are_refused_in_one_line(tmp_path, capsys, override, message):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    code, _, err = cli(capsys, "train", tmp_path / "c.yaml", override, "--runs-root", tmp_path / "runs")
    assert one_line_error(code, err, message), err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert len(err) < 600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: a\nname: b\nenv: {id: ntm_rl/TMaze-v0}\n", "key 'name' appears twice"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not UTF-8 text"),
        (b"name: t\xe9st\n", "is not UTF-8 text"),
        (b"a: &a ['x','x','x','x','x','x','x','x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
         b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n", "YAML aliases (*name) are not allowed"),
        (b"name: x\n" + b"#" * (1 << 21), "a config is at most"),
    ],
)  # fmt: skip
def test_malformed_config_files_are_refused_in_one_line(tmp_path, capsys, content, message):
    (tmp_path / "c.yaml").write_bytes(content)
    code, _, err = cli(capsys, "train", tmp_path / "c.yaml", "--runs-root", tmp_path / "runs")
    assert one_line_error(code, err, message), err
    assert len(err) < 600


def test_an_edited_config_is_refused_on_resume_naming_the_keys(run, capsys):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    edited = saved | {"env": saved["env"] | {"kwargs": {"corridor_length": 5}}, "core_kwargs": {"hidden_size": 16}}
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    code, _, err = cli(capsys, "train", "--resume", run)
    assert one_line_error(code, err, "in core_kwargs.hidden_size, env.kwargs.corridor_length; only total_timesteps")
    (run / "config.yaml").write_text(yaml.safe_dump(saved | {"total_timesteps": 1536, "logging": {"wandb": False}}))
    assert cli(capsys, "train", "--resume", run)[0] == 0


def test_resume_without_a_checkpoint_directory_trains_and_saves(run, capsys):
    shutil.rmtree(run / "checkpoints")
    (run / MANIFEST).unlink()
    (run / "model.zip").unlink()
    code, out, err = cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert RunDirectory(run).checkpoint_steps() == [512, 1024]


def test_stray_files_among_the_checkpoints_are_ignored(run, capsys):
    (run / "checkpoints" / "step_final.zip").write_bytes(b"PK\x03\x04 not a checkpoint")
    (run / "checkpoints" / "step_99999.tmp").write_bytes(b"")
    (run / "checkpoints" / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", "--resume", extend(run, 1536))
    assert code == 0, err
    assert (run / "checkpoints" / "notes.txt").read_text() == "mine"
    assert RunDirectory(run).checkpoint_steps() == [1024, 1536]


# ------------------------------------------------------------------------------ one writer
def test_a_second_process_on_a_run_is_refused_in_one_line(run, capsys):
    (run / "lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))  # PID 1 is always alive
    code, _, err = cli(capsys, "train", "--resume", run)
    assert one_line_error(code, err, "is being trained by process 1 on")
    assert (run / "lock").exists()  # still the other process's


def test_a_stale_lock_is_taken_over_and_attempts_get_distinct_files(run, capsys, caplog):
    dead = subprocess.Popen(["true"])  # a PID that has just ended
    dead.wait()
    (run / "lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert cli(capsys, "train", "--resume", run)[0] == 0
    assert "removing the stale lock" in caplog.text and not (run / "lock").exists()
    assert cli(capsys, "train", "--resume", run)[0] == 0
    assert (run / "progress-resumed-1024.csv").exists() and (run / "progress-resumed-1024-2.csv").exists()


def test_a_run_name_that_leaves_the_runs_root_is_refused_from_python_too():
    with pytest.raises(ConfigError, match="name must be one path component"):
        config_from_dict(TINY | {"name": ".."})
