"""Batched CartPole and Pendulum: gymnasium's physics step for step, and the observation modes."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import ntm_rl.envs  # noqa: F401  (registers the ntm_rl/ ids)
from ntm_rl.envs import CartPole, Pendulum
from ntm_rl.envs.classic_control import OBSERVATION_MODES


@pytest.mark.parametrize("name", ["CartPole", "Pendulum"])
@pytest.mark.parametrize("observation", OBSERVATION_MODES)
def test_registered_env_passes_gymnasium_and_sb3_checks(name, observation):
    env = gym.make(f"ntm_rl/{name}-v0", observation=observation).unwrapped
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize(("ours", "theirs"), [(CartPole, "CartPole-v1"), (Pendulum, "Pendulum-v1")])
def test_physics_match_gymnasium_over_1000_random_steps(ours, theirs):
    reference = gym.make(theirs).unwrapped  # no time limit: episodes end by termination only
    env = ours(1, dtype=torch.float64, max_episode_steps=None)
    rng = np.random.default_rng(0)
    observation, _ = reference.reset(seed=0)
    env.reset(seed=0)
    env.state = torch.tensor(np.array(reference.state), dtype=torch.float64).unsqueeze(0)
    terminations = 0
    for _ in range(1000):
        if theirs == "Pendulum-v1":
            action = rng.uniform(-2.0, 2.0, size=(1,)).astype(np.float32)
        else:
            action = int(rng.integers(2))
        observation, reward, terminated, _, _ = reference.step(action)
        result = env.step(torch.as_tensor(np.asarray(action)).reshape(1, *env.action_space.shape))
        np.testing.assert_allclose(result.final_observation[0].numpy(), observation, atol=1e-5, rtol=0)
        assert float(result.reward[0]) == pytest.approx(reward, abs=1e-5)
        assert bool(result.terminated[0]) == terminated
        if terminated:
            terminations += 1
            reference.reset()
            env.state = torch.tensor(np.array(reference.state), dtype=torch.float64).unsqueeze(0)
    assert theirs == "Pendulum-v1" or terminations >= 10  # random CartPole falls every ~20 steps


def test_time_limits_are_gymnasium_s():
    cartpole = CartPole(2)
    cartpole.reset(seed=0)
    pendulum = Pendulum(2)
    pendulum.reset(seed=0)
    for step in range(200):
        result = pendulum.step(torch.zeros(2, 1))
        assert bool(result.truncated.all()) == (step == 199)
    assert cartpole.max_episode_steps == 500


def test_observation_modes_show_what_they_promise():
    full = CartPole(4096, observation="full")
    hidden = CartPole(4096, observation="no_velocity")
    noisy = CartPole(4096, observation="noisy", noise_std=0.5)
    flicker = CartPole(4096, observation="flicker", flicker_prob=0.3)
    observations = [env.reset(seed=1) for env in (full, hidden, noisy, flicker)]
    torch.testing.assert_close(observations[1], observations[0][:, [0, 2]])
    noise = observations[2] - observations[0]
    assert abs(noise.std().item() - 0.5) < 0.02 and abs(noise.mean().item()) < 0.02
    blank = (observations[3] == 0).all(dim=1)
    assert abs(blank.float().mean().item() - 0.3) < 0.03
    torch.testing.assert_close(observations[3][~blank], observations[0][~blank])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observation": "pixels"}, "observation must be one of"),
        ({"noise_std": -1.0}, "noise_std must be >= 0, got -1.0"),
        ({"flicker_prob": 1.5}, r"flicker_prob must be in \[0, 1\], got 1.5"),
        ({"max_episode_steps": 0}, "max_episode_steps must be >= 1 or None"),
    ],
)
def test_bad_kwargs_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CartPole(2, **kwargs)


def test_compiled_step_matches_eager():
    """compile_step() fuses the step; the random draws and resets must come out the same."""
    eager, compiled = CartPole(64, observation="noisy"), CartPole(64, observation="noisy").compile_step()
    torch.testing.assert_close(compiled.reset(seed=2), eager.reset(seed=2))
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):  # random CartPole episodes end within 60 steps: resets are covered
        actions = torch.randint(0, 2, (64,), generator=generator)
        for field_eager, field_compiled in zip(eager.step(actions), compiled.step(actions), strict=True):
            torch.testing.assert_close(field_compiled, field_eager)
    assert eager.episode_count.min() > 1
