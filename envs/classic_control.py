"""Partially observable classic control, batched as :class:`TorchVecEnv`.

The physics are gymnasium's, step for step (tested against gymnasium's own envs to 1e-5 in
float64); what the agent observes is chosen by ``observation``:

- ``"full"``: the whole state, as gymnasium returns it;
- ``"no_velocity"``: velocities removed (the classic POMDP benchmark: velocity must be inferred
  from successive observations);
- ``"noisy"``: Gaussian noise of standard deviation ``noise_std`` on every entry;
- ``"flicker"``: the whole observation zeroed with probability ``flicker_prob`` at each step.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import gymnasium as gym
import numpy as np
import torch

from ntm_rl.vec.torch_vec_env import TorchVecEnv

OBSERVATION_MODES = ("full", "no_velocity", "noisy", "flicker")


class _PartiallyObservable(TorchVecEnv):
    """Observation modes shared by the classic-control envs; subclasses give ``_full_observation``."""

    velocity_entries: tuple[int, ...]

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str,
        max_episode_steps: int | None,
        observation: str,
        noise_std: float,
        flicker_prob: float,
        full_high: np.ndarray,
        dtype: torch.dtype,
    ):
        super().__init__(num_envs, device, max_episode_steps)
        if observation not in OBSERVATION_MODES:
            raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {observation!r}.")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}.")
        if not 0 <= flicker_prob <= 1:
            raise ValueError(f"flicker_prob must be in [0, 1], got {flicker_prob!r}.")
        self.observation_mode, self.noise_std, self.flicker_prob, self.dtype = (
            observation,
            noise_std,
            flicker_prob,
            dtype,
        )
        kept = [i for i in range(len(full_high)) if observation != "no_velocity" or i not in self.velocity_entries]
        self._kept = torch.tensor(kept, device=self.device)
        high = full_high[kept].astype(np.float32)
        if observation == "noisy":
            high = np.full_like(high, np.inf)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    @abstractmethod
    def _full_observation(self) -> torch.Tensor:
        """The whole observation gymnasium would return, in the state's dtype."""

    def _observe(self) -> torch.Tensor:
        full = self._full_observation()
        if self.observation_mode == "no_velocity":
            return full[:, self._kept].float()
        if self.observation_mode == "noisy":
            uniform = self._uniform(2, full.shape[1])  # Box-Muller: two uniforms, one normal
            normal = torch.sqrt(-2.0 * torch.log1p(-uniform[:, 0])) * torch.cos(2 * math.pi * uniform[:, 1])
            return (full + self.noise_std * normal.to(full.dtype)).float()
        if self.observation_mode == "flicker":
            visible = self._uniform(1) >= self.flicker_prob
            return (full * visible).float()
        return full.float()


def _draw_line(frame: np.ndarray, start: tuple[float, float], end: tuple[float, float], color: tuple[int, ...],
               width: int = 3) -> None:  # fmt: skip
    """Draw a straight line (``(x, y)`` pixels) of ``width`` pixels into ``frame``, in place."""
    points = np.linspace(start, end, num=int(max(abs(end[0] - start[0]), abs(end[1] - start[1]))) * 2 + 2)
    half = width // 2
    for x, y in np.rint(points).astype(int):
        frame[max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1] = color


