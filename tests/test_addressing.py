"""Each NTM addressing step against values computed by hand."""

import math

import pytest
import torch

from ntm_rl.cores import addressing


def test_content_weighting_matches_hand_computed_cosine_softmax():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # one env, N=3, M=2
    keys = torch.tensor([[[1.0, 0.0]]])
    strengths = torch.tensor([[2.0]])
    # cosines: 1, 0, 1/sqrt(2); weights proportional to exp(2 * cosine)
    scores = torch.tensor([2.0, 0.0, 2.0 / math.sqrt(2.0)])
    expected = scores.exp() / scores.exp().sum()
    got = addressing.content_weighting(memory, keys, strengths, eps=0.0)
    torch.testing.assert_close(got[0, 0], expected)


def test_content_weighting_of_zero_memory_is_uniform_and_finite():
    memory = torch.zeros(2, 5, 3)
    keys = torch.randn(2, 4, 3)
    got = addressing.content_weighting(memory, keys, torch.full((2, 4), 50.0))
    torch.testing.assert_close(got, torch.full((2, 4, 5), 0.2))


def test_content_weighting_survives_huge_strength():
    memory = torch.randn(1, 6, 4)
    got = addressing.content_weighting(memory, memory[:, :1], torch.tensor([[1e4]]))
    assert torch.isfinite(got).all()
    assert got[0, 0].argmax() == 0 and got[0, 0, 0] > 0.999


def test_interpolate_is_gate_weighted_mix():
    content = torch.tensor([[[1.0, 0.0, 0.0]]])
    previous = torch.tensor([[[0.0, 0.0, 1.0]]])
    got = addressing.interpolate(content, previous, torch.tensor([[0.25]]))
    torch.testing.assert_close(got, torch.tensor([[[0.25, 0.0, 0.75]]]))


def test_shift_moves_focus_by_the_offset_and_wraps_around():
    weights = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])  # focus on the last row, N=4
    forward = torch.tensor([[[0.0, 0.0, 1.0]]])  # offsets -1, 0, +1: all on +1
    backward = torch.tensor([[[1.0, 0.0, 0.0]]])
    torch.testing.assert_close(addressing.shift(weights, forward), torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]))
    torch.testing.assert_close(addressing.shift(weights, backward), torch.tensor([[[0.0, 0.0, 1.0, 0.0]]]))


def test_shift_is_circular_convolution_for_every_offset():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(3, 2, 7, generator=generator), -1)
    shifts = torch.softmax(torch.randn(3, 2, 5, generator=generator), -1)  # S = 2
    # out[n] = sum_o s[o] w[n - o]: torch.roll(w, o)[n] == w[n - o]
    expected = sum(shifts[..., j : j + 1] * torch.roll(weights, j - 2, dims=-1) for j in range(5))
    torch.testing.assert_close(addressing.shift(weights, shifts), expected)


def test_shift_by_a_spread_distribution_hand_computed():
    weights = torch.tensor([[[0.5, 0.5, 0.0, 0.0, 0.0]]])
    shifts = torch.tensor([[[0.2, 0.3, 0.5]]])  # -1: 0.2, 0: 0.3, +1: 0.5
    # row 0: 0.3*0.5 + 0.2*0.5 (from row 1) ; row 1: 0.3*0.5 + 0.5*0.5 (from row 0)
    # row 2: 0.5*0.5 (from row 1) ; row 4: 0.2*0.5 (from row 0, wrapping)
    expected = torch.tensor([[[0.25, 0.4, 0.25, 0.0, 0.1]]])
    torch.testing.assert_close(addressing.shift(weights, shifts), expected)


def test_sharpen_matches_power_normalisation():
    weights = torch.tensor([[[0.1, 0.2, 0.7]]])
    gamma = torch.tensor([[3.0]])
    expected = weights**3 / (weights**3).sum()
    torch.testing.assert_close(addressing.sharpen(weights, gamma), expected)


def test_sharpen_with_large_gamma_stays_a_distribution():
    weights = torch.softmax(torch.randn(4, 2, 16), -1)
    got = addressing.sharpen(weights, torch.full((4, 2), 500.0))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.sum(-1), torch.ones(4, 2))
    assert (got.argmax(-1) == weights.argmax(-1)).all()


def test_read_is_weighted_sum_of_rows():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    weights = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(addressing.read(memory, weights), torch.tensor([[[3.0, 4.0], [3.0, 4.0]]]))


def test_write_erases_then_adds():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    weights = torch.tensor([[[1.0, 0.5]]])
    erase = torch.tensor([[[1.0, 0.0]]])
    add = torch.tensor([[[10.0, 20.0]]])
    # row 0: [1*(1-1), 2*(1-0)] + [10, 20]; row 1: [3*(1-0.5), 4] + 0.5*[10, 20]
    expected = torch.tensor([[[10.0, 22.0], [6.5, 14.0]]])
    torch.testing.assert_close(addressing.write(memory, weights, erase, add), expected)
    torch.testing.assert_close(memory, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))  # input untouched


