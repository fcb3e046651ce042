"""Atari through ale-py's vector env: shapes, life losses, clipped and full-game rewards, flicker."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import ntm_rl.envs  # noqa: F401  (registers ntm_rl/Atari-v0)
from ntm_rl.envs.atari import AtariVecEnv, rom_id


def test_pong_steps_and_resets_with_the_documented_shapes():
    env = AtariVecEnv("Pong", num_envs=2, frame_stack=4)
    env.seed(0)
    observation = env.reset()
    assert observation.shape == (2, 4, 84, 84) and observation.dtype == np.uint8
    assert env.action_space.n == 6
    assert not observation[:, :3].any() and observation[:, 3].any()  # stack starts empty
    for _ in range(5):
        observation, rewards, dones, infos = env.step(np.zeros(2, dtype=np.int64))
    assert observation.shape == (2, 4, 84, 84) and rewards.dtype == np.float32 and dones.dtype == bool
    assert observation[:, 0].any()  # the stack has filled
    env.close()


def play_in_lockstep(steps: int):
    """A training and an evaluation Breakout, same seed and actions: the same games."""
    training = AtariVecEnv("breakout", num_envs=2, frame_stack=1, training=True)
    evaluation = AtariVecEnv("breakout", num_envs=2, frame_stack=1, training=False)
    for env in (training, evaluation):
        env.seed(3)
        env.reset()
    rng = np.random.default_rng(0)
    log = []
    for _ in range(steps):
        actions = rng.integers(0, 4, size=2)
        log.append((training.step(actions), evaluation.step(actions)))
    return log


def test_training_mode_ends_episodes_at_life_losses_clips_rewards_and_reports_full_games():
    log = play_in_lockstep(1500)
    train_dones = np.array([step[0][2] for step in log])
    eval_dones = np.array([step[1][2] for step in log])
    raw_rewards = np.array([step[1][1] for step in log])
    train_rewards = np.array([step[0][1] for step in log])
    assert eval_dones.any(), "no Breakout game ended in 1500 random steps"
    np.testing.assert_array_equal(train_rewards, np.sign(raw_rewards))
    # Breakout has 5 lives: the agent sees 4 life losses before each game over.
    assert train_dones.sum() > eval_dones.sum()
    assert (train_dones | ~eval_dones).all()  # every game over is also a training episode end
    for t, i in zip(*np.nonzero(eval_dones), strict=True):
        train_info, eval_info = log[t][0][3][i], log[t][1][3][i]
        assert train_info["episode"]["r"] == eval_info["episode"]["r"]
        start = max([s + 1 for s in np.flatnonzero(eval_dones[:t, i])], default=0)
        assert eval_info["episode"]["r"] == pytest.approx(raw_rewards[start : t + 1, i].sum())
        assert eval_info["terminal_observation"].shape == (1, 84, 84)
    life_losses = train_dones & ~eval_dones
    t, i = np.argwhere(life_losses)[0]
    assert "terminal_observation" in log[t][0][3][i] and "episode" not in log[t][0][3][i]


def test_flicker_blanks_frames_with_the_asked_probability():
    env = AtariVecEnv("pong", num_envs=4, frame_stack=1, flicker_prob=0.5)
    env.seed(1)
    env.reset()
    blank = []
    for _ in range(100):
        observation, *_ = env.step(np.zeros(4, dtype=np.int64))
        blank.extend(~observation.reshape(4, -1).any(axis=1))
    assert abs(np.mean(blank) - 0.5) < 0.08


def test_sb3_ppo_runs_on_atari():
    env = AtariVecEnv("pong", num_envs=2, frame_stack=1)
    model = PPO("CnnPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    model.learn(32)
    assert model.num_timesteps == 32


def test_unknown_game_names_the_close_matches():
    assert rom_id("MsPacman") == "ms_pacman"
    with pytest.raises(ValueError, match="Unknown Atari game 'pongg'. Did you mean pong"):
        AtariVecEnv("pongg")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs must be an integer >= 1, got 0"),
        ({"frame_stack": -1}, "frame_stack must be an integer >= 1, got -1"),
        ({"noop_max": -5}, "noop_max must be an integer >= 0"),
        ({"flicker_prob": -0.1}, r"flicker_prob must be in \[0, 1\]"),
    ],
)
def test_bad_kwargs_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AtariVecEnv("pong", **kwargs)


def test_registered_single_game_passes_gymnasium_and_sb3_checks():
    env = gym.make("ntm_rl/Atari-v0", game="breakout", frame_stack=2)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (2, 84, 84)
    for _ in range(2000):  # a life loss ends the episode; the next reset continues the same game
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated:
            assert env.unwrapped.vec_env._lives[0] == 4
            continued, _ = env.reset()
            assert continued.shape == (2, 84, 84)
            break
    else:
        pytest.fail("no life lost in 2000 random Breakout steps")
