"""The MemoryCore contract, for the NTM, LSTM and GRU cores."""

import pytest
import torch

from ntm_rl.cores import GRUCore, LSTMCore, NTMCore, NTMState, make_core, map_state, state_leaves
from ntm_rl.cores.base import EpisodeSegments

INPUT_DIM = 5


def small_ntm(**kwargs) -> NTMCore:
    options = dict(controller_size=16, memory_size=12, word_size=6) | kwargs
    return NTMCore(INPUT_DIM, **options)


CORE_FACTORIES = {
    "ntm-lstm": lambda: small_ntm(),
    "ntm-gru": lambda: small_ntm(controller="gru", num_read_heads=2, num_write_heads=2, shift_range=2),
    "ntm-mlp-learned": lambda: small_ntm(controller="mlp", memory_init="learned", num_read_heads=3),
    "ntm-random": lambda: small_ntm(memory_init="random", clip=None),
    "ntm-ring": lambda: small_ntm(shift_init=1, read_init="diffuse"),
    "lstm": lambda: LSTMCore(INPUT_DIM, 16),
    "gru": lambda: GRUCore(INPUT_DIM, 16),
}


@pytest.fixture(params=sorted(CORE_FACTORIES))
def core(request):
    torch.manual_seed(0)
    return CORE_FACTORIES[request.param]()


def random_starts(steps: int, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(steps, batch, generator=generator) < 0.2
    starts[0] = True
    return starts


def assert_states_close(a, b, **tolerances):
    for leaf_a, leaf_b in zip(state_leaves(a), state_leaves(b), strict=True):
        torch.testing.assert_close(leaf_a, leaf_b, **tolerances)


def test_output_and_state_shapes_are_batch_first(core):
    state = core.initial_state(3)
    y, next_state = core.step(torch.randn(3, INPUT_DIM), state)
    assert y.shape == (3, core.output_dim)
    ys, _ = core(torch.randn(4, 3, INPUT_DIM), state)
    assert ys.shape == (4, 3, core.output_dim)
    assert all(leaf.shape[0] == 3 for leaf in state_leaves(next_state))


def test_stepping_equals_forward_with_resets_inside_the_sequence(core):
    steps, batch = 12, 4
    x = torch.randn(steps, batch, INPUT_DIM)
    starts = random_starts(steps, batch, seed=1)
    state = core.initial_state(batch)
    stepped = []
    for t in range(steps):
        y, state = core.step(x[t], state, starts[t])
        stepped.append(y)
    ys, final = core(x, core.initial_state(batch), starts)
    torch.testing.assert_close(torch.stack(stepped), ys, atol=1e-5, rtol=1e-5)
    assert_states_close(state, final, atol=1e-5, rtol=1e-5)


def test_stepping_equals_forward_without_resets(core):
    x = torch.randn(9, 3, INPUT_DIM)
    state = core.initial_state(3)
    stepped = []
    for t in range(9):
        y, state = core.step(x[t], state)
        stepped.append(y)
    ys, _ = core(x, core.initial_state(3))
    torch.testing.assert_close(torch.stack(stepped), ys, atol=1e-5, rtol=1e-5)


def unroll_gradients(core, x, state, starts, how):
    """Outputs, final state and the gradients of a loss on both (parameters, inputs, carried state)."""
    core.zero_grad()
    x = x.clone().requires_grad_()
    state = map_state(lambda leaf: leaf.detach().clone().requires_grad_(), state)
    if how == "stepping":
        outputs, final = [], state
        for t in range(x.shape[0]):
            y, final = core.step(x[t], final, starts[t])
            outputs.append(y)
        ys = torch.stack(outputs)
    else:
        ys, final = core(x, state, starts, checkpoint_steps=3 if how == "checkpointed" else None)
    loss = ys.square().sum() + sum(leaf.square().sum() for leaf in state_leaves(final))
    loss.backward()
    grads = [p.grad.clone() for p in core.parameters() if p.grad is not None]
    return ys, final, [x.grad, *grads, *(leaf.grad for leaf in state_leaves(state))]


@pytest.mark.parametrize("how", ["forward", "checkpointed"])
def test_forward_equals_stepping_in_value_and_gradient(core, how):
    """Episodes laid side by side (and unrolled in checkpointed chunks) change nothing: outputs,
    the final state and every gradient equal stepping one timestep at a time."""
    steps, batch = 10, 4
    state = core.initial_state(batch)
    for _ in range(2):  # a carried state that is not the initial one
        _, state = core.step(torch.randn(batch, INPUT_DIM), state)
    starts = random_starts(steps, batch, seed=2)
    starts[0] = torch.tensor([True, False, False, True])
    starts[:, 2] = False  # one env runs through the whole sequence
    x = torch.randn(steps, batch, INPUT_DIM)
    expected = unroll_gradients(core, x, state, starts, "stepping")
    ys, final, grads = unroll_gradients(core, x, state, starts, how)
    torch.testing.assert_close(ys, expected[0], atol=1e-5, rtol=1e-5)
    assert_states_close(final, expected[1], atol=1e-5, rtol=1e-5)
    assert len(grads) == len(expected[2])
    for grad, reference in zip(grads, expected[2], strict=True):
        torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)


