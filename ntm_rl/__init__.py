"""ntm-rl: Neural Turing Machine memory cores for recurrent reinforcement learning."""

from ntm_rl.cores import GRUCore, LSTMCore, MemoryCore, NTMCore, make_core

__version__ = "0.1.0"

__all__ = ["GRUCore", "LSTMCore", "MemoryCore", "NTMCore", "__version__", "make_core"]
