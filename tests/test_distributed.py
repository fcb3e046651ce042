"""Data-parallel training over torch.distributed (gloo, 2 processes on the CPU), and sweeps.

- 2 processes with n envs each compute the gradients of 1 process with 2n envs, given the same data;
- VecNormalize statistics merge into those of every process's samples;
- ``ntm-rl train --nproc 2``: one run directory written by rank 0, resumable with the same N only;
- a killed process ends the job with a one-line message, and the run resumes from its checkpoint;
- ``ntm-rl sweep``: seeds and values as independent runs, K at a time.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import test_cli  # the sibling test module (tests/ is on pytest's path)
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from ntm_rl import distributed
from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.cli import main
from ntm_rl.cores.state import index_state
from ntm_rl.envs import TMaze
from ntm_rl.runs import RunDirectory, read_manifest
from ntm_rl.serialization import load_npz
from ntm_rl.sweep import expand_grid, parse_seeds, run_sweep, split_values
from ntm_rl.vec import TorchVecEnvToSB3

CLI = [sys.executable, "-m", "ntm_rl.cli"]
# test_cli's tiny T-maze run, without tensorboard files.
TINY = test_cli.TINY | {"logging": {"progress_bar": False, "tensorboard": False}}
N_ENVS, N_STEPS = 2, 16


def _agent(algo: type, n_envs: int):
    env = TorchVecEnvToSB3(TMaze(num_envs=n_envs, corridor_length=3))
    kwargs = dict(n_steps=N_STEPS, learning_rate=0.0, max_grad_norm=1e9, seed=0, device="cpu",
                  policy_kwargs=dict(core="ntm", core_kwargs=dict(controller_size=16, memory_size=8, word_size=4)))  # fmt: skip
    if algo is RecurrentPPO:
        kwargs |= dict(n_epochs=1, batch_size=n_envs * N_STEPS)  # one minibatch: the whole rollout
    return algo("MlpPolicy", env, **kwargs)


def _process(rank: int, store: str, algo_name: str) -> None:
    """One of two processes: its gradients on half of a rollout, against one process's on all of it."""
    torch.set_num_threads(1)
    algo = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}[algo_name]
    # The reference, alone: one rollout of 2 * N_ENVS envs and the gradients of its update (lr 0
    # keeps the weights, and the gradients stay in .grad).
    whole = _agent(algo, 2 * N_ENVS)
    whole.learn(2 * N_ENVS * N_STEPS)
    expected = [p.grad.clone() for p in whole.policy.parameters()]
    # This process's half of the same rollout, in an agent of N_ENVS envs.
    half = _agent(algo, N_ENVS)
    for mine, theirs in zip(half.policy.parameters(), whole.policy.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    envs = slice(rank * N_ENVS, (rank + 1) * N_ENVS)
    source, target = whole.rollout_buffer, half.rollout_buffer
    for name in ("observations", "actions", "rewards", "values", "log_probs", "advantages", "returns",
                 "episode_starts"):  # fmt: skip
        setattr(target, name, getattr(source, name)[:, envs].clone())
    target.states = [index_state(s, envs) for s in source.states]
    target.burn_in_states, target.pos = [], source.pos
    half.set_logger(Logger(None, []))
    half.train()  # alone, half the rollout gives other gradients: the check below is not vacuous
    assert any(
        not torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(half.policy.parameters(), expected, strict=True)
    )
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        half.train()  # with the other process: averaged gradients, global advantage statistics
        for got, want in zip((p.grad for p in half.policy.parameters()), expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

        # A parameter no process used keeps no gradient (the optimiser skips it, as alone).
        used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
        (used * (rank + 1)).sum().backward()
        assert distributed.average_gradients([used, unused], torch.tensor(float(rank))) == 0.5
        assert torch.equal(used.grad, torch.full((2,), 1.5)) and unused.grad is None

        # Running statistics: each process adds its own samples to a shared start.
        samples = np.arange(12.0).reshape(6, 2) * (rank + 1)
        stats = RunningMeanStd(shape=(2,))
        stats.update(np.ones((3, 2)))  # the statistics both processes agreed on
        baseline = [distributed.running_stats_sums(stats)]
        stats.update(samples)
        distributed.merge_running_stats([stats], baseline)
        reference = RunningMeanStd(shape=(2,))
        reference.update(np.ones((3, 2)))
        reference.update(np.concatenate([np.arange(12.0).reshape(6, 2), 2 * np.arange(12.0).reshape(6, 2)]))
        np.testing.assert_allclose(stats.mean, reference.mean, rtol=1e-9)
        np.testing.assert_allclose(stats.var, reference.var, rtol=1e-9)
        assert stats.count == pytest.approx(reference.count)

        # Through an agent: each process's envs play their own episodes, and after every rollout
        # both hold the statistics of all the observations (2 x 2 first ones, then 128 steps).
        env = VecNormalize(VecMonitor(TorchVecEnvToSB3(TMaze(num_envs=2, corridor_length=3))))
        agent = RecurrentPPO("MlpPolicy", env, n_steps=16, seed=0, device="cpu",
                             policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=8)))  # fmt: skip
        env.seed(100 * rank)
        agent.learn(128)
        means = distributed.all_gather_json(env.obs_rms.mean.tolist())
        assert means[0] == means[1] and env.obs_rms.count == pytest.approx(4 + 128, abs=1e-3)

        assert distributed.all_gather_json({"rank": rank}) == [{"rank": 0}, {"rank": 1}]
        assert distributed.broadcast_json("from 0" if rank == 0 else None) == "from 0"
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_two_processes_compute_the_gradients_of_one_with_twice_the_envs(tmp_path, algo):
    mp.spawn(_process, args=(str(tmp_path / "store"), algo), nprocs=2)


