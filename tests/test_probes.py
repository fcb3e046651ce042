"""Memory probes: gymnasium and SB3 compliance, batched vs single env, oracle and random returns."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from ntm_rl.envs import PROBES, AssociativeRecall, Copy, CountRecall, RepeatFirst, RepeatPrevious, TMaze
from ntm_rl.vec import TorchVecEnvToSB3

# Small difficulties keep the tests fast; the defaults are exercised by registration checks.
SMALL = {
    "RepeatPrevious": {"num_symbols": 3, "delay": 2, "length": 6},
    "RepeatFirst": {"num_symbols": 3, "length": 5},
    "Copy": {"num_symbols": 3, "length": 3, "delay": 1},
    "TMaze": {"corridor_length": 4},
    "AssociativeRecall": {"num_pairs": 3, "num_symbols": 5},
    "CountRecall": {"num_symbols": 3, "length": 6, "max_count": 4},
}


@pytest.fixture(params=sorted(PROBES))
def name(request):
    return request.param


def test_registered_env_passes_gymnasium_and_sb3_checks(name):
    env = gym.make(f"ntm_rl/{name}-v0")
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    custom = gym.make(f"ntm_rl/{name}-v0", **SMALL[name])
    gym_check_env(custom.unwrapped, skip_render_check=True)


def test_batched_env_matches_its_single_env_view_step_by_step(name):
    batch, seed, steps = 3, 10, 40
    batched = PROBES[name](batch, **SMALL[name])
    singles = [gym.make(f"ntm_rl/{name}-v0", **SMALL[name]) for _ in range(batch)]
    observation = batched.reset(seed=seed)
    for i, single in enumerate(singles):
        single_observation, _ = single.reset(seed=seed + i)
        np.testing.assert_array_equal(single_observation, observation[i].numpy())
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        actions = torch.randint(0, batched.action_space.n, (batch,), generator=generator)
        result = batched.step(actions)
        for i, single in enumerate(singles):
            final, reward, terminated, truncated, _ = single.step(int(actions[i]))
            np.testing.assert_array_equal(final, result.final_observation[i].numpy())
            assert reward == float(result.reward[i])
            assert (terminated, truncated) == (bool(result.terminated[i]), bool(result.truncated[i]))
            if terminated or truncated:
                first, _ = single.reset()
                np.testing.assert_array_equal(first, result.observation[i].numpy())


def episode_returns(env, policy) -> torch.Tensor:
    """Return of the first episode of every env (all probes have fixed-length episodes)."""
    env.reset(seed=123)
    returns = torch.zeros(env.num_envs)
    running = torch.ones(env.num_envs, dtype=torch.bool)
    while running.any():
        result = env.step(policy(env))
        returns += result.reward * running
        running &= ~result.episode_start
    return returns


def test_oracle_attains_the_documented_optimal_return(name):
    env = PROBES[name](256)
    returns = episode_returns(env, lambda env: env.oracle_action())
    assert torch.all(returns == env.optimal_return)


def test_random_policy_attains_the_documented_random_return(name):
    env = PROBES[name](4096)
    generator = torch.Generator().manual_seed(1)
    returns = episode_returns(
        env, lambda env: torch.randint(0, env.action_space.n, (env.num_envs,), generator=generator)
    )
    standard_error = returns.std().item() / math.sqrt(env.num_envs)
    assert abs(returns.mean().item() - env.random_return) < 4 * standard_error + 1e-6


def test_probe_randomness_is_balanced():
    """The cue of a T-maze and the symbols of a sequence are uniform over their values."""
    maze = TMaze(8192)
    maze.reset(seed=0)
    assert abs(maze.symbols[:, 0].float().mean().item() - 0.5) < 0.02
    repeat = RepeatPrevious(2048, num_symbols=4)
    repeat.reset(seed=0)
    counts = torch.bincount(repeat.symbols.flatten(), minlength=4).float() / repeat.symbols.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.01)


def test_associative_recall_keys_are_distinct():
    env = AssociativeRecall(512, num_pairs=5, num_symbols=6)
    env.reset(seed=0)
    assert (env.keys.sort(dim=1).values.diff(dim=1) > 0).all()


def test_memoryless_policy_is_capped_at_chance_on_the_t_maze():
    """At the junction every T-maze looks the same: the cue must be remembered."""
    env = TMaze(64, corridor_length=3)
    observations = env.reset(seed=0)
    for _ in range(3):
        observations = env.step(torch.zeros(64, dtype=torch.long)).observation
    assert (observations == torch.tensor([0.0, 0.0, 1.0])).all()
    assert env.symbols[:, 0].unique().numel() == 2


def test_count_recall_counts_the_query_so_far():
    env = CountRecall(1, num_symbols=2, length=4, max_count=2)
    env.reset(seed=0)
    env.symbols[0] = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1])  # shown 1,1,0,1; queried 1,0,1,1
    expected = [1, 0, 2, 2]  # count of the query among the shown symbols so far, capped at 2
    for count in expected:
        assert int(env.oracle_action()[0]) == count
        env.step(env.oracle_action())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RepeatPrevious(delay=0), "delay must be an integer >= 1, got 0"),
        (lambda: RepeatPrevious(delay=8, length=8), r"length must exceed delay \(8\), got 8"),
        (lambda: RepeatFirst(length=-3), "length must be an integer >= 2, got -3"),
        (lambda: Copy(delay=-1), "delay must be an integer >= 0"),
        (lambda: TMaze(corridor_length=0), "corridor_length must be an integer >= 1"),
        (lambda: AssociativeRecall(num_pairs=5, num_symbols=3), "num_symbols must be >= num_pairs"),
        (lambda: CountRecall(num_symbols=1), "num_symbols must be an integer >= 2"),
        (lambda: TMaze(num_envs=0), "num_envs must be an integer >= 1"),
    ],
)
def test_bad_difficulty_raises_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_kwargs_through_gym_make():
    with pytest.raises(ValueError, match="corridor_length must be an integer >= 1, got -5"):
        gym.make("ntm_rl/TMaze-v0", corridor_length=-5)


def test_sb3_adapter_reports_terminal_observations_and_truncation():
    env = RepeatPrevious(4, num_symbols=3, delay=1, length=6)
    env.max_episode_steps = 4  # truncate before the episode's natural end
    vec_env = TorchVecEnvToSB3(env)
    vec_env.seed(5)
    first = vec_env.reset()
    assert first.shape == (4, 3) and first.dtype == np.float32
    for _ in range(3):
        observation, rewards, dones, infos = vec_env.step(np.zeros(4, dtype=np.int64))
        assert rewards.dtype == np.float32 and not dones.any() and infos == [{}] * 4
    truncated_episode = env.symbols.clone()
    observation, rewards, dones, infos = vec_env.step(np.zeros(4, dtype=np.int64))
    assert dones.all()
    one_hot = np.eye(3, dtype=np.float32)
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(info["terminal_observation"], one_hot[truncated_episode[i, 4]])
        np.testing.assert_array_equal(observation[i], one_hot[env.symbols[i, 0]])  # the next episode
    assert not torch.equal(env.symbols, truncated_episode)


def test_plain_sb3_ppo_trains_on_a_batched_probe():
    vec_env = TorchVecEnvToSB3(RepeatFirst(8, num_symbols=2, length=4))
    model = PPO("MlpPolicy", vec_env, n_steps=16, batch_size=64, n_epochs=1, seed=0)
    model.learn(256)
    assert model.num_timesteps == 256


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_on_cuda_matches_cpu(name):
    cpu, cuda = PROBES[name](16, **SMALL[name]), PROBES[name](16, device="cuda", **SMALL[name])
    torch.testing.assert_close(cuda.reset(seed=3).cpu(), cpu.reset(seed=3))
    for _ in range(12):
        actions = cpu.oracle_action()
        expected, got = cpu.step(actions), cuda.step(actions.cuda())
        for field_cpu, field_cuda in zip(expected, got, strict=True):
            torch.testing.assert_close(field_cuda.cpu(), field_cpu)


def test_reset_seeds_each_env_and_rejects_a_wrong_number_of_seeds():
    env = RepeatFirst(3, length=4)
    env.reset(seed=7)
    episode = env.symbols.clone()
    env.reset(seed=[7, 8, 9])
    torch.testing.assert_close(env.symbols, episode)
    env.reset()  # no seed: the next, fresh episodes
    assert not torch.equal(env.symbols, episode)
    with pytest.raises(ValueError, match="reset got 2 seeds for 3 envs"):
        env.reset(seed=[1, 2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is absent")
def test_cuda_asked_for_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="torch sees no CUDA device. Use device='cpu'"):
        TMaze(4, device="cuda")


def test_same_step_autoreset_keeps_the_terminal_observation():
    env = RepeatFirst(5, num_symbols=4, length=3)
    env.reset(seed=0)
    old = env.symbols.clone()
    for _ in range(2):
        result = env.step(env.oracle_action())
        assert not result.episode_start.any()
        torch.testing.assert_close(result.observation, result.final_observation)
    result = env.step(env.oracle_action())  # the third step ends every episode
    assert result.terminated.all() and not result.truncated.any() and result.episode_start.all()
    assert (result.reward == 1).all()
    one_hot = torch.eye(4)
    torch.testing.assert_close(result.final_observation, one_hot[old[:, 2]])  # what the step showed
    torch.testing.assert_close(result.observation, one_hot[env.symbols[:, 0]])  # the next episode
    assert not torch.equal(env.symbols, old)
    assert (env.elapsed_steps == 0).all() and (env.episode_count == 2).all()
