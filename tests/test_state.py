"""The state helpers: index, concatenate, detach, move, reset, save and load."""

import pickle

import pytest
import torch

from ntm_rl.cores import (
    GRUCore,
    LSTMCore,
    NTMCore,
    cat_states,
    detach_state,
    index_state,
    load_state,
    map_state,
    reset_state,
    save_state,
    state_leaves,
    state_to,
)

CORES = {
    "ntm": lambda: NTMCore(3, controller_size=8, memory_size=6, word_size=4),
    "ntm-mlp": lambda: NTMCore(3, controller="mlp", controller_size=8, memory_size=6, word_size=4),
    "lstm": lambda: LSTMCore(3, 8),
    "gru": lambda: GRUCore(3, 8),
}


@pytest.fixture(params=sorted(CORES))
def stepped_state(request):
    """A state of 5 envs that differ from each other, with an autograd history."""
    torch.manual_seed(0)
    core = CORES[request.param]()
    state = core.initial_state(5)
    for _ in range(3):
        _, state = core.step(torch.randn(5, 3), state)
    return state


def assert_same(a, b):
    assert type(a) is type(b)
    for leaf_a, leaf_b in zip(state_leaves(a), state_leaves(b), strict=True):
        torch.testing.assert_close(leaf_a, leaf_b, rtol=0, atol=0)


def test_index_then_concatenate_round_trips(stepped_state):
    parts = [
        index_state(stepped_state, slice(0, 2)),
        index_state(stepped_state, 2),
        index_state(stepped_state, torch.tensor([3, 4])),
    ]
    assert_same(cat_states(parts), stepped_state)


def test_index_by_permutation_selects_envs(stepped_state):
    order = torch.tensor([4, 0, 2])
    picked = index_state(stepped_state, order)
    for leaf, whole in zip(state_leaves(picked), state_leaves(stepped_state), strict=True):
        torch.testing.assert_close(leaf, whole[order])


def test_save_then_load_round_trips(stepped_state, tmp_path):
    path = tmp_path / "state.pt"
    save_state(stepped_state, path)
    assert_same(load_state(path), detach_state(stepped_state))


def test_load_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"object": pickle.loads(pickle.dumps(object()))}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state(path)


def test_detach_cuts_the_graph(stepped_state):
    assert any(leaf.requires_grad for leaf in state_leaves(stepped_state))
    assert not any(leaf.requires_grad for leaf in state_leaves(detach_state(stepped_state)))


def test_move_between_devices(stepped_state):
    moved = state_to(stepped_state, "meta")
    assert all(leaf.device.type == "meta" for leaf in state_leaves(moved))
    assert type(moved) is type(stepped_state)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_move_to_cuda_and_back(stepped_state):
    back = state_to(state_to(stepped_state, "cuda"), "cpu")
    assert_same(back, detach_state(stepped_state))


def test_reset_replaces_only_the_flagged_envs(stepped_state):
    fresh = map_state(torch.zeros_like, stepped_state)
    flags = torch.tensor([False, True, False, False, True])
    reset = reset_state(stepped_state, fresh, flags)
    for leaf, old in zip(state_leaves(reset), state_leaves(stepped_state), strict=True):
        assert (leaf[flags] == 0).all()
        torch.testing.assert_close(leaf[~flags], old[~flags])


def test_cat_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one state"):
        cat_states([])
