"""Can a core carry a T-maze cue across a long corridor when the answer is given? (supervised)

The passive T-maze's sequences (``envs.probes.TMaze``: the cue at step 0, ``corridor_length`` blank
steps, the junction flag at the last step) with the cue as the label at the junction: a core and a
linear head trained by cross-entropy on that one step, over a fixed set of episodes, batch 16, Adam.
It separates what the core can hold from what reinforcement learning makes of it: if a core learns
the cue here but not in ``defaults_sweep.py --tasks tmaze_1000``, the gap lies in the RL signal.
Prints the loss and the test accuracy (256 fresh episodes; chance 0.5) after every epoch.

    python benchmarks/cue_supervised.py --core gru --corridor 1000
    python benchmarks/cue_supervised.py --core ntm --corridor 100 --core-kwargs '{"memory_size": 16}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ntm_rl.cores import make_core
from ntm_rl.envs import TMaze


def episodes(corridor: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` T-maze episodes as ``[corridor + 1, count, 3]`` observations and their cues."""
    env = TMaze(count, corridor_length=corridor)
    observations = [env.reset(seed=seed)]
    for _ in range(corridor):  # the episode ends on the step after the junction's observation
        observations.append(env.step(torch.zeros(count, dtype=torch.int64)).observation)
    return torch.stack(observations), env.oracle_action()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core", default="gru", choices=["ntm", "lstm", "gru"])
    parser.add_argument("--core-kwargs", type=json.loads, default={}, help="JSON keywords of the core")
    parser.add_argument("--corridor", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=2000, help="training episodes (2M env steps at 1,000)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    x_train, y_train = episodes(args.corridor, args.episodes, args.seed)
    x_test, y_test = episodes(args.corridor, 256, args.seed + 1)
    core = make_core(args.core, 3, **args.core_kwargs)
    head = torch.nn.Linear(core.output_dim, 2)
    optimizer = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=args.lr)
    print(f"{args.core} {args.core_kwargs}, corridor {args.corridor}, {args.episodes} episodes, 1 torch thread")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        for batch in torch.randperm(args.episodes).split(16):
            outputs, _ = core(x_train[:, batch], core.initial_state(len(batch)))
            loss = F.cross_entropy(head(outputs[-1]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            outputs, _ = core(x_test, core.initial_state(len(y_test)))
            accuracy = (head(outputs[-1]).argmax(-1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}, test accuracy {accuracy:.3f} "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
