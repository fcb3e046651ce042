"""How large are the gradients that reach a core's memory from a sparse decision, next to Adam's epsilon?

On the passive T-maze (``envs.probes.TMaze``) the only gradient that can teach a core to keep the
cue reaches the cue's input weights through the whole corridor. This script builds
``RecurrentPPO`` at its defaults (GRU core, 16 envs, ``n_steps`` two episodes long), collects one
rollout and records the gradients of the first minibatch (through ``Optimizer.register_step_pre_hook``,
so the update is the library's own). Beside it, the baseline in the same run: the same GRU trained
supervised (the cue as the label at the junction, batch 16, as ``cue_supervised.py``), whose loss is
one term per episode rather than a mean over every step.

For a gradient ``g`` of steady sign, Adam moves a weight by about ``lr * |g| / (|g| + eps)``: the
"Adam step" columns give that fraction of the full step for SB3's ``eps=1e-5`` (the library's
default) and for ``eps=1e-10``.

    python benchmarks/gradient_scale.py
    python benchmarks/gradient_scale.py --corridors 1000 --core lstm
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from cue_supervised import episodes  # the sibling module

from ntm_rl.agents import RecurrentPPO
from ntm_rl.cores import make_core
from ntm_rl.envs import TMaze
from ntm_rl.vec import TorchVecEnvToSB3

N_ENVS = 16
EPSILONS = (1e-5, 1e-10)


def input_gradients(core: torch.nn.Module) -> tuple[float, float]:
    """Mean absolute gradient of the core's input weights from the cue (columns 0-1) and the junction flag."""
    weight = core.rnn.weight_ih_l0.grad
    return weight[:, :2].abs().mean().item(), weight[:, 2].abs().mean().item()


def ppo_gradients(corridor: int, core: str, seed: int) -> tuple[float, float]:
    """The cue's and the junction's input-weight gradients in RecurrentPPO's first minibatch."""
    model = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(TMaze(N_ENVS, corridor_length=corridor)),
                         n_steps=2 * (corridor + 1), seed=seed, policy_kwargs=dict(core=core))  # fmt: skip
    recorded: list[tuple[float, float]] = []

    def record(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not recorded:
            recorded.append(input_gradients(model.policy.core))

    model.policy.optimizer.register_step_pre_hook(record)
    model.learn(N_ENVS * model.n_steps)  # one rollout, one update
    return recorded[0]


def supervised_gradients(corridor: int, core: str, seed: int) -> tuple[float, float]:
    """The same gradients for the cross-entropy of the cue at the junction, 16 episodes."""
    torch.manual_seed(seed)
    observations, cues = episodes(corridor, 16, seed)
    memory = make_core(core, 3)
    head = torch.nn.Linear(memory.output_dim, 2)
    outputs, _ = memory(observations, memory.initial_state(16))
    F.cross_entropy(head(outputs[-1]), cues).backward()
    return input_gradients(memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corridors", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--core", default="gru", choices=["gru", "lstm"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.core}, default size, 1 torch thread; mean |gradient| of the core's input weights at init")
    header = "".join(f"{f'Adam step, eps {eps:g}':>22s}" for eps in EPSILONS)
    print(f"{'corridor':>8s} {'loss':>10s} {'cue':>10s} {'junction':>10s}{header}")
    for corridor in args.corridors:
        for name, gradients in (("PPO", ppo_gradients), ("supervised", supervised_gradients)):
            cue, junction = gradients(corridor, args.core, args.seed)
            steps = "".join(f"{cue / (cue + eps):22.2g}" for eps in EPSILONS)
            print(f"{corridor:8d} {name:>10s} {cue:10.2e} {junction:10.2e}{steps}")


if __name__ == "__main__":
    main()
