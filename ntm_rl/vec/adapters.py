"""Adapters at the edge: a :class:`TorchVecEnv` as an SB3 ``VecEnv``, and a ``VecEnv`` of one env as a
gymnasium ``Env``.

Both copy tensors to numpy, so they belong at the boundary with code that expects numpy (plain
SB3 algorithms, gymnasium's checkers); ntm-rl's own agents step the ``TorchVecEnv`` directly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import tile_images

from ntm_rl.vec.torch_vec_env import TorchVecEnv


class BatchedVecEnv(VecEnv):
    """SB3's ``VecEnv`` for envs that one object steps as a batch: ``get_attr``, ``set_attr`` and
    ``env_method`` reach that object (:meth:`_batch`), the same for every index, and
    ``env_is_wrapped`` says whether its ``infos`` carry SB3 ``Monitor``'s ``episode`` records."""

    records_episodes = False

    def _batch(self) -> Any:
        """The object that holds the envs' attributes and methods."""
        return self

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self._batch(), attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self._batch(), attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        result = getattr(self._batch(), method_name)(*method_args, **method_kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [self.records_episodes and issubclass(Monitor, wrapper_class)] * len(self._indices(indices))

    def _indices(self, indices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices


class TorchVecEnvToSB3(BatchedVecEnv):
    """A :class:`TorchVecEnv` as an SB3 ``VecEnv``: numpy in and out, SB3's ``infos``.

    Finished episodes report ``terminal_observation`` and ``TimeLimit.truncated`` in their info
    dicts, as SB3's own vectorised envs do, so SB3 bootstraps truncated episodes correctly, and
    ``episode`` (return ``r``, length ``l``, seconds ``t``), as SB3's ``Monitor`` does: the env is
    its own monitor (its episodes are whole and its rewards unmodified), and ``env_is_wrapped``
    says so, so that ``evaluate_policy`` and ``EvalCallback`` read these records without a warning.
    """

    records_episodes = True

    def __init__(self, env: TorchVecEnv, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array", "human"):
            raise ValueError(f"render_mode must be None, 'rgb_array' or 'human', got {render_mode!r}.")
        self.env = env
        self._window: FrameWindow | None = None
        env.render_mode = render_mode  # SB3's VecEnv reads it from the env
        super().__init__(env.num_envs, env.observation_space, env.action_space)
        self._actions: torch.Tensor | None = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._start = time.time()

    def reset(self) -> np.ndarray:
        seeds = None if self._seeds[0] is None else [int(seed) for seed in self._seeds]
        observation = self.env.reset(seed=seeds)
        self._returns[:], self._lengths[:] = 0, 0
        self._reset_seeds()
        self._reset_options()
        return observation.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(np.asarray(actions), device=self.env.device)

    def step_wait(self):
        result = self.env.step(self._actions)
        dones = result.episode_start.cpu().numpy()
        rewards = result.reward.float().cpu().numpy()
        self._returns += rewards
        self._lengths += 1
        final = result.final_observation.cpu().numpy() if dones.any() else None
        infos = sb3_infos(dones, final, result.truncated.cpu().numpy(), self._returns, self._lengths,
                          time.time() - self._start)  # fmt: skip
        self._returns[dones], self._lengths[dones] = 0, 0
        return result.observation.cpu().numpy(), rewards, dones, infos

    def close(self) -> None:
        if self._window is not None:
            self._window.close()

    def get_images(self) -> list[np.ndarray]:
        """One picture per env (what SB3's ``render()`` tiles and ``VecVideoRecorder`` records)."""
        return [self.env.render(i) for i in range(self.num_envs)]

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """SB3's ``render``; with ``render_mode="human"``, every env's picture, tiled, in a
        matplotlib window (SB3 would ask each env to show itself, or need OpenCV)."""
        if self.render_mode != "human" or mode not in (None, "human"):
            return super().render(mode)
        if self._window is None:
            self._window = FrameWindow(type(self.env).__name__)
        self._window.show(tile_images(self.get_images()))
        return None

    def _batch(self) -> TorchVecEnv:
        return self.env


def sb3_infos(dones: np.ndarray, final_observations: np.ndarray | None, truncated: np.ndarray, returns: np.ndarray,
              lengths: np.ndarray, seconds: float) -> list[dict[str, Any]]:  # fmt: skip
    """SB3's ``infos`` of one step of a batched env: for each env whose episode ended, its
    ``terminal_observation``, ``TimeLimit.truncated`` and ``episode`` record (return ``r``,
    length ``l``, seconds ``t``, as SB3's ``Monitor`` writes it); empty dicts elsewhere."""
    infos: list[dict[str, Any]] = [{} for _ in range(len(dones))]
    for i in np.flatnonzero(dones):
        infos[i] = {"terminal_observation": final_observations[i], "TimeLimit.truncated": bool(truncated[i]),
                    "episode": {"r": round(float(returns[i]), 6), "l": int(lengths[i]), "t": round(seconds, 6)}}  # fmt: skip
    return infos


class VecEnvAsGym(gym.Env):
    """A vectorised env of one environment (any SB3 ``VecEnv``) as a gymnasium ``Env``.

    ``step`` returns the terminal observation of a finished episode; the following ``reset``
    (without a seed) returns the first observation of the episode the vectorised env already
    began, so a single env seeded ``s`` plays exactly the episodes that env ``i`` of a batch
    seeded ``s - i`` plays (and an Atari life loss continues the game, as DeepMind's wrappers do).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    def __init__(self, vec_env: VecEnv):
        if vec_env.num_envs != 1:
            raise ValueError(f"VecEnvAsGym needs a vectorised env of 1 environment, got {vec_env.num_envs}.")
        self.vec_env = vec_env
        self.render_mode = vec_env.render_mode
        self.observation_space = vec_env.observation_space
        self.action_space = vec_env.action_space
        self._next_observation: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self._next_observation is None:
            if seed is not None:
                self.vec_env.seed(seed)
            observation = self.vec_env.reset()[0]
        else:
            observation = self._next_observation  # the episode the autoreset already began
        self._next_observation = None
        return observation, {}

    def step(self, action):
        observations, rewards, dones, infos = self.vec_env.step(np.asarray([action]))
        info = dict(infos[0])
        if not dones[0]:
            return observations[0], float(rewards[0]), False, False, info
        self._next_observation = observations[0]
        truncated = bool(info.pop("TimeLimit.truncated", False))
        return info.pop("terminal_observation"), float(rewards[0]), not truncated, truncated, info

    def render(self) -> np.ndarray | None:
        """The env's picture with ``render_mode="rgb_array"``; shown in a window with ``"human"``;
        ``None`` without a render mode."""
        if self.render_mode == "human":
            self.vec_env.render()
        return self.vec_env.get_images()[0] if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.vec_env.close()


class FrameWindow:
    """A matplotlib window that shows pictures as they come (``render_mode="human"``), at most
    ``fps`` a second. matplotlib is imported only once something is shown."""

    def __init__(self, title: str, fps: float = 30.0):
        self.title, self.fps = title, fps
        self._figure: Any = None
        self._image: Any = None

    def show(self, frame: np.ndarray) -> None:
        import matplotlib.pyplot as plt

        if self._figure is None or not plt.fignum_exists(self._figure.number):  # first, or closed by the user
            self._figure = plt.figure(self.title)
            axes = self._figure.add_axes((0.0, 0.0, 1.0, 1.0))
            axes.set_axis_off()
            self._image = axes.imshow(frame)
        else:
            self._image.set_data(frame)
        self._figure.canvas.draw_idle()
        self._figure.canvas.start_event_loop(1.0 / self.fps)  # draws, and keeps the window responsive

    def close(self) -> None:
        if self._figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self._figure)
            self._figure = None
