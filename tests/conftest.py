"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run on one torch thread: on two busy cores, the orthogonal initialisation of a 64x64 layer
    took 1,500 times as long with two threads as with one, and small recurrent steps slow down alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
