"""POMDP and previous-action wrappers on gymnasium's own environments."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from ntm_rl.envs import CLASSIC_CONTROL, PROBES, CartPole, RepeatFirst
from ntm_rl.envs.wrappers import Flicker, GaussianNoise, HideEntries, PreviousActionReward


def test_hide_entries_keeps_the_others_in_order():
    env = HideEntries(gym.make("CartPole-v1"), [1, -1])  # both velocities
    gym_check_env(env.unwrapped, skip_render_check=True)
    full, _ = env.unwrapped.reset(seed=3)
    hidden, _ = env.reset(seed=3)
    np.testing.assert_array_equal(hidden, full[[0, 2]])
    assert env.observation_space.shape == (2,)


def test_gaussian_noise_has_the_asked_spread_and_is_seeded():
    env = GaussianNoise(gym.make("CartPole-v1"), std=0.3)
    first = [env.reset(seed=1)[0] - env.unwrapped.state for _ in range(2)]
    np.testing.assert_allclose(first[0], first[1])  # same seed, same noise
    noise = [env.step(0)[0] - np.asarray(env.unwrapped.state, dtype=np.float32) for _ in range(400)]
    assert abs(np.std(noise) - 0.3) < 0.02


def test_flicker_blanks_with_the_asked_probability():
    env = Flicker(gym.make("CartPole-v1"), prob=0.25)
    env.reset(seed=0)
    blanks = 0
    for _ in range(2000):
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        blanks += not observation.any()
        if terminated or truncated:
            env.reset()
    assert abs(blanks / 2000 - 0.25) < 0.03


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_previous_action_and_reward_are_appended(env_id):
    env = PreviousActionReward(gym.make(env_id))
    gym_check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    base = env.env.observation_space.shape[0]
    assert not observation[base:].any()
    action = env.action_space.sample()
    observation, reward, _, _, _ = env.step(action)
    if env_id == "CartPole-v1":
        np.testing.assert_array_equal(observation[base:-1], np.eye(2)[action])
    else:
        np.testing.assert_allclose(observation[base:-1], action)
    assert observation[-1] == pytest.approx(reward)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: HideEntries(gym.make("CartPole-v1"), [4]), "indices within an observation of 4 entries"),
        (lambda: HideEntries(gym.make("CartPole-v1"), [0, 1, 2, 3]), "hiding some but not all"),
        (lambda: GaussianNoise(gym.make("CartPole-v1"), std=-0.1), "std must be >= 0, got -0.1"),
        (lambda: Flicker(gym.make("CartPole-v1"), prob=2), r"prob must be in \[0, 1\], got 2"),
        (lambda: HideEntries(gym.make("CliffWalking-v1"), [0]), "needs a flat Box observation space"),
    ],
)
def test_bad_arguments_raise_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("env_id", [f"ntm_rl/{name}-v0" for name in (*PROBES, *CLASSIC_CONTROL)])
def test_every_ntm_rl_env_renders_rgb_frames(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    for _ in range(12):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(env.render())
        if terminated or truncated:
            break
    for frame in frames:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0  # what video codecs need
    assert any(not np.array_equal(frames[0], frame) for frame in frames[1:])  # it shows the episode move on
    without = gym.make(env_id)
    without.reset(seed=0)
    assert without.render() is None


@pytest.mark.parametrize("env", ["probe", "cartpole"])
def test_vec_video_recorder_records_a_batched_env(tmp_path, env):
    from stable_baselines3.common.vec_env import VecVideoRecorder

    from ntm_rl.vec import TorchVecEnvToSB3

    batched = RepeatFirst(2, length=6) if env == "probe" else CartPole(2, observation="no_velocity")
    venv = VecVideoRecorder(TorchVecEnvToSB3(batched, render_mode="rgb_array"), str(tmp_path),
                            record_video_trigger=lambda step: step == 0, video_length=20, name_prefix=env)  # fmt: skip
    venv.reset()
    for _ in range(25):
        venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    venv.close()
    (video,) = tmp_path.glob(f"{env}*.mp4")
    assert video.stat().st_size > 1_000


def test_human_render_mode_shows_the_frames_in_a_matplotlib_window():
    import matplotlib.pyplot as plt

    env = gym.make("ntm_rl/TMaze-v0", render_mode="human")  # as rl-zoo3's enjoy makes it
    env.reset(seed=0)
    assert env.render() is None
    env.step(0)
    env.render()
    (window,) = [plt.figure(n) for n in plt.get_fignums() if plt.figure(n).get_label() == "TMaze"]
    frame = window.axes[0].images[0].get_array()
    assert frame.ndim == 3 and frame.shape[2] == 3 and np.array_equal(frame, env.unwrapped.vec_env.get_images()[0])
    env.close()
    assert not plt.fignum_exists(window.number)
