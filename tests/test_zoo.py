"""rl-zoo3 integration end to end: ``python -m ntm_rl.zoo`` train, enjoy and optimize with the real
rl-zoo3 on tiny budgets, the shipped hyperparameter files, the Optuna samplers, and sb3-contrib's
``ppo_lstm`` names."""

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import yaml

from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.envs import RepeatPrevious
from ntm_rl.vec import TorchVecEnvToSB3
from ntm_rl.zoo import ALGORITHMS, HYPERPARAMS_DIR, register
from ntm_rl.zoo.__main__ import main
from ntm_rl.zoo.samplers import (
    convert_ntm_a2c_params,
    convert_ntm_ppo_params,
    sample_ntm_a2c_params,
    sample_ntm_ppo_params,
)

rl_zoo3 = pytest.importorskip("rl_zoo3")  # the "zoo" extra, part of "dev"
import optuna  # noqa: E402  (comes with rl-zoo3)
from rl_zoo3.exp_manager import ExperimentManager  # noqa: E402
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER  # noqa: E402

PROBE = "ntm_rl/RepeatPrevious-v0"
RUN_NAME = "ntm_rl-RepeatPrevious-v0"  # rl-zoo3 names folders and files after the id with "/" as "-"
# The shipped entry with a smaller rollout (2 envs of 32 steps), so that a run takes a second.
TINY = ["-params", "n_envs:2", "n_steps:32", "--num-threads", "1", "--seed", "0"]


def zoo(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m ntm_rl.zoo <args>`` in ``cwd``."""
    result = subprocess.run([sys.executable, "-m", "ntm_rl.zoo", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_register_adds_agents_samplers_and_env_ids_idempotently():
    register()
    register()
    from rl_zoo3.train import ALGOS  # the table train() builds its --algo choices from

    assert ALGOS is rl_zoo3.ALGOS
    assert ALGOS["ntm_ppo"] is RecurrentPPO and ALGOS["ntm_a2c"] is RecurrentA2C
    assert HYPERPARAMS_SAMPLER["ntm_ppo"] is sample_ntm_ppo_params
    assert HYPERPARAMS_CONVERTER["ntm_a2c"] is convert_ntm_a2c_params
    assert PROBE in gym.registry
    assert ALGOS["ppo_lstm"].__module__.startswith("sb3_contrib")  # rl-zoo3's own entries stay


def _shipped_entries() -> list[tuple[str, str]]:
    entries = []
    for algo in ALGORITHMS:
        for env_id in yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text()):
            entries.append((algo, env_id))
    return entries


@pytest.mark.parametrize(("algo", "env_id"), _shipped_entries())
def test_shipped_entry_builds_its_agent_through_rl_zoo3(algo, env_id, tmp_path, one_torch_thread):
    """Every entry of the shipped files, read and preprocessed by rl-zoo3's own ExperimentManager,
    builds its agent with the entry's number of envs (which bounds batch_size)."""
    register()
    if env_id == "default":
        env_id = "CartPole-v1"
    elif env_id == "atari":
        pytest.importorskip("cv2", reason="SB3's AtariWrapper needs OpenCV")
        env_id = "PongNoFrameskip-v4"
    manager = ExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path), eval_freq=-1, seed=0, verbose=0,
                                config=str(HYPERPARAMS_DIR / f"{algo}.yml"))  # fmt: skip
    model, _ = manager.setup_experiment()
    try:
        assert isinstance(model, ALGORITHMS[algo])
        assert model.n_envs == manager.n_envs
        assert model.policy.core_name == "ntm"
    finally:
        model.env.close()


