"""Supervised algorithmic tasks that validate a memory core apart from RL (Graves et al. 2014).

Shared by ``copy_task.py`` and ``associative_recall.py``: the batch generators, a sequence
model (core + linear read-out), the parameter-matched LSTM baseline and the training loop,
which prints the bit error per sequence as it goes and on longer sequences than trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ntm_rl.cores import LSTMCore, MemoryCore, NTMCore


@dataclass
class Batch:
    """Inputs ``[T, B, D]``, targets ``[T, B, bits]`` and a mask ``[T, B]`` of scored steps."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def copy_batch(batch_size: int, length: int, bits: int, generator: torch.Generator) -> Batch:
    """Copy: ``length`` random bit vectors, a delimiter, then reproduce them from memory.

    Inputs have ``bits + 1`` channels (the last is the delimiter); ``2 * length + 1`` steps.
    """
    steps = 2 * length + 1
    sequence = torch.randint(0, 2, (length, batch_size, bits), generator=generator).float()
    inputs = torch.zeros(steps, batch_size, bits + 1)
    inputs[:length, :, :bits] = sequence
    inputs[length, :, bits] = 1.0
    targets = torch.zeros(steps, batch_size, bits)
    targets[length + 1 :] = sequence
    mask = torch.zeros(steps, batch_size)
    mask[length + 1 :] = 1.0
    return Batch(inputs, targets, mask)


def associative_recall_batch(
    batch_size: int, num_items: int, bits: int, generator: torch.Generator, item_length: int = 3
) -> Batch:
    """Associative recall: ``num_items`` items of ``item_length`` bit vectors, each item preceded
    by a delimiter; then a query delimiter, a copy of one item (not the last), a query end; the
    target is the item that followed it.

    Inputs have ``bits + 2`` channels (item and query delimiters).
    """
    if num_items < 2:
        raise ValueError(f"associative recall needs at least 2 items, got {num_items}.")
    items = torch.randint(0, 2, (num_items, item_length, batch_size, bits), generator=generator).float()
    query = torch.randint(0, num_items - 1, (batch_size,), generator=generator)
    span = item_length + 1
    store_steps = num_items * span
    steps = store_steps + 2 * span + item_length
    inputs = torch.zeros(steps, batch_size, bits + 2)
    for i in range(num_items):
        inputs[i * span, :, bits] = 1.0
        inputs[i * span + 1 : (i + 1) * span, :, :bits] = items[i]
    envs = torch.arange(batch_size)
    inputs[store_steps, :, bits + 1] = 1.0
    inputs[store_steps + 1 : store_steps + span, :, :bits] = items[query, :, envs].transpose(0, 1)
    inputs[store_steps + span, :, bits + 1] = 1.0
    answer_start = store_steps + span + 1
    targets = torch.zeros(steps, batch_size, bits)
    targets[answer_start : answer_start + item_length] = items[query + 1, :, envs].transpose(0, 1)
    mask = torch.zeros(steps, batch_size)
    mask[answer_start : answer_start + item_length] = 1.0
    return Batch(
        inputs[: answer_start + item_length], targets[: answer_start + item_length], mask[: answer_start + item_length]
    )


class SequenceModel(nn.Module):
    """A memory core with a linear read-out to bit logits."""

    def __init__(self, core: MemoryCore, bits: int) -> None:
        super().__init__()
        self.core = core
        self.readout = nn.Linear(core.output_dim, bits)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        y, _ = self.core(inputs, self.core.initial_state(inputs.shape[1], inputs.device))
        return self.readout(y)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_lstm(input_dim: int, bits: int, target_params: int) -> SequenceModel:
    """The LSTM sequence model whose parameter count is closest to ``target_params``."""

    def lstm_params(hidden: int) -> int:  # nn.LSTM weights and two biases, then the read-out
        return 4 * hidden * (input_dim + hidden + 2) + hidden * bits + bits

    hidden = min(range(1, 4096), key=lambda h: abs(lstm_params(h) - target_params))
    model = SequenceModel(LSTMCore(input_dim, hidden), bits)
    assert parameter_count(model) == lstm_params(hidden)
    return model