def test_episodes_inside_a_sequence_take_as_many_sequential_steps_as_the_longest():
    core = small_ntm()
    calls = []
    step = core._step
    core._step = lambda x, state: calls.append(x.shape[0]) or step(x, state)
    starts = torch.zeros(12, 3, dtype=torch.bool)
    starts[[4, 8]] = True  # three episodes of 4 steps in each of 3 envs
    starts[10, 0] = True
    core(torch.randn(12, 3, INPUT_DIM), core.initial_state(3), starts)
    assert calls == [10] * 4  # 10 segments (4 + 3 + 3) side by side, 4 steps each at most


def test_episode_segments_split_and_merge_round_trip():
    starts = torch.tensor([[True, False], [False, False], [True, False], [False, True], [False, False]])
    segments = EpisodeSegments(starts)
    assert segments.count == 4 and segments.lengths.tolist() == [2, 3, 3, 2]
    assert segments.env.tolist() == [0, 0, 1, 1] and segments.last.tolist() == [1, 3]
    x = torch.arange(10.0).view(5, 2, 1)  # x[t, b] = 2t + b
    split = segments.split(x)
    assert split.shape == (3, 4, 1)
    assert split[:, :, 0].t().tolist() == [[0.0, 2.0, 0.0], [4.0, 6.0, 8.0], [1.0, 3.0, 5.0], [7.0, 9.0, 0.0]]
    torch.testing.assert_close(segments.merge(split), x)


def test_reset_acts_per_env_and_equals_a_fresh_initial_state(core):
    batch = 4
    state = core.initial_state(batch)
    for _ in range(3):
        _, state = core.step(torch.randn(batch, INPUT_DIM), state)
    x = torch.randn(batch, INPUT_DIM)
    episode_start = torch.tensor([True, False, True, False])
    y_reset, _ = core.step(x, state, episode_start)
    y_fresh, _ = core.step(x, core.initial_state(batch))
    y_kept, _ = core.step(x, state)
    torch.testing.assert_close(y_reset[episode_start], y_fresh[episode_start])
    torch.testing.assert_close(y_reset[~episode_start], y_kept[~episode_start])
    assert not torch.allclose(y_fresh[~episode_start], y_kept[~episode_start])


def test_ntm_weightings_are_distributions_after_every_step():
    torch.manual_seed(0)
    core = small_ntm(num_read_heads=2, num_write_heads=2, shift_range=3)
    state = core.initial_state(8)
    torch.testing.assert_close(state.weights.sum(-1), torch.ones(8, 4))
    for t in range(20):
        _, state = core.step(torch.randn(8, INPUT_DIM) * 5, state, torch.full((8,), t == 10))
        assert (state.weights >= 0).all()
        torch.testing.assert_close(state.weights.sum(-1), torch.ones(8, 4))


def test_ntm_state_layout_and_size():
    core = NTMCore(10, controller_size=100, memory_size=128, word_size=20)
    state = core.initial_state(2)
    assert isinstance(state, NTMState)
    assert state.memory.shape == (2, 128, 20)
    assert state.read_vectors.shape == (2, 1, 20)
    assert state.weights.shape == (2, 2, 128)
    assert core.output_dim == 120
    # N*M + R*M + (R+W)*N + LSTM (h, c): the ~3,000 floats per env of the design
    from ntm_rl.cores import state_numel

    assert state_numel(state) == 128 * 20 + 20 + 2 * 128 + 200


def test_ntm_initial_memory_modes():
    constant = small_ntm()
    torch.testing.assert_close(constant.initial_state(2).memory, torch.full((2, 12, 6), 1e-6))
    assert "memory_bias" not in dict(constant.named_parameters())
    learned = small_ntm(memory_init="learned")
    assert "memory_bias" in dict(learned.named_parameters())
    random = small_ntm(memory_init="random")
    memory = random.initial_state(2).memory
    assert memory.std() > 0.1 and "memory_bias" not in dict(random.named_parameters())
    torch.testing.assert_close(memory, random.initial_state(2).memory)  # fixed, not redrawn


