"""What a long training sequence costs: time and peak memory per env step of one gradient step.

For each core (library default sizes unless ``--ntm-kwargs`` / ``--rnn-hidden`` say otherwise),
sequence length ``T`` and batch ``B`` (16 by default), one forward and backward pass over a
``[T, B]`` sequence of one episode per env (no reset inside: the longest chain of sequential steps),
with and without gradient checkpointing (``checkpoint_steps``). Each measurement runs in a fresh
process so that its peak resident memory (``ru_maxrss``) is its own; the figure reported is that
peak minus the process's peak before the step (imports, the model, one warm-up step at T=4), so it
is the memory the sequence needed (on CUDA, the peak of torch's allocator above what was allocated
before). The child processes run with ``MALLOC_MMAP_THRESHOLD_=65536``:
by default glibc raises that threshold as large blocks are freed and then keeps freed tensors in
its heap, where the resident size stays at the high-water mark of everything ever allocated
(checkpointed 2,048-step NTM sequences then look 2-3x bigger than they are). The baseline is the same process's 32-step sequence: time per
env step at each ``T`` is also printed as a ratio to it.

    python benchmarks/sequence_cost.py                               # ntm lstm gru x 32 128 512 2048
    python benchmarks/sequence_cost.py --cores ntm --lengths 2048 --checkpoint-steps 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from ntm_rl.cores import make_core


def measure(
    core_name: str, kwargs: dict, length: int, batch: int, checkpoint_steps: int | None, repeats: int, device: str
) -> dict:
    """One configuration, in this process: seconds per env step and extra peak memory (MiB)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    input_dim, cuda = 8, device.startswith("cuda")
    core = make_core(core_name, input_dim, **kwargs).to(device)
    head = torch.nn.Linear(core.output_dim, 1).to(device)

    def train_step(steps: int) -> None:
        x = torch.randn(steps, batch, input_dim, device=device)
        starts = torch.zeros(steps, batch, dtype=torch.bool, device=device)
        starts[0] = True
        y, _ = core(x, core.initial_state(batch, device), starts, checkpoint_steps)
        head(y).square().mean().backward()
        if cuda:
            torch.cuda.synchronize()

    train_step(4)  # warm-up
    before = torch.cuda.memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_step(length)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"core": core_name, "length": length, "batch": batch, "checkpoint_steps": checkpoint_steps,
            "device": device, "us_per_env_step": 1e6 * min(seconds) / (length * batch),
            "peak_mib": (peak - before) / 2**20, "parameters": sum(p.numel() for p in core.parameters())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", nargs="+", default=["ntm", "lstm", "gru"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[32, 128, 512, 2048])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--checkpoint-steps", type=int, default=64, help="chunk size of the checkpointed runs")
    parser.add_argument("--ntm-kwargs", type=json.loads, default={}, help="e.g. '{\"memory_size\": 64}'")
    parser.add_argument("--rnn-hidden", type=int, help="LSTM and GRU hidden size (default: the library's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (peak memory: torch's allocator there)")
    parser.add_argument("--one", type=json.loads, help=argparse.SUPPRESS)  # a single measurement (child process)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(**args.one)))
        return

    print(f"torch {torch.__version__}, {args.device}, 1 thread, batch {args.batch}; time per env step (forward + "
          "backward), and peak memory above the process's peak before the step")  # fmt: skip
    print(f"{'core':5s} {'params':>8s} {'T':>5s} {'checkpoint':>10s} {'us/env step':>12s} {'vs T=32':>8s} "
          f"{'peak MiB':>9s}")  # fmt: skip
    child_env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}  # resident size follows live memory
    results = []
    for core in args.cores:
        kwargs = (
            args.ntm_kwargs if core == "ntm" else ({} if args.rnn_hidden is None else {"hidden_size": args.rnn_hidden})
        )
        reference = None
        for length in args.lengths:
            for checkpoint_steps in (None, args.checkpoint_steps):
                if checkpoint_steps is not None and (core != "ntm" or checkpoint_steps >= length):
                    continue  # LSTM and GRU run fused and do not checkpoint; a chunk as long as T is no checkpoint
                one = dict(core_name=core, kwargs=kwargs, length=length, batch=args.batch,
                           checkpoint_steps=checkpoint_steps, repeats=args.repeats, device=args.device)  # fmt: skip
                output = subprocess.run([sys.executable, __file__, "--one", json.dumps(one)], check=True,
                                        capture_output=True, text=True, env=child_env).stdout  # fmt: skip
                result = json.loads(output.strip().splitlines()[-1])
                results.append(result)
                if length == args.lengths[0] and checkpoint_steps is None:
                    reference = result["us_per_env_step"]
                ratio = result["us_per_env_step"] / reference if reference else float("nan")
                print(f"{core:5s} {result['parameters']:8,d} {length:5d} {str(checkpoint_steps or '-'):>10s} "
                      f"{result['us_per_env_step']:12.1f} {ratio:8.2f} {result['peak_mib']:9.1f}", flush=True)  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