def _config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY | changes))
    return path


def _cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_train_with_two_processes_writes_one_run_and_resumes_with_the_same_count(tmp_path, capsys):
    # With VecNormalize, whose statistics the processes merge, and episodes that reach rank 0 through
    # SB3's VecMonitor (a bare device env's come from the agent: the test below).
    config = _config(tmp_path, total_timesteps=1024, env=TINY["env"] | {"normalize": True})
    done = _cli("train", str(config), "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluation: mean return" in done.stdout
    (root,) = (tmp_path / "runs").iterdir()
    run = RunDirectory(root)
    # Rank 0 alone wrote it: one progress file, one set of checkpoints, no lock left.
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoints", "config.yaml", "eval.json", "manifest.json", "model.zip", "monitor.csv", "plots",
        "progress.csv", "rank1.monitor.csv", "rng.npz", "vecnormalize.npz",
    ]  # fmt: skip
    # Every process's observations, counted once: 2 x 4 first observations, then 1024 steps.
    statistics = load_npz(root / "vecnormalize.npz")
    assert statistics["obs_rms/count"] == pytest.approx(8 + 1024, abs=1e-3)
    assert statistics["ret_rms/count"] == pytest.approx(1024, abs=1e-3)
    # Rank 0 wrote every process's random state and episodes; steps count both processes'.
    for step in run.checkpoint_steps():
        manifest = read_manifest(run.checkpoint_dir(step))
        assert manifest["world_size"] == 2
        assert load_npz(run.checkpoint_dir(step) / "rng_rank1.npz")["torch"].shape == (5056,)
    assert run.checkpoint_steps()[-1] == 1024
    assert json.loads(run.eval_file.read_text())["processes"] == 2
    rows = [line for line in (root / "rank1.monitor.csv").read_text().splitlines()[2:] if line]
    own = [line for line in (root / "monitor.csv").read_text().splitlines()[2:] if line]
    assert rows and abs(len(rows) - len(own)) < 0.3 * len(own)  # both processes' episodes, about as many
    # 1024 steps of 2 x 4 envs x 16 steps: 8 rollouts, not 16.
    progress = (root / "progress.csv").read_text().splitlines()
    header = progress[0].split(",")
    steps = [int(line.split(",")[header.index("time/total_timesteps")]) for line in progress[1:]]
    assert steps[0] == 128 and steps[-1] == 1024 and len(steps) == 8

    assert main(["train", "--resume", str(root)]) == 2
    assert "trained by 2 process(es), and this resume has 1; resume with --nproc 2" in capsys.readouterr().err

    config = yaml.safe_load(run.config_file.read_text())
    run.config_file.write_text(yaml.safe_dump(config | {"total_timesteps": 1536}))
    resumed = _cli("train", "--resume", str(root), "--nproc", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.checkpoint_steps()[-1] == 1536
    assert load_npz(root / "vecnormalize.npz")["obs_rms/count"] == pytest.approx(1032 + 8 + 512, abs=1e-3)
    assert (root / "resumed-1024.rank1.monitor.csv").is_file()


def _worker_pids(launcher: int) -> dict[int, int]:
    """Rank -> pid of the processes ``launcher`` started (Linux: read from /proc)."""
    pids = {}
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in item
        )
        if "RANK" in environ:
            pids[int(environ["RANK"])] = int(child)
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the processes through Linux's /proc")
def test_a_killed_process_ends_the_job_with_a_message_and_the_run_resumes(tmp_path):
    config = _config(tmp_path, total_timesteps=1_000_000)
    launcher = subprocess.Popen([*CLI, "train", str(config), "--nproc", "2"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").is_dir() else []
            if runs and RunDirectory(runs[0]).checkpoint_steps():
                break
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint within 120 s")
        os.kill(_worker_pids(launcher.pid)[1], signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert time.monotonic() - killed < 30
    assert launcher.returncode == 1
    (root,) = (tmp_path / "runs").iterdir()
    assert "process 1 of 2 (pid" in stderr and "was killed by SIGKILL" in stderr
    assert f"ntm-rl train --resume {root.relative_to(tmp_path)} --nproc 2" in stderr
    run = RunDirectory(root)
    newest = next(run.whole_checkpoints())[1]["num_timesteps"]
    config = yaml.safe_load(run.config_file.read_text())
    run.config_file.write_text(yaml.safe_dump(config | {"total_timesteps": newest + 512}))
    resumed = _cli("train", "--resume", str(root), "--nproc", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {root} at {newest} env steps" in resumed.stderr
    assert json.loads(run.eval_file.read_text())["num_timesteps"] == newest + 512


def test_nproc_is_checked_before_processes_start(tmp_path, capsys):
    assert main(["train", str(_config(tmp_path)), "--nproc", "2", "algo_kwargs.n_stepz=3"]) == 2
    assert "unknown config key 'algo_kwargs.n_stepz'" in capsys.readouterr().err
    assert main(["train", str(_config(tmp_path)), "--nproc", "0"]) == 2
    assert "--nproc must be at least 1, got 0" in capsys.readouterr().err


def test_sweep_helpers():
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    with pytest.raises(ValueError, match="--seeds '3-1'"):
        parse_seeds("3-1")
    assert split_values("a,[1,2],{x: 1, y: 2},'p,q'") == ["a", "[1,2]", "{x: 1, y: 2}", "'p,q'"]
    assert expand_grid(["core=ntm,gru", "seed=1"]) == [["core=ntm", "seed=1"], ["core=gru", "seed=1"]]
    with pytest.raises(ValueError, match="not key=value"):
        expand_grid(["core"])


def test_sweep_trains_each_seed_and_value_as_its_own_run(tmp_path):
    config = _config(tmp_path, total_timesteps=256, checkpoint_freq=256)
    lines = []
    grid = expand_grid(["algo_kwargs.gae_lambda=0.8,0.9"])
    results = run_sweep(config, grid, [0, 1], workers=2, runs_root=tmp_path / "runs", report=lines.append)
    assert [(r["overrides"], r["seed"]) for r in results] == [
        ("algo_kwargs.gae_lambda=0.8", 0), ("algo_kwargs.gae_lambda=0.8", 1),
        ("algo_kwargs.gae_lambda=0.9", 0), ("algo_kwargs.gae_lambda=0.9", 1),
    ]  # fmt: skip
    assert all(r["error"] is None for r in results)
    for r in results:
        saved = RunDirectory(r["run"]).config
        assert (saved.algo_kwargs["gae_lambda"], saved.seed) == (float(r["overrides"].split("=")[1]), r["seed"])
    assert any(line.startswith("algo_kwargs.gae_lambda=0.9: mean return") and "over 2 seed(s)" in line
               for line in lines)  # fmt: skip
    (table,) = (tmp_path / "runs").glob("sweep-tiny-*.csv")
    assert len(table.read_text().splitlines()) == 5