@pytest.mark.parametrize("heads", [2, 3])
def test_write_with_several_heads_multiplies_erasures_and_sums_adds(heads):
    generator = torch.Generator().manual_seed(heads)
    memory = torch.randn(2, 5, 3, generator=generator)
    weights = torch.softmax(torch.randn(2, heads, 5, generator=generator), -1)
    erase = torch.rand(2, heads, 3, generator=generator)
    add = torch.randn(2, heads, 3, generator=generator)
    expected = memory.clone()
    for i in range(heads):
        expected = expected * (1 - weights[:, i, :, None] * erase[:, i, None, :])
    for i in range(heads):
        expected = expected + weights[:, i, :, None] * add[:, i, None, :]
    torch.testing.assert_close(addressing.write(memory, weights, erase, add), expected)


def test_read_write_with_one_head_matches_read_then_write():
    generator = torch.Generator().manual_seed(3)
    memory = torch.randn(3, 7, 4, generator=generator)
    read_weights = torch.softmax(torch.randn(3, 2, 7, generator=generator), -1)
    write_weights = torch.softmax(torch.randn(3, 1, 7, generator=generator), -1)
    erase = torch.rand(3, 1, 4, generator=generator)
    add = torch.randn(3, 1, 4, generator=generator)
    read_vectors, new_memory = addressing.read_write(memory, read_weights, write_weights, erase, add)
    torch.testing.assert_close(read_vectors, addressing.read(memory, read_weights))
    torch.testing.assert_close(new_memory, addressing.write(memory, write_weights, erase, add))


@pytest.mark.parametrize("write_heads", [1, 2])
def test_read_write_gradients(write_heads):
    generator = torch.Generator().manual_seed(write_heads)

    def leaf(*shape, transform=lambda t: t):
        return transform(torch.randn(*shape, generator=generator, dtype=torch.float64)).requires_grad_(True)

    inputs = (
        leaf(2, 5, 3),
        leaf(2, 2, 5, transform=lambda t: t.softmax(-1)),
        leaf(2, write_heads, 5, transform=lambda t: t.softmax(-1)),
        leaf(2, write_heads, 3, transform=torch.sigmoid),
        leaf(2, write_heads, 3),
    )
    assert torch.autograd.gradcheck(addressing.read_write, inputs)
    # The new memory alone (the read vectors unused), as at the end of a sequence.
    assert torch.autograd.gradcheck(lambda *args: addressing.read_write(*args)[1], inputs)


def test_cosine_similarity_gradients():
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64)
    memory[0, 2] = 0.0  # a zero row: finite gradients thanks to eps
    keys = torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)
    inputs = (memory.requires_grad_(True), keys.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda m, k: addressing.cosine_similarity(m, k, 1e-6), inputs)


def _address_inputs(shift_range: int, generator: torch.Generator, dtype=torch.float64):
    def leaf(*shape, transform=lambda t: t):
        return transform(torch.randn(*shape, generator=generator, dtype=dtype)).requires_grad_(True)

    return (
        leaf(2, 6, 3),  # memory
        leaf(2, 3, 3, transform=torch.tanh),  # keys
        leaf(2, 3, transform=torch.nn.functional.softplus),  # strengths
        leaf(2, 3, transform=torch.sigmoid),  # gates
        leaf(2, 3, 2 * shift_range + 1, transform=lambda t: t.softmax(-1)),  # shifts
        leaf(2, 3, transform=lambda t: 1 + torch.nn.functional.softplus(t)),  # sharpening
        leaf(2, 3, 6, transform=lambda t: t.softmax(-1)),  # previous weightings
    )


def _address_composed(memory, keys, strengths, gates, shifts, sharpening, previous, eps=1e-6):
    weights = addressing.content_weighting(memory, keys, strengths, eps)
    weights = addressing.interpolate(weights, previous, gates)
    return addressing.sharpen(addressing.shift(weights, shifts), sharpening)


@pytest.mark.parametrize("shift_range", [0, 1, 2])
def test_address_equals_the_composed_steps_with_their_gradients(shift_range):
    inputs = _address_inputs(shift_range, torch.Generator().manual_seed(shift_range))
    fused = addressing.address(*inputs, eps=1e-6)
    composed = _address_composed(*inputs)
    torch.testing.assert_close(fused, composed)
    grad = torch.randn_like(fused)
    fused_grads = torch.autograd.grad(fused, inputs, grad)
    composed_grads = torch.autograd.grad(composed, inputs, grad)
    for name, got, expected in zip(
        ["memory", "keys", "strengths", "gates", "shifts", "sharpening", "previous"],
        fused_grads,
        composed_grads,
        strict=True,
    ):
        torch.testing.assert_close(got, expected, msg=lambda m, name=name: f"gradient of {name}: {m}")
    assert torch.autograd.gradcheck(lambda *args: addressing.address(*args, eps=1e-6), inputs)