def test_shift_init_walks_every_head_a_row_a_step_and_diffuse_read_heads_start_even():
    torch.manual_seed(0)
    core = small_ntm(shift_init=1, read_init="diffuse", num_read_heads=2)
    state = core.initial_state(3)
    torch.testing.assert_close(state.weights[:, :2], torch.full((3, 2, 12), 1 / 12))
    assert (state.weights[:, 2].argmax(-1) == 0).all() and state.weights[:, 2, 0].min() > 0.9
    traces = []
    core.tracer = traces.append
    core(torch.randn(5, 3, INPUT_DIM), state)
    for t, trace in enumerate(traces):
        assert trace.shift[..., 2].min() > 0.8  # offset +1 (index S + 1)
        assert (trace.write_weights[:, 0].argmax(-1) == t + 1).all()
    plain = small_ntm()
    plain_traces = []
    plain.tracer = plain_traces.append
    plain(torch.randn(5, 3, INPUT_DIM), plain.initial_state(3))
    assert plain_traces[0].shift[..., 2].max() < 0.6


def test_a_ring_buffer_initialisation_learns_a_delayed_recall_the_default_does_not(one_torch_thread):
    """Supervised repeat-previous at delay 4 (answer the symbol of 4 steps earlier) for 150 updates:
    heads that start walking a row a step, with read heads spread over the rows, learn it; heads that
    start together on row 0 stay near the half that the current input and the controller give."""

    def accuracy(**kwargs) -> float:
        torch.manual_seed(0)
        core = NTMCore(4, controller_size=16, memory_size=8, word_size=4, **kwargs)
        readout = torch.nn.Linear(core.output_dim, 4)
        optimizer = torch.optim.Adam([*core.parameters(), *readout.parameters()], lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        delay, steps, batch, correct = 4, 12, 32, []
        for _ in range(150):
            symbols = torch.randint(0, 4, (steps, batch), generator=generator)
            ys, _ = core(torch.nn.functional.one_hot(symbols, 4).float(), core.initial_state(batch))
            logits, labels = readout(ys[delay:]), symbols[:-delay]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            correct.append((logits.argmax(-1) == labels).float().mean().item())
        return sum(correct[-10:]) / 10

    ring, plain = accuracy(shift_init=1, read_init="diffuse"), accuracy()
    assert ring > 0.75 and plain < 0.65, (ring, plain)


def test_gradients_reach_learned_initial_parameters():
    torch.manual_seed(0)
    core = small_ntm(memory_init="learned")
    ys, _ = core(torch.randn(6, 3, INPUT_DIM), core.initial_state(3))
    ys.square().sum().backward()
    for name in ("memory_bias", "initial_read", "initial_weight_logits"):
        grad = getattr(core, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradients_reach_initial_parameters_through_a_reset_inside_the_sequence():
    torch.manual_seed(0)
    core = small_ntm(memory_init="learned")
    starts = torch.zeros(6, 2, dtype=torch.bool)
    starts[3, 1] = True
    state = core.initial_state(2)
    state = NTMState(
        state.controller,
        state.memory.detach().clone(),
        state.read_vectors.detach().clone(),
        state.weights.detach().clone(),
    )
    ys, _ = core(torch.randn(6, 2, INPUT_DIM), state, starts)
    ys.square().sum().backward()
    assert core.memory_bias.grad.abs().sum() > 0  # only the reset can have carried it


class Unroll(torch.nn.Module):
    """A core over a sequence from its initial state: every parameter is an input of forward."""

    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, x, starts):
        ys, final = self.core(x, self.core.initial_state(x.shape[1]), starts)
        return ys, final.memory


@pytest.mark.parametrize(("controller", "write_heads"), [("lstm", 1), ("gru", 2), ("mlp", 1)])
def test_ntm_gradcheck_in_double_precision(controller, write_heads):
    torch.manual_seed(0)
    core = NTMCore(
        3,
        controller=controller,
        controller_size=4,
        memory_size=5,
        word_size=3,
        num_write_heads=2,
        memory_init="learned",
    ).double()
    unroll = Unroll(core)
    names, values = zip(
        *[(n, p.detach().clone().requires_grad_(True)) for n, p in unroll.named_parameters()], strict=True
    )
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    starts = torch.tensor([[True, True], [False, False], [False, True], [False, False]])

    def function(x, *parameters):
        return torch.func.functional_call(unroll, dict(zip(names, parameters, strict=True)), (x, starts))

    assert torch.autograd.gradcheck(function, (x, *values), eps=1e-6, atol=1e-5)


def test_core_by_name():
    assert isinstance(make_core("ntm", 4, memory_size=8), NTMCore)
    assert isinstance(make_core("gru", 4, hidden_size=8), GRUCore)
    with pytest.raises(ValueError, match="Unknown core 'transformer'"):
        make_core("transformer", 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"memory_size": 0}, "memory_size must be an integer >= 1, got 0"),
        ({"word_size": -3}, "word_size must be an integer >= 1"),
        ({"num_read_heads": 0}, "num_read_heads must be an integer >= 1"),
        ({"num_write_heads": 1.5}, "num_write_heads must be an integer"),
        ({"memory_size": 8, "shift_range": 8}, r"shift_range must be smaller than memory_size \(8\), got 8"),
        ({"shift_range": -1}, "shift_range must be an integer >= 0"),
        ({"controller": "transformer"}, "controller must be 'lstm', 'gru' or 'mlp'"),
        ({"memory_init": "zeros"}, "memory_init must be 'constant', 'learned' or 'random'"),
        ({"clip": 0.0}, "clip must be positive or None"),
        ({"shift_init": 2}, r"shift_init must be an offset in -shift_range..shift_range \(-1..1\) or None, got 2"),
        ({"read_init": "spread"}, "read_init must be 'focused' or 'diffuse', got 'spread'"),
    ],
)
def test_ntm_rejects_bad_arguments_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NTMCore(4, **kwargs)