class CartPole(_PartiallyObservable):
    """CartPole-v1 (Barto, Sutton and Anderson 1983) with gymnasium's physics and time limit.

    Push the cart left (0) or right (1); reward 1 per step until the pole leans past 12 degrees
    or the cart leaves [-2.4, 2.4], truncated at 500 steps. Full state: cart position and
    velocity, pole angle and angular velocity.

    :param observation: ``"full"``, ``"no_velocity"``, ``"noisy"`` or ``"flicker"``.
    :param dtype: of the physical state; float64 reproduces gymnasium's arithmetic exactly.
    """

    velocity_entries = (1, 3)
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    x_threshold, theta_threshold = 2.4, 12 * 2 * math.pi / 360

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        observation: str = "full",
        noise_std: float = 0.1,
        flicker_prob: float = 0.5,
        max_episode_steps: int | None = 500,
        dtype: torch.dtype = torch.float32,
    ):
        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf])
        super().__init__(num_envs, device, max_episode_steps, observation, noise_std, flicker_prob, high, dtype)
        self.action_space = gym.spaces.Discrete(2)
        self.state = torch.zeros(num_envs, 4, dtype=dtype, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        fresh = (self._uniform(4).to(self.dtype) - 0.5) * 0.1  # U(-0.05, 0.05), as gymnasium
        self.state = torch.where(mask.unsqueeze(1), fresh, self.state)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        force = torch.where(actions.long() == 1, self.force_mag, -self.force_mag).to(self.dtype)
        total_mass = self.masspole + self.masscart
        polemass_length = self.masspole * self.length
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * x_acc  # explicit Euler, as gymnasium
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc
        self.state = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold)
        return torch.ones_like(x, dtype=torch.float32), terminated

    def _full_observation(self) -> torch.Tensor:
        return self.state

    def render(self, index: int = 0) -> np.ndarray:
        """The cart on its track and the pole, from the full state (whatever the agent observes)."""
        x, _, theta, _ = self.state[index].double().tolist()
        height, width = 160, 320
        scale = width / (4 * self.x_threshold)
        frame = np.full((height, width, 3), 255, dtype=np.uint8)
        track = 120
        frame[track : track + 2] = 0
        cart = int(round((x + 2 * self.x_threshold) * scale))
        frame[track - 16 : track, max(cart - 20, 0) : max(cart + 20, 0)] = (40, 40, 40)
        pole = 2 * self.length * scale
        _draw_line(frame, (cart, track - 16), (cart + pole * math.sin(theta), track - 16 - pole * math.cos(theta)),
                   (202, 152, 101), width=5)  # fmt: skip
        return frame


class Pendulum(_PartiallyObservable):
    """Pendulum-v1 with gymnasium's physics and time limit: swing up and balance.

    A continuous torque in [-2, 2]; reward ``-(angle^2 + 0.1 velocity^2 + 0.001 torque^2)``;
    never terminates, truncated at 200 steps. Full observation: cos and sin of the angle, and
    the angular velocity.
    """

    velocity_entries = (2,)
    max_speed, max_torque, dt, gravity, mass, length = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        observation: str = "full",
        noise_std: float = 0.1,
        flicker_prob: float = 0.5,
        max_episode_steps: int | None = 200,
        dtype: torch.dtype = torch.float32,
    ):
        high = np.array([1.0, 1.0, self.max_speed])
        super().__init__(num_envs, device, max_episode_steps, observation, noise_std, flicker_prob, high, dtype)
        self.action_space = gym.spaces.Box(-self.max_torque, self.max_torque, (1,), dtype=np.float32)
        self.state = torch.zeros(num_envs, 2, dtype=dtype, device=self.device)  # angle, velocity

    def _reset_envs(self, mask: torch.Tensor) -> None:
        high = torch.tensor([math.pi, 1.0], dtype=self.dtype, device=self.device)
        fresh = (self._uniform(2).to(self.dtype) * 2 - 1) * high  # U(-high, high), as gymnasium
        self.state = torch.where(mask.unsqueeze(1), fresh, self.state)

    def _step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta, theta_dot = self.state.unbind(1)
        # The torque stays float32, as gymnasium's action does, so its terms round as there.
        torque = actions.reshape(-1).float().clamp(-self.max_torque, self.max_torque)
        normalized = (theta + math.pi) % (2 * math.pi) - math.pi
        cost = normalized**2 + 0.1 * theta_dot**2 + 0.001 * torque**2
        theta_dot = (
            theta_dot
            + (3 * self.gravity / (2 * self.length) * torch.sin(theta) + 3.0 / (self.mass * self.length**2) * torque)
            * self.dt
        )
        theta_dot = theta_dot.clamp(-self.max_speed, self.max_speed)
        theta = theta + theta_dot * self.dt
        self.state = torch.stack([theta, theta_dot], dim=1)
        return (-cost).float(), torch.zeros_like(theta, dtype=torch.bool)

    def _full_observation(self) -> torch.Tensor:
        theta, theta_dot = self.state.unbind(1)
        return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], dim=1)

    def render(self, index: int = 0) -> np.ndarray:
        """The pendulum from its angle (0 is upright), whatever the agent observes."""
        theta = float(self.state[index, 0])
        frame = np.full((160, 160, 3), 255, dtype=np.uint8)
        _draw_line(frame, (80, 80), (80 + 60 * math.sin(theta), 80 - 60 * math.cos(theta)), (204, 77, 77), width=7)
        frame[77:84, 77:84] = 0
        return frame