@pytest.mark.parametrize(
    ("algo", "sampler", "converter"),
    [("ntm_ppo", sample_ntm_ppo_params, convert_ntm_ppo_params), ("ntm_a2c", sample_ntm_a2c_params,
                                                                  convert_ntm_a2c_params)],
)  # fmt: skip
def test_every_sampled_trial_builds_a_valid_agent(algo, sampler, converter, one_torch_thread):
    """rl-zoo3 builds a trial's agent outside the try that prunes failures, so an invalid draw
    would end the study: 200 random draws, each built into its agent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    envs = {n_envs: TorchVecEnvToSB3(RepeatPrevious(num_envs=n_envs)) for n_envs in (1, 3, 16)}
    cores = set()
    for number in range(200):
        n_envs = list(envs)[number % len(envs)]
        trial = study.ask()
        hyperparams = sampler(trial, 0, n_envs, {})
        model = ALGORITHMS[algo]("MlpPolicy", envs[n_envs], device="cpu", **hyperparams)
        if algo == "ntm_ppo":
            assert model.n_steps % model.sequence_length == 0
            assert model.batch_size % model.sequence_length == 0
            assert model.batch_size <= model.n_steps * n_envs
        cores.add(model.policy.core_name)
        study.tell(trial, 0.0)
        # rl-zoo3 retrains a stored trial from its parameters alone (--trial-id): they convert back.
        assert converter(study.trials[-1].params) == hyperparams
    assert cores == {"ntm", "lstm", "gru"}


def test_train_then_enjoy_the_run_it_made(tmp_path):
    zoo(tmp_path, "train", "--algo", "ntm_ppo", "--env", PROBE, "-n", "64", "-f", "logs", *TINY)
    run = tmp_path / "logs" / "ntm_ppo" / f"{RUN_NAME}_1"
    model = RecurrentPPO.load(run / f"{RUN_NAME}.zip", device="cpu")  # ntm-rl's safe load: nothing unpickled
    # The shipped entry was used (no -conf given): its core sizes, with -params on top.
    assert model.policy.core.controller_size == 32 and model.policy.core.memory_size == 16
    assert model.n_envs == 2 and model.n_steps == 32

    # 50 steps: one whole 32-step episode of the trained agent.
    # Rendered, as a user runs it: render_mode="human" draws in a matplotlib window (headless here).
    result = zoo(tmp_path, "enjoy", "--algo", "ntm_ppo", "--env", PROBE, "-f", "logs", "-n", "50", "--num-threads", "1")
    assert f"{RUN_NAME}_1/{RUN_NAME}.zip" in result.stdout
    assert "Episode Length 32" in result.stdout


def test_optimize_runs_two_sampled_trials(tmp_path):
    zoo(tmp_path, "train", "--algo", "ntm_ppo", "--env", PROBE, "-n", "64", "-f", "logs", "-optimize",
        "--n-trials", "2", "--n-jobs", "1", "--sampler", "random", "--pruner", "none", "--n-evaluations", "1",
        "--eval-episodes", "2", "--no-optim-plots", "-params", "n_envs:1", "--num-threads", "1", "--seed", "0")  # fmt: skip
    (report,) = (tmp_path / "logs" / "ntm_ppo").glob("report_*.csv")
    with report.open() as file:
        trials = list(csv.DictReader(file))
    assert [trial["state"] for trial in trials] == ["COMPLETE", "COMPLETE"]
    assert all(float(trial["value"]) >= 0 for trial in trials)  # mean evaluation returns of the probe


def test_train_ntm_a2c(tmp_path):
    zoo(tmp_path, "train", "--algo", "ntm_a2c", "--env", PROBE, "-n", "64", "-f", "logs", *TINY)
    model = RecurrentA2C.load(tmp_path / "logs" / "ntm_a2c" / f"{RUN_NAME}_1" / f"{RUN_NAME}.zip", device="cpu")
    assert model.policy.core_name == "ntm" and model.num_timesteps == 64


def test_sb3_contrib_ppo_lstm_entry_trains_with_an_lstm_core(tmp_path):
    """rl-zoo3's own tuned ppo_lstm entry (MlpLstmPolicy, lstm_hidden_size=64, enable_critic_lstm,
    ortho_init=False, net_arch) runs unchanged as ntm_ppo."""
    conf = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo_lstm.yml"
    entry = yaml.safe_load(conf.read_text())["CartPoleNoVel-v1"]
    assert entry["policy"] == "MlpLstmPolicy" and "lstm_hidden_size=64" in entry["policy_kwargs"]
    # -n 256: one rollout of the entry's 8 envs x 32 steps.
    zoo(tmp_path, "train", "--algo", "ntm_ppo", "--env", "CartPoleNoVel-v1", "-conf", str(conf), "-n", "256",
        "-f", "logs", "--num-threads", "1", "--seed", "0")  # fmt: skip
    run = tmp_path / "logs" / "ntm_ppo" / "CartPoleNoVel-v1_1"
    model = RecurrentPPO.load(run / "CartPoleNoVel-v1.zip", device="cpu")  # no unpickling, not even the schedules
    assert model.learning_rate(0.5) == pytest.approx(0.0005) and model.clip_range(0.5) == pytest.approx(0.1)
    policy = model.policy
    assert policy.core_name == "lstm" and policy.core.hidden_size == 64
    assert not policy.shared_core  # enable_critic_lstm=True: the critic has an LSTM of its own
    assert not policy.ortho_init and policy.net_arch == {"pi": [64], "vf": [64]}
    assert policy.activation_fn is torch.nn.ReLU
    assert (run / "CartPoleNoVel-v1" / "vecnormalize.pkl").is_file()  # normalize: True, saved by rl-zoo3

    # Training goes on from the zip (-i), which ntm-rl loads without unpickling. Two rollouts: the
    # lin_ schedules are at 0 for the update after the last one.
    zoo(tmp_path, "train", "--algo", "ntm_ppo", "--env", "CartPoleNoVel-v1", "-conf", str(conf), "-n", "512",
        "-f", "logs", "--num-threads", "1", "--seed", "1", "-i", str(run / "CartPoleNoVel-v1.zip"))  # fmt: skip
    continued = RecurrentPPO.load(tmp_path / "logs" / "ntm_ppo" / "CartPoleNoVel-v1_2" / "CartPoleNoVel-v1.zip")
    assert continued.num_timesteps == 512  # rl-zoo3 counts the new run's steps
    assert not torch.equal(continued.policy.core.rnn.weight_hh_l0, model.policy.core.rnn.weight_hh_l0)

    # enjoy unpickles the VecNormalize statistics (rl-zoo3's own format).
    result = zoo(tmp_path, "enjoy", "--algo", "ntm_ppo", "--env", "CartPoleNoVel-v1", "-f", "logs", "-n", "50",
                 "--no-render", "--num-threads", "1")  # fmt: skip
    assert "CartPoleNoVel-v1_2/CartPoleNoVel-v1.zip" in result.stdout  # the latest run


def test_missing_rl_zoo3_is_one_line_naming_the_extra(tmp_path):
    # None in sys.modules makes `import rl_zoo3` fail as it does where rl-zoo3 is not installed.
    code = "import sys, runpy; sys.modules['rl_zoo3'] = None; runpy.run_module('ntm_rl.zoo', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code, "train", "--algo", "ntm_ppo"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and 'pip install "ntm-rl[zoo]"' in result.stderr


def test_unknown_command_names_the_valid_ones(capsys):
    assert main(["plot_train", "--algo", "ntm_ppo"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'plot_train'" in error and "train, enjoy" in error
