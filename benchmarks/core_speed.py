"""Speed of the NTM core against an nn.LSTM of its controller's size, in one run.

Both sides unroll 64-step sequences one timestep at a time (as a policy does), for forward
(no grad) and forward+backward, at each batch size; a round times every configuration once, in
alternation, and the figures are medians over rounds, so both sides see the same machine noise.

    python benchmarks/core_speed.py                      # CPU, 1 thread, batches 16 and 256
    python benchmarks/core_speed.py --compile             # adds the NTM with a compiled step
    python benchmarks/core_speed.py --device cuda --batch-sizes 256 4096

Prints one line per configuration (env steps/s = batch * timesteps / second) and the cost ratio
NTM/LSTM (the LSTM's steps/s over the NTM's), then a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ntm_rl.cores import NTMCore


def lstm_unroll(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """nn.LSTM stepped one timestep at a time, as a recurrent policy steps it."""
    batch = x.shape[1]
    hc = (x.new_zeros(1, batch, lstm.hidden_size), x.new_zeros(1, batch, lstm.hidden_size))
    outputs = []
    for t in range(x.shape[0]):
        y, hc = lstm(x[t : t + 1], hc)
        outputs.append(y)
    return torch.cat(outputs)


def ntm_unroll(ntm: NTMCore, x: torch.Tensor) -> torch.Tensor:
    """The NTM core over the sequence (its ``forward`` steps one timestep at a time)."""
    y, _ = ntm(x, ntm.initial_state(x.shape[1], x.device))
    return y


def time_once(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def make_case(model: nn.Module, unroll: Callable, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def run() -> None:
        if backward:
            model.zero_grad(set_to_none=True)
            unroll(model, x).square().mean().backward()
        else:
            with torch.no_grad():
                unroll(model, x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (both sides)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--input-dim", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time the NTM with torch.compile'd steps")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} asked for, but torch sees no CUDA device. Use --device cpu.")
    torch.manual_seed(0)
    ntm = NTMCore(args.input_dim, controller="lstm", controller_size=100, memory_size=128, word_size=20).to(device)
    lstm = nn.LSTM(args.input_dim, 100).to(device)
    models = {"lstm": (lstm, lstm_unroll), "ntm": (ntm, ntm_unroll)}
    if args.compile:
        compiled = NTMCore(args.input_dim, controller="lstm", controller_size=100, memory_size=128, word_size=20)
        compiled.load_state_dict(ntm.state_dict())
        models["ntm_compiled"] = (compiled.to(device).compile_step(), ntm_unroll)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"device: {card}; torch {torch.__version__}; sequences of {args.seq_len} steps")
    print("NTM: LSTM-100 controller, memory 128x20, 1 read head, 1 write head, shift -1..1")

    cases = {}
    for batch in args.batch_sizes:
        x = torch.randn(args.seq_len, batch, args.input_dim, device=device)
        for mode in ("forward", "forward+backward"):
            backward = mode == "forward+backward"
            for name, (model, unroll) in models.items():
                cases[(batch, mode, name)] = make_case(model, unroll, x, backward)
    for run in cases.values():  # warm-up: allocator, kernels, autograd, compilation
        run()

    times: dict[tuple, list[float]] = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, run in cases.items():
            times[key].append(time_once(run, device))

    summary = []
    for batch in args.batch_sizes:
        for mode in ("forward", "forward+backward"):
            steps = batch * args.seq_len
            rates = {name: steps / statistics.median(times[(batch, mode, name)]) for name in models}
            line = f"batch {batch:5d}  {mode:17s}  LSTM {rates['lstm']:10,.0f} steps/s"
            row = {"batch": batch, "mode": mode, "lstm_steps_per_s": round(rates["lstm"])}
            for name in models:
                if name != "lstm":
                    ratio = rates["lstm"] / rates[name]
                    line += f"  {name.upper().replace('_', ' ')} {rates[name]:10,.0f} steps/s (cost {ratio:4.2f}x)"
                    row |= {f"{name}_steps_per_s": round(rates[name]), f"{name}_cost_ratio": round(ratio, 2)}
            print(line)
            summary.append(row)
    print(json.dumps({"device": card, "results": summary}))


if __name__ == "__main__":
    main()