@pytest.mark.parametrize("factory", [lambda: NTMCore(4), lambda: LSTMCore(4), lambda: GRUCore(4)])
def test_mismatched_input_width_is_reported(factory):
    core = factory()
    with pytest.raises(ValueError, match=r"D=4, got \(2, 7\).*input_dim=7"):
        core.step(torch.randn(2, 7), core.initial_state(2))
    with pytest.raises(ValueError, match=r"\[T, B, D\] with D=4"):
        core(torch.randn(2, 4), core.initial_state(2))
    with pytest.raises(ValueError, match="episode_starts has shape"):
        core(torch.randn(3, 2, 4), core.initial_state(2), torch.zeros(3, 5, dtype=torch.bool))


def test_bad_sizes_for_rnn_cores():
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        LSTMCore(4, 0)
    with pytest.raises(ValueError, match="input_dim must be an integer >= 1"):
        GRUCore(0, 8)


def test_forward_resets_at_the_first_step_only(core):
    """Resets at the start of a sequence alone (the RNN cores' fused path) act per env."""
    batch = 3
    state = core.initial_state(batch)
    for _ in range(2):
        _, state = core.step(torch.randn(batch, INPUT_DIM), state)
    x = torch.randn(5, batch, INPUT_DIM)
    starts = torch.zeros(5, batch, dtype=torch.bool)
    starts[0] = torch.tensor([True, False, True])
    ys, _ = core(x, state, starts)
    fresh, _ = core(x, core.initial_state(batch))
    kept, _ = core(x, state)
    torch.testing.assert_close(ys[:, starts[0]], fresh[:, starts[0]])
    torch.testing.assert_close(ys[:, ~starts[0]], kept[:, ~starts[0]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_core_on_cuda_matches_cpu(core):
    x = torch.randn(8, 4, INPUT_DIM)
    starts = random_starts(8, 4, seed=2)
    ys_cpu, _ = core(x, core.initial_state(4), starts)
    core.cuda()
    ys_cuda, state = core(x.cuda(), core.initial_state(4, "cuda"), starts.cuda())
    assert all(leaf.is_cuda for leaf in state_leaves(state))
    torch.testing.assert_close(ys_cuda.cpu(), ys_cpu, atol=1e-4, rtol=1e-4)


def test_compiled_step_matches_eager_outputs_and_gradients():
    torch.manual_seed(0)
    eager = small_ntm()
    compiled = small_ntm()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_step(dynamic=True)
    x = torch.randn(6, 3, INPUT_DIM)
    starts = random_starts(6, 3, seed=4)
    results = []
    for core in (eager, compiled):
        ys, _ = core(x, core.initial_state(3), starts)
        ys.square().sum().backward()
        results.append((ys.detach(), [p.grad for p in core.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    for compiled_grad, eager_grad in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "factory",
    [
        lambda chrono: LSTMCore(INPUT_DIM, 32, chrono_init=chrono),
        lambda chrono: GRUCore(INPUT_DIM, 32, chrono_init=chrono),
        lambda chrono: small_ntm(controller_size=32, chrono_init=chrono),
        lambda chrono: small_ntm(controller="gru", controller_size=32, chrono_init=chrono),
    ],
    ids=["lstm", "gru", "ntm-lstm", "ntm-gru"],
)
def test_chrono_init_keeps_a_cue_across_a_hundred_blank_steps(factory):
    """Two inputs at step 0, then 100 steps of zeros. With PyTorch's initialisation an LSTM's or
    GRU's two states have converged and no gradient of the last output reaches the first input (an
    NTM's memory keeps a little of both); with chrono initialisation both survive, several times over."""

    def cue_gap(core) -> tuple[float, float]:
        cue = torch.zeros(101, 2, INPUT_DIM)
        cue[0, 0], cue[0, 1] = 1.0, -1.0
        cue.requires_grad_()
        ys, _ = core(cue, core.initial_state(2))
        ys[-1].sum().backward()
        return (ys[-1, 0] - ys[-1, 1]).norm().item(), cue.grad[0].norm().item()

    torch.manual_seed(0)
    default_gap, default_grad = cue_gap(factory(None))
    torch.manual_seed(0)
    chrono_gap, chrono_grad = cue_gap(factory(200))
    is_ntm = isinstance(factory(None), NTMCore)
    assert (default_grad > 1e-5) if is_ntm else (default_grad < 1e-15 and default_gap < 1e-6)
    # (half the units are chrono-initialised; an NTM's memory already keeps some of the cue)
    assert chrono_gap > 1e-3 and chrono_gap > 3 * default_gap
    assert chrono_grad > 5e-4 and chrono_grad > 3 * default_grad


def test_chrono_init_sets_the_gate_biases_of_half_the_units():
    torch.manual_seed(0)
    bound = torch.log(torch.tensor(49.0))
    lstm, plain_lstm = LSTMCore(INPUT_DIM, 16, chrono_init=50).rnn, LSTMCore(INPUT_DIM, 16, chrono_init=None).rnn
    forget = lstm.bias_ih_l0[16:24] + lstm.bias_hh_l0[16:24]
    torch.testing.assert_close(lstm.bias_ih_l0[:8] + lstm.bias_hh_l0[:8], -forget)
    assert forget.min() >= 0 and forget.max() <= bound and forget.std() > 0.1
    # the other half keep PyTorch's init: biases within +-1/sqrt(hidden) each
    for rnn in (lstm, plain_lstm):
        fast = torch.cat([rnn.bias_ih_l0[8:16], rnn.bias_ih_l0[24:32], rnn.bias_hh_l0[8:16], rnn.bias_hh_l0[24:32]])
        assert fast.abs().max() <= 0.25
    gru = GRUCore(INPUT_DIM, 16, chrono_init=50).rnn
    update = gru.bias_ih_l0[16:24] + gru.bias_hh_l0[16:24]
    assert update.min() >= 0 and update.max() <= bound and update.std() > 0.1
    assert gru.bias_ih_l0[24:32].abs().max() <= 0.25 and gru.bias_hh_l0[24:32].abs().max() <= 0.25
    with pytest.raises(ValueError, match="chrono_init must be at least 3"):
        GRUCore(INPUT_DIM, 16, chrono_init=2)
    with pytest.raises(ValueError, match="chrono_init needs a recurrent controller"):
        small_ntm(controller="mlp", chrono_init=50)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("how", ["forward", "checkpointed"])
def test_episodes_side_by_side_on_cuda_equal_stepping(core, how):
    core = core.to("cuda")
    starts = random_starts(10, 4, seed=3).cuda()
    x = torch.randn(10, 4, INPUT_DIM, device="cuda")
    state = core.initial_state(4, "cuda")
    expected = unroll_gradients(core, x, state, starts, "stepping")
    ys, final, grads = unroll_gradients(core, x, state, starts, how)
    torch.testing.assert_close(ys, expected[0], atol=1e-4, rtol=1e-4)
    assert_states_close(final, expected[1], atol=1e-4, rtol=1e-4)
    for grad, reference in zip(grads, expected[2], strict=True):
        torch.testing.assert_close(grad, reference, atol=1e-4, rtol=1e-3)
