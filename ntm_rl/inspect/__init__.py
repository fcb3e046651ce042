"""Looking inside the memory: traces of an NTM's heads, memory-use metrics and plots."""

from ntm_rl.inspect.metrics import memory_metrics
from ntm_rl.inspect.plots import plot_heads, plot_weightings
from ntm_rl.inspect.trace import EpisodeTrace, Recorder, record_episodes

__all__ = ["EpisodeTrace", "Recorder", "memory_metrics", "plot_heads", "plot_weightings", "record_episodes"]
