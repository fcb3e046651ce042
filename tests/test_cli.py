"""The ntm-rl command end to end: train, eval, inspect, list; resume after SIGKILL; wandb; user errors."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import yaml

from ntm_rl.agents import RecurrentPPO
from ntm_rl.cli import main
from ntm_rl.config import load_config
from ntm_rl.runs import RunDirectory
from ntm_rl.serialization import load_npz

TINY = {
    "name": "tiny",
    "env": {"id": "ntm_rl/TMaze-v0", "kwargs": {"corridor_length": 3}, "n_envs": 4},
    "core_kwargs": {"controller_size": 16, "memory_size": 8, "word_size": 4},
    "algo_kwargs": {"n_steps": 16, "batch_size": 32, "sequence_length": 8, "n_epochs": 2},
    "total_timesteps": 2048,
    "checkpoint_freq": 512,
    "torch_threads": 1,
    "eval": {"episodes": 5},
    "logging": {"memory_metrics_freq": 512, "progress_bar": False},
}


def write_config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY | changes))
    return path


def only_run(root: Path) -> Path:
    (run,) = root.iterdir()
    return run


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_eval_inspect_end_to_end(tmp_path, capsys):
    # The override comes after the flags: it must still reach the config.
    code, out, _ = run_cli(capsys, "train", str(write_config(tmp_path)), "--runs-root", str(tmp_path / "runs"),
                           "--seed", "3", "algo_kwargs.n_epochs=1")  # fmt: skip
    assert code == 0
    run = only_run(tmp_path / "runs")
    assert f"run written to {run}" in out and "evaluation: mean return" in out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 3 and config["algo_kwargs"]["n_epochs"] == 1
    result = json.loads((run / "eval.json").read_text())
    assert result["num_timesteps"] == 2048 and len(result["returns"]) == 5
    assert all(r in (0.0, 1.0) for r in result["returns"])
    assert (run / "model.zip").exists() and any((run / "tensorboard").iterdir())
    assert len((run / "monitor.csv").read_text().splitlines()) > 2 + 2048 // 4 // 2  # header lines + episodes
    progress = (run / "progress.csv").read_text()
    assert "memory/write_focus" in progress and "train/policy_gradient_loss" in progress
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1536", "step_2048"]  # keep_checkpoints=2
    assert sorted(p.name for p in (run / "checkpoints" / "step_2048").iterdir()) == [
        "manifest.json", "model.zip", "rng.npz"
    ]  # fmt: skip
    assert not (run / "lock").exists()
    assert (run / "plots" / "episode_0_weightings.png").stat().st_size > 5_000

    code, out, _ = run_cli(capsys, "eval", str(run), "--episodes", "7")
    assert code == 0 and "over 7 episodes (deterministic" in out
    assert len(json.loads(out.splitlines()[-1])["returns"]) == 7
    code, out, _ = run_cli(capsys, "eval", str(run / "checkpoints" / "step_1536" / "model.zip"), "--stochastic")
    assert code == 0 and "over 5 episodes (stochastic" in out
    config["eval"]["deterministic"] = False  # the run's config decides when no flag does
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(capsys, "eval", str(run))
    assert code == 0 and "over 5 episodes (stochastic" in out

    code, out, _ = run_cli(capsys, "inspect", str(run), "--episodes", "2", "--out", str(tmp_path / "look"))
    assert code == 0 and "wrote 7 files" in out and "write_focus" in out
    for name in ["episode_0_weightings.png", "episode_0_heads.png", "episode_1_weightings.png", "episode_1_heads.png"]:
        assert (tmp_path / "look" / name).read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tmp_path / "look" / "metrics.json").read_text())) == 2


def test_list_shows_envs_cores_and_configs(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "ntm_rl/TMaze-v0" in out and "corridor_length=10" in out and "ntm_rl/Atari-v0" in out
    assert "cores: ntm, lstm, gru" in out and "tmaze_ntm.yaml" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{config}", "core_kwargs.memory_sise=8"], "did you mean 'memory_size'?"),
        (["train", "{config}", "total_timesteps=lots"], "total_timesteps must be int, got 'lots'"),
        (["train", "{config}", "env.id=ntm_rl/Tmaze-v0"], "unknown env id 'ntm_rl/Tmaze-v0'"),
        (["train", "{tmp}/nothing.yaml"], "does not exist"),
        (["train", "{config}", "seed"], "is not key=value"),
        (["train", "{config}", "algo_kwargs.batch_size=20"], "must be a multiple of sequence_length"),
        (["train"], "train needs a CONFIG file"),
        (["train", "{config}", "--resume", "{tmp}"], "--resume continues a run with its saved config"),
        (["eval", "{tmp}/no_run"], "does not exist"),
        (["eval", "{tmp}"], "no config.yaml in or above"),
        (["eval", "{tmp}", "--episodes", "0"], "--episodes must be at least 1"),
        (["eval", "{tmp}", "--episodes", "many"], "invalid int value: 'many'"),
        (["train", "{config}", "policy=CnnPolicy"], "policy 'CnnPolicy' does not fit ntm_rl/TMaze-v0's observations"),
        (["train", "{config}", "--runs-root", "{config}/runs"], "Not a directory"),
        (["eval", "{tmp}/fake_run/model.zip"], "fake_run has no manifest.json (a save that did not finish)"),
        (["inspect", "{tmp}/fake_run", "--out", "{config}"], "has no model or checkpoint that loads"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "{config}", "--seed", "1", "--sed", "2"], "unrecognized arguments: --sed 2"),
        (["train", "{config}", "algo_kwargs.sequence_length=0"], "sequence_length must be an integer >= 1, got 0"),
        (["train", "{config}", "device=mps"], "device must be 'auto', 'cpu' or 'cuda[:N]', got 'mps'"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys, argv, message):
    config = write_config(tmp_path)
    (tmp_path / "fake_run").mkdir()  # a run directory whose model is not a zip
    (tmp_path / "fake_run" / "config.yaml").write_text(config.read_text())
    (tmp_path / "fake_run" / "model.zip").write_text("not a zip")
    argv = [a.format(config=config, tmp=tmp_path) for a in argv]
    if argv[0] == "train" and "--runs-root" not in argv:
        argv += ["--runs-root", str(tmp_path / "runs")]
    try:
        code, out, err = run_cli(capsys, *argv)
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("ntm-rl: error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # no run left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_where_there_is_none(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", str(write_config(tmp_path)), "--device", "cuda")
    assert code == 2 and "CUDA is not available here" in err and len(err.splitlines()) == 1


def test_inspect_of_an_lstm_agent_says_it_needs_an_ntm(tmp_path, capsys):
    config = write_config(tmp_path, core="lstm", core_kwargs={"hidden_size": 8}, total_timesteps=64)
    assert run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"))[0] == 0
    code, _, err = run_cli(capsys, "inspect", str(only_run(tmp_path / "runs")))
    assert code == 2 and "inspect needs an NTM core, this agent's is 'lstm'" in err


def test_sigkill_after_a_checkpoint_then_resume_finishes_the_run(tmp_path):
    config = write_config(tmp_path, total_timesteps=12_288, checkpoint_freq=1024, env=TINY["env"] | {"normalize": True})
    command = [sys.executable, "-m", "ntm_rl.cli", "train", str(config), "--runs-root", str(tmp_path / "runs")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        runs = list((tmp_path / "runs").glob("*/checkpoints/step_*/manifest.json"))
        if runs:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run = only_run(tmp_path / "runs")
    assert not (run / "model.zip").exists()
    saved_config = (run / "config.yaml").read_text()
    whole = [p.parent for p in (run / "checkpoints").glob("*/manifest.json")]
    for checkpoint in whole:  # each one that has its manifest loads
        assert zipfile.ZipFile(checkpoint / "model.zip").testzip() is None
        assert RecurrentPPO.load(checkpoint / "model.zip").num_timesteps == int(checkpoint.name.split("_")[1])
    killed_at = max(int(p.name.split("_")[1]) for p in whole)
    checkpoint_count = load_npz(run / "checkpoints" / f"step_{killed_at}" / "vecnormalize.npz")["obs_rms/count"]

    resumed = subprocess.run([sys.executable, "-m", "ntm_rl.cli", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at" in resumed.stderr and "after 12,288 env steps" in resumed.stdout
    result = json.loads((run / "eval.json").read_text())
    assert result["resumed_at"] == killed_at >= 1024 and result["num_timesteps"] == 12_288
    assert (run / "config.yaml").read_text() == saved_config
    first_logged = (run / f"progress-resumed-{result['resumed_at']}.csv").read_text().splitlines()
    column = first_logged[0].split(",").index("time/total_timesteps")
    assert int(first_logged[1].split(",")[column]) == result["resumed_at"] + 64  # counting on, not from 0
    assert not list((run / "checkpoints").glob("*/*.tmp")) and not (run / "lock").exists()
    # The normalisation statistics went on from the checkpoint's, not from scratch.
    final_count = load_npz(run / "vecnormalize.npz")["obs_rms/count"]
    assert checkpoint_count >= killed_at and final_count >= checkpoint_count + (12_288 - killed_at)


def test_resuming_a_run_without_a_checkpoint_keeps_the_earlier_logs(tmp_path, capsys):
    run = RunDirectory.create(load_config(write_config(tmp_path, total_timesteps=512)), tmp_path / "runs")
    (run.root / "monitor.csv").write_text("the attempt that left no checkpoint\n")
    (run.root / "progress.csv").write_text("the attempt that left no checkpoint\n")
    code, out, _ = run_cli(capsys, "train", "--resume", str(run.root))
    assert code == 0 and "after 512 env steps" in out
    for name in ("monitor.csv", "progress.csv"):
        assert (run.root / name).read_text() == "the attempt that left no checkpoint\n"
    assert (run.root / "resumed-0.monitor.csv").exists() and (run.root / "progress-resumed-0.csv").exists()


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))


def test_wandb_without_a_key_runs_offline_and_writes_its_files(tmp_path, capsys, no_wandb_key):
    config = write_config(tmp_path, total_timesteps=256)
    assert run_cli(capsys, "train", str(config), "--wandb", "--runs-root", str(tmp_path / "runs"))[0] == 0
    (offline,) = (only_run(tmp_path / "runs") / "wandb").glob("offline-run-*")
    (log,) = offline.glob("*.wandb")
    assert log.stat().st_size > 0
    assert len(list(offline.glob("files/media/images/memory/*.png"))) == 2  # the memory plots


def test_a_run_whose_wandb_fails_to_start_still_trains(tmp_path, capsys, caplog, no_wandb_key):
    config = write_config(tmp_path, total_timesteps=256)
    code, out, _ = run_cli(capsys, "train", str(config), "logging.wandb=true", "logging.wandb_mode=online",
                           "--runs-root", str(tmp_path / "runs"))  # fmt: skip
    assert code == 0 and "evaluation: mean return" in out
    assert "wandb did not start (UsageError" in caplog.text and "training goes on without it" in caplog.text


def test_a_checkpoint_holds_optimiser_normalisation_and_rng_states(tmp_path):
    from ntm_rl.config import config_from_dict
    from ntm_rl.experiment import make_env, make_model
    from ntm_rl.serialization import restore_rng

    config = config_from_dict(TINY | {"env": TINY["env"] | {"normalize": True}})
    run = RunDirectory.create(config, tmp_path)
    model = make_model(config, make_env(config, 4), torch.device("cpu"))
    model.learn(256)
    path = run.save_checkpoint(model, config)
    expected_draw = torch.rand(3)  # the draw after the checkpoint's RNG state

    directory, manifest = next(run.whole_checkpoints())
    loaded = RecurrentPPO.load(directory / "model.zip")
    assert directory / "model.zip" == path and loaded.num_timesteps == manifest["num_timesteps"] == 256
    saved_optimizer, optimizer = loaded.policy.optimizer.state_dict(), model.policy.optimizer.state_dict()
    for key, value in optimizer["state"][0].items():
        torch.testing.assert_close(saved_optimizer["state"][0][key], value)
    normalizer, statistics = model.get_vec_normalize_env(), load_npz(directory / "vecnormalize.npz")
    assert statistics["obs_rms/count"] == normalizer.obs_rms.count > 256
    torch.testing.assert_close(torch.as_tensor(statistics["obs_rms/mean"]), torch.as_tensor(normalizer.obs_rms.mean))
    restore_rng(load_npz(directory / "rng.npz"))
    torch.testing.assert_close(torch.rand(3), expected_draw)


def test_progress_bar_reports_steps_rate_and_return():
    import io

    from ntm_rl.callbacks import ProgressBar
    from ntm_rl.envs import TMaze
    from ntm_rl.vec import TorchVecEnvToSB3

    model = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(TMaze(4, corridor_length=3)), n_steps=16, batch_size=32,
                         sequence_length=8, n_epochs=1, policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8)))  # fmt: skip
    stream = io.StringIO()  # not a terminal: one line per tenth, and the last
    model.learn(640, callback=ProgressBar(640, stream=stream))
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("[" + "#" * 30 + "] 640/640 steps")
    assert "steps/s | mean return " in lines[-1] and "mean return -" not in lines[-1]


def test_sb3_progress_bar_runs(capsys):
    from ntm_rl.envs import TMaze
    from ntm_rl.vec import TorchVecEnvToSB3

    model = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(TMaze(4, corridor_length=3)), n_steps=16,
                         policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8)))  # fmt: skip
    model.learn(128, progress_bar=True)  # SB3's bar, on tqdm and rich (dependencies of ntm-rl)
    assert model.num_timesteps == 128


def test_gym_packages_make_a_third_party_env_reachable(tmp_path, capsys, monkeypatch):
    (tmp_path / "third_party_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('ThirdParty/CartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv', "
        "max_episode_steps=50)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path, env={"id": "ThirdParty/CartPole-v0", "n_envs": 2}, core="gru",
                          core_kwargs={"hidden_size": 8}, total_timesteps=64)  # fmt: skip
    code, _, err = run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and "env.packages (or --gym-packages) imports a package that registers others" in err
    code, _, err = run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"),
                           "--gym-packages", "third_party_envs")  # fmt: skip
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", str(only_run(tmp_path / "runs")), "--gym-packages", "third_party_envs")
    assert code == 0 and "over 5 episodes" in out
    code, _, err = run_cli(capsys, "eval", str(only_run(tmp_path / "runs")), "--gym-packages", "no_such_envs")
    assert code == 2 and "--gym-packages no_such_envs: No module named 'no_such_envs'" in err


def test_env_packages_are_imported_for_a_config_but_not_for_a_run_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "more_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('More/CartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv', "
        "max_episode_steps=50)\n"
        "class Scaled(gym.ObservationWrapper):\n"
        "    def __init__(self, env, scale=1.0):\n"
        "        super().__init__(env)\n"
        "        self.scale = scale\n"
        "    def observation(self, observation):\n"
        "        return observation * self.scale\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "more_envs", raising=False)
    env = {"id": "More/CartPole-v0", "n_envs": 2, "packages": ["more_envs"],
           "wrappers": [{"more_envs.Scaled": {"scale": 0.5}}, "FlattenObservation"]}  # fmt: skip
    config = write_config(tmp_path, env=env, core="gru", core_kwargs={"hidden_size": 8}, total_timesteps=64)
    code, _, err = run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"))
    assert code == 0, err
    for wrapper, fix in (({"more_envs.Scaled": {"scal": 0.5}}, "unknown config key 'env.wrappers[0].more_envs.Scaled.scal'"),
                         ("more_envs.Nothing", "more_envs has no gymnasium wrapper class 'Nothing'"),
                         ("os.path.Wrapper", "is in module 'os.path', which env.packages must list")):  # fmt: skip
        bad = write_config(tmp_path, env=env | {"wrappers": [wrapper]})
        code, _, err = run_cli(capsys, "train", str(bad), "--runs-root", str(tmp_path / "runs"))
        assert code == 2 and fix in err, err
    gym.registry.pop("More/CartPole-v0")
    monkeypatch.delitem(sys.modules, "more_envs")  # as in a new process that reads the run
    run = str(only_run(tmp_path / "runs"))
    code, _, err = run_cli(capsys, "eval", run)
    assert code == 2 and "env.packages names 'more_envs', which is not imported when a run directory is read; " \
        "give --gym-packages more_envs" in err  # fmt: skip
    code, out, err = run_cli(capsys, "eval", run, "--gym-packages", "more_envs")
    assert code == 0 and "over 5 episodes" in out, err
    for name, fix in (("pip.__main__", "not a module name"), ("no_such_envs", "No module named 'no_such_envs'")):
        bad = write_config(tmp_path, env={"id": "CartPole-v1", "packages": [name]})
        code, _, err = run_cli(capsys, "train", str(bad), "--runs-root", str(tmp_path / "runs"))
        assert code == 2 and "env.packages" in err and fix in err, err


def test_env_wrappers_make_a_gymnasium_env_partially_observable(tmp_path, capsys):
    wrappers = [{"HideEntries": {"indices": [1, 3]}}, {"TimeLimit": {"max_episode_steps": 40}}, "PreviousActionReward"]
    config = write_config(tmp_path, env={"id": "CartPole-v1", "n_envs": 2, "wrappers": wrappers}, core="gru",
                          core_kwargs={"hidden_size": 8}, total_timesteps=64)  # fmt: skip
    code, _, err = run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"))
    assert code == 0, err
    model = RecurrentPPO.load(only_run(tmp_path / "runs") / "model.zip")
    assert model.observation_space.shape == (2 + 2 + 1,)  # x and theta, then the one-hot action and the reward
    result = json.loads((only_run(tmp_path / "runs") / "eval.json").read_text())
    assert max(result["returns"]) <= 40


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"id": "CartPole-v1", "wrappers": ["Flickr"]}, "unknown wrapper 'Flickr' (did you mean 'Flicker'?)"),
        ({"id": "CartPole-v1", "wrappers": [{"Flicker": {"probability": 0.5}}]}, "env.wrappers[0].Flicker.probability"),
        ({"id": "CartPole-v1", "wrappers": [{"Flicker": 0.5}]}, "must be a wrapper name or {name: {keyword: value}}"),
        ({"id": "CartPole-v1", "wrappers": ["TransformReward"]}, "unknown wrapper 'TransformReward'"),
        ({"id": "ntm_rl/TMaze-v0", "wrappers": ["Flicker"]}, "ntm_rl/TMaze-v0 is batched: use its env.kwargs"),
    ],
)
def test_env_wrapper_mistakes_are_one_line(tmp_path, capsys, env, message):
    config = write_config(tmp_path, env=env, core="gru", core_kwargs={"hidden_size": 8})
    code, _, err = run_cli(capsys, "train", str(config), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
