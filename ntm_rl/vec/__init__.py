"""Batched environments that live on a device, and adapters to SB3 and gymnasium."""

from ntm_rl.vec.adapters import BatchedVecEnv, TorchVecEnvToSB3, VecEnvAsGym
from ntm_rl.vec.torch_vec_env import TorchVecEnv, VecStep

__all__ = ["BatchedVecEnv", "TorchVecEnv", "TorchVecEnvToSB3", "VecEnvAsGym", "VecStep"]