def bit_errors(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Wrong bits per sequence, ``[B]``, on the scored steps."""
    wrong = ((logits > 0).float() != batch.targets).float() * batch.mask.unsqueeze(-1)
    return wrong.sum(dim=(0, 2))


def evaluate(model: SequenceModel, make: Callable[[int, int], Batch], sizes: range, per_size: int) -> dict[int, float]:
    """Mean bit error per sequence at each task size."""
    model.eval()
    with torch.no_grad():
        errors = {}
        for size in sizes:
            batch = make(size, per_size)
            errors[size] = bit_errors(model(batch.inputs), batch).mean().item()
    model.train()
    return errors


def mean_error(model: SequenceModel, make: Callable[[int, int], Batch], sizes: range, per_size: int) -> float:
    """Mean bit error per sequence over all ``sizes``."""
    errors = evaluate(model, make, sizes, per_size)
    return sum(errors.values()) / len(errors)


def train(
    name: str,
    model: SequenceModel,
    make: Callable[[int, int], Batch],
    validate: Callable[[], float],
    train_sizes: tuple[int, int],
    args: argparse.Namespace,
) -> dict:
    """Adam on masked binary cross-entropy, batches of sizes drawn uniformly from ``train_sizes``.

    Once the training error nears ``args.target``, ``validate`` (the error on fresh sequences)
    is checked at each log line; training stops when it is under half the target, or at
    ``args.max_minutes`` / ``args.updates``. The model keeps the parameters that validated best,
    since training error can spike late (the NTM's known instability).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    size_gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    recent: list[float] = []
    best_error, best_parameters = float("inf"), None
    update = 0
    while update < args.updates and time.perf_counter() - start < 60 * args.max_minutes:
        size = int(torch.randint(train_sizes[0], train_sizes[1] + 1, (1,), generator=size_gen))
        batch = make(size, args.batch_size)
        logits = model(batch.inputs)
        loss = (
            F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").sum(-1) * batch.mask
        ).sum() / batch.mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        update += 1
        recent.append(bit_errors(logits.detach(), batch).mean().item())
        if update % args.log_every == 0:
            elapsed = time.perf_counter() - start
            mean_error = sum(recent) / len(recent)
            recent.clear()
            line = (
                f"[{name}] update {update:6d}  sequences {update * args.batch_size:8d}  "
                f"{elapsed:7.1f}s  bit error per sequence {mean_error:7.3f}"
            )
            if mean_error < 3 * args.target:
                validation_error = validate()
                line += f"  (fresh sequences: {validation_error:.3f})"
                if validation_error < best_error:
                    best_error = validation_error
                    best_parameters = {k: v.clone() for k, v in model.state_dict().items()}
            print(line, flush=True)
            if best_error < args.target / 2:  # a margin for the noise of a few hundred sequences
                break
    if best_parameters is not None:
        model.load_state_dict(best_parameters)
    return {"updates": update, "seconds": round(time.perf_counter() - start, 1)}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grad-clip", type=float, default=10.0)
    parser.add_argument("--updates", type=int, default=1_000_000, help="upper bound on updates per model")
    parser.add_argument("--max-minutes", type=float, default=6.0, help="training time limit per model")
    parser.add_argument("--target", type=float, default=0.1, help="bit error per sequence to reach")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-sequences", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lstm", action="store_true", help="train only the NTM")


def sized_batch(make: Callable, bits: int, generator: torch.Generator, size: int, batch_size: int) -> Batch:
    return make(batch_size, size, bits, generator)


def run_task(
    task: str,
    make: Callable[[int, int, torch.Generator], Batch],
    input_dim: int,
    bits: int,
    train_sizes: tuple[int, int],
    long_sizes: range,
    args: argparse.Namespace,
) -> None:
    """Train the NTM and a parameter-matched LSTM on a task; print errors and a JSON summary."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ntm = SequenceModel(NTMCore(input_dim, controller_size=100, memory_size=128, word_size=20), bits)  # the paper's
    models = {"NTM": ntm}
    if not args.skip_lstm:
        models["LSTM"] = matched_lstm(input_dim, bits, parameter_count(ntm))
    summary = {"task": task, "train_sizes": list(train_sizes), "threads": args.threads, "models": {}}
    for name, model in models.items():
        hidden = getattr(model.core, "hidden_size", None)
        label = f"{name} ({parameter_count(model):,} parameters" + (f", hidden {hidden})" if hidden else ")")
        print(f"== {task}: {label}", flush=True)
        data = torch.Generator().manual_seed(args.seed + 1)
        trained_sizes = range(train_sizes[0], train_sizes[1] + 1)
        per_size = max(1, args.eval_sequences // 10)
        validation = partial(sized_batch, make, bits, torch.Generator().manual_seed(args.seed + 3))
        validate = partial(mean_error, model, validation, trained_sizes, per_size)
        result = train(name, model, partial(sized_batch, make, bits, data), validate, train_sizes, args)
        held_out = partial(sized_batch, make, bits, torch.Generator().manual_seed(args.seed + 2))
        in_range = evaluate(model, held_out, trained_sizes, per_size)
        longer = evaluate(model, held_out, long_sizes, args.eval_sequences)
        trained_error = sum(in_range.values()) / len(in_range)
        long_error = sum(longer.values()) / len(longer)
        reached = trained_error < args.target
        print(
            f"[{name}] bit error per sequence, sizes {train_sizes[0]}-{train_sizes[1]}: {trained_error:.3f} "
            f"({'under' if reached else 'NOT under'} {args.target}); sizes {long_sizes.start}-"
            f"{long_sizes.stop - 1} (never trained on): {long_error:.3f}",
            flush=True,
        )
        print(f"[{name}] per size beyond training: " + ", ".join(f"{k}: {v:.2f}" for k, v in longer.items()))
        summary["models"][name] = {
            "parameters": parameter_count(model),
            **result,
            "error_trained_sizes": round(trained_error, 3),
            "error_longer_sizes": round(long_error, 3),
            "error_by_longer_size": {k: round(v, 3) for k, v in longer.items()},
            "reached_target": reached,
        }
    print(json.dumps(summary))
