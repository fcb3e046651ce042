"""Memory inspection: metrics against hand-computed values, traces of real episodes, plots, and
the training-time metrics callback (which must not add a forward pass)."""

import math

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure

from ntm_rl.agents import RecurrentPPO
from ntm_rl.callbacks import MemoryMetrics
from ntm_rl.cores import LSTMCore, NTMCore
from ntm_rl.envs import TMaze
from ntm_rl.inspect import EpisodeTrace, Recorder, memory_metrics, plot_heads, plot_weightings, record_episodes
from ntm_rl.inspect.metrics import focus, memory_utilisation, weighting_entropy, write_read_lags
from ntm_rl.vec import TorchVecEnvToSB3

NTM = dict(core="ntm", core_kwargs=dict(controller_size=16, memory_size=8, word_size=4))


def one_hot(rows: list[int], n: int = 4) -> np.ndarray:
    """``[T, 1, 1, n]`` weightings focused on ``rows[t]`` (a single env and head)."""
    return np.eye(n)[rows][:, None, None, :]


def test_entropy_and_focus():
    uniform = np.full((3, 2, 1, 4), 0.25)
    assert weighting_entropy(uniform) == pytest.approx(math.log(4))
    assert weighting_entropy(one_hot([0, 1, 2])) == pytest.approx(0.0, abs=1e-9)
    assert focus(uniform) == 0.25 and focus(one_hot([3, 1])) == 1.0


def test_utilisation_counts_rows_with_half_a_write_per_episode():
    writes = np.zeros((4, 1, 1, 4))
    writes[0, 0, 0] = [1.0, 0.0, 0.0, 0.0]
    writes[1, 0, 0] = [0.0, 0.3, 0.0, 0.7]
    writes[2, 0, 0] = [0.0, 0.3, 0.7, 0.0]  # row 1 reaches 0.6 over two steps
    writes[3, 0, 0] = [0.0, 0.0, 0.0, 1.0]
    no_reset = np.zeros((4, 1), dtype=bool)
    assert memory_utilisation(writes, no_reset) == 1.0
    reset = no_reset.copy()
    reset[2] = True  # episodes [0, 1] and [2, 3]: rows {0, 3} (row 1 only 0.3), then {2, 3}
    assert memory_utilisation(writes, reset) == pytest.approx(0.5)


def test_lag_is_the_distance_to_the_latest_overlapping_write_of_the_episode():
    writes = one_hot([2, 3, 0, 0, 0])
    reads = one_hot([1, 0, 3, 2, 0])
    starts = np.zeros((5, 1), dtype=bool)
    # t=1 reads row 0 (never written before t=1); t=2 row 3 (written at 1: lag 1); t=3 row 2
    # (written at 0: lag 3); t=4 row 0 (written at 2 and 3: the latest, lag 1).
    assert write_read_lags(reads, writes, starts).tolist() == [1, 3, 1]
    metrics = memory_metrics(reads, writes, starts)
    assert metrics["retrieved_reads"] == pytest.approx(3 / 4) and metrics["mean_lag"] == pytest.approx(5 / 3)
    starts[3] = True  # a reset at t=3: the read at 3 cannot retrieve the write at 0 of the last episode
    assert write_read_lags(reads, writes, starts).tolist() == [1, 1]
    assert math.isnan(memory_metrics(reads[:1], writes[:1], starts[:1])["mean_lag"])


def test_recorder_traces_every_step_and_detaches():
    core = NTMCore(3, controller_size=8, memory_size=6, word_size=4, num_read_heads=2, shift_range=1)
    state = core.initial_state(5)
    with Recorder(core, max_envs=2) as recorder:
        for _ in range(3):
            _, state = core.step(torch.randn(5, 3), state)
    assert core.tracer is None
    trace = recorder.stacked()
    assert trace.read_weights.shape == (3, 2, 2, 6) and trace.write_weights.shape == (3, 2, 1, 6)
    assert trace.shift.shape == (3, 2, 3, 3) and trace.erase.shape == (3, 2, 1, 4)
    np.testing.assert_allclose(trace.read_weights.sum(-1), 1.0, atol=1e-5)
    assert ((trace.gate >= 0) & (trace.gate <= 1)).all() and (trace.sharpening >= 1).all()
    with pytest.raises(ValueError, match="needs an NTM core, got LSTMCore"):
        Recorder(LSTMCore(3, 8))


def test_record_episodes_plots_and_round_trip(tmp_path):
    model = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(TMaze(2, corridor_length=3)), n_steps=8, batch_size=16,
                         sequence_length=8, seed=0, policy_kwargs=NTM)  # fmt: skip
    traces = record_episodes(model, TorchVecEnvToSB3(TMaze(2, corridor_length=3)), episodes=2)
    assert len(traces) == 2
    for trace in traces:
        assert trace.observations.shape == (4, 3) and trace.read_weights.shape == (4, 1, 8)
        assert trace.observations[0, :2].sum() == 1.0  # the cue shows at the first step only
        assert trace.rewards[-1] in (0.0, 1.0) and not trace.rewards[:-1].any()
        assert set(trace.metrics()) >= {"return", "length", "write_focus", "utilisation", "mean_lag"}
    traces[0].save(tmp_path / "trace.npz")
    loaded = EpisodeTrace.load(tmp_path / "trace.npz")
    np.testing.assert_array_equal(loaded.write_weights, traces[0].write_weights)
    for plot in (plot_weightings, plot_heads):
        path = plot(traces[0], tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_memory_metrics_callback_logs_without_an_extra_forward_pass(tmp_path):
    def steps_of_learning(callback):
        model = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(TMaze(4, corridor_length=3)), n_steps=16, batch_size=32,
                             sequence_length=8, n_epochs=1, seed=0, policy_kwargs=NTM)  # fmt: skip
        model.set_logger(configure(str(tmp_path / str(callback is None)), ["csv"]))
        calls = []
        model.policy.core.tracer = calls.append
        model.learn(128, callback=callback)
        return len(calls), tmp_path / str(callback is None) / "progress.csv"

    with_metrics, progress = steps_of_learning(MemoryMetrics(freq=64))
    without, _ = steps_of_learning(None)
    assert with_metrics == without
    header, *rows = progress.read_text().splitlines()
    column = header.split(",").index("memory/write_focus")
    logged = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert len(logged) == 2 and all(0 < value <= 1 for value in logged)  # steps 64 and 128 of 128
