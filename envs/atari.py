"""Atari through ale-py's C++ vector environment, as an SB3 ``VecEnv``, with DeepMind preprocessing.

ale-py steps all games in native threads (no Python subprocess per env) and already applies
no-op starts, frame skip with max-pooling and 84x84 grayscale; this adapter adds, in numpy over
the whole batch, what memory studies need to control:

- frame stacking (``frame_stack=1`` leaves all integration over time to the agent's memory);
- training mode: an episode ends for the agent at each life loss while the game goes on, and
  rewards are clipped to their sign; every game over reports the full, unclipped game return as
  ``info["episode"]`` (SB3's Monitor format), and evaluation mode (``training=False``) returns
  unclipped rewards and ends episodes only at game over;
- flickering Atari (Hausknecht and Stone 2015): each new frame is blanked with probability
  ``flicker_prob``.
"""

from __future__ import annotations

import difflib
import re
import time
from typing import Any

import gymnasium as gym
import numpy as np
from ale_py.roms import get_all_rom_ids
from ale_py.vector_env import AtariVectorEnv

from ntm_rl.checks import check_positive_int
from ntm_rl.vec import BatchedVecEnv

FRAME_SHAPE = (84, 84)


def rom_id(game: str) -> str:
    """ale-py's ROM id of ``game``, accepting ``"pong"``, ``"Pong"`` or ``"MsPacman"``."""
    name = game if "_" in game or game.islower() else re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()
    roms = get_all_rom_ids()
    if name not in roms:
        close = difflib.get_close_matches(name, roms, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See ale_py.roms.get_all_rom_ids()."
        raise ValueError(f"Unknown Atari game {game!r}.{hint}")
    return name


class AtariVecEnv(BatchedVecEnv):
    """``num_envs`` Atari games stepped by ale-py in native threads, as an SB3 ``VecEnv``.

    Observations are ``uint8`` ``[num_envs, frame_stack, 84, 84]`` (channels first, as SB3's
    ``CnnPolicy`` and NatureCNN take them).

    :param game: ROM name, e.g. ``"pong"`` or ``"Breakout"``.
    :param num_envs: number of games stepped together.
    :param frame_stack: frames per observation (4 as DeepMind; 1 for memory studies).
    :param training: end the agent's episode at each life loss and clip rewards to their sign;
        ``False`` for evaluation (full games, raw rewards).
    :param flicker_prob: probability of blanking each new frame (0 disables flickering).
    :param noop_max: at most this many no-op actions at the start of each game.
    :param frame_skip: emulator frames per agent step (max-pooled over the last two).
    :param repeat_action_probability: sticky actions (0 as DeepMind; 0.25 as Machado et al.).
    :param max_episode_frames: games are truncated after this many emulator frames.
    :param num_threads: ale-py worker threads (0: one per env, up to the CPU count).
    """

    render_mode = None  # frames are observations; nothing renders to a screen

    def __init__(
        self,
        game: str = "pong",
        num_envs: int = 8,
        frame_stack: int = 4,
        training: bool = True,
        flicker_prob: float = 0.0,
        noop_max: int = 30,
        frame_skip: int = 4,
        repeat_action_probability: float = 0.0,
        max_episode_frames: int = 108_000,
        num_threads: int = 0,
    ):
        for name, value, minimum in [
            ("num_envs", num_envs, 1),
            ("frame_stack", frame_stack, 1),
            ("frame_skip", frame_skip, 1),
            ("noop_max", noop_max, 0),
        ]:
            check_positive_int(name, value, minimum)
        if not 0 <= flicker_prob <= 1:
            raise ValueError(f"flicker_prob must be in [0, 1], got {flicker_prob!r}.")
        self.game = rom_id(game)
        self.training, self.flicker_prob = training, flicker_prob
        self.ale = AtariVectorEnv(
            self.game,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=repeat_action_probability,
            autoreset_mode="SameStep",
            img_height=FRAME_SHAPE[0],
            img_width=FRAME_SHAPE[1],
            grayscale=True,
            stack_num=1,  # stacked here, so that flickering blanks single frames
            frameskip=frame_skip,
            noop_max=noop_max,
            episodic_life=False,  # life losses are signalled here, without resetting the game
            reward_clipping=False,  # clipped here, so that game returns stay unclipped
        )
        observation_space = gym.spaces.Box(0, 255, (frame_stack, *FRAME_SHAPE), dtype=np.uint8)
        super().__init__(num_envs, observation_space, self.ale.single_action_space)
        self._stack = np.zeros((num_envs, frame_stack, *FRAME_SHAPE), dtype=np.uint8)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._game_returns = np.zeros(num_envs)
        self._game_lengths = np.zeros(num_envs, dtype=np.int64)
        self._flicker_rng = np.random.default_rng()
        self._actions: np.ndarray | None = None
        self._start = time.time()

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        frames, info = self.ale.reset(seed=None if seed is None else int(seed))
        self._flicker_rng = np.random.default_rng(None if seed is None else [int(seed), 0xF11C])
        self._reset_seeds()
        self._reset_options()
        self._stack[:] = 0
        self._stack[:, -1] = self._flicker(frames[:, 0])
        self._lives = info["lives"].astype(np.int64)
        self._game_returns[:] = 0.0
        self._game_lengths[:] = 0
        return self._stack.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        frames, rewards, terminated, truncated, info = self.ale.step(self._actions)
        game_over = terminated | truncated
        lives = info["lives"].astype(np.int64)
        life_lost = ~game_over & (lives < self._lives)
        self._lives = lives  # after a game over, the next game's lives (same-step autoreset)
        self._game_returns += rewards
        self._game_lengths += 1

        frames = self._flicker(frames[:, 0])
        self._stack[:, :-1] = self._stack[:, 1:]  # in place: no new array per step
        self._stack[:, -1] = frames
        dones = game_over | (life_lost if self.training else False)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            terminal = self._stack[i].copy()
            if game_over[i]:  # the frame returned belongs to the next game: show the last one
                terminal[-1] = self._flicker(info["final_obs"][i, 0][None])[0]
                self._stack[i, :-1] = 0
            infos[i]["terminal_observation"] = terminal
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        for i in np.flatnonzero(game_over):
            infos[i]["episode"] = {
                "r": float(self._game_returns[i]),
                "l": int(self._game_lengths[i]),
                "t": round(time.time() - self._start, 6),
            }
        self._game_returns[game_over] = 0.0
        self._game_lengths[game_over] = 0
        rewards = np.sign(rewards) if self.training else rewards
        return self._stack.copy(), rewards.astype(np.float32), dones, infos

    def _flicker(self, frames: np.ndarray) -> np.ndarray:
        if self.flicker_prob > 0:
            frames = frames * (self._flicker_rng.random(len(frames)) >= self.flicker_prob)[:, None, None]
        return frames.astype(np.uint8, copy=False)

    def close(self) -> None:
        self.ale.close()
