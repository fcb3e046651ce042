"""How many env steps a core needs on a probe when every answer is given (supervised).

The per-step probes of ``defaults_sweep.py`` (repeat-previous, repeat-first, copy, counting) and
associative recall as the memory suite's first rung has it (3 pairs, 16 symbols) with the oracle's
action as the label at every scored step: a core and a linear read-out
(``algorithmic.SequenceModel``) trained by cross-entropy on fresh episodes, 16 at a time as the
sweep's 16 envs give them, Adam at the library's learning rate (1e-3). After every ``--eval-every``
env steps it scores its greedy answers on 256 held-out episodes, normalised like the sweep (optimum
1, random 0). An agent learns each answer from a reward alone, so this is what the same core does
with far more information per sample: where it needs more env steps than a config's budget, the
budget, not the RL, is what stops the agent. Prints the curve and the env steps to 0.9.

    python benchmarks/probe_supervised.py --task count_recall
    python benchmarks/probe_supervised.py --task count_recall --core-kwargs '{"hidden_size": 48}'
    python benchmarks/probe_supervised.py --task repeat_previous --env-kwargs '{"delay": 8, "length": 24}' \
        --core ntm --core-kwargs '{"controller_size": 32, "memory_size": 32, "word_size": 8, "shift_init": 1, "read_init": "diffuse"}'
    python benchmarks/probe_supervised.py --task associative_recall --steps 6000000 --seed 1 --core-kwargs '{"hidden_size": 48}'
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import torch
import torch.nn.functional as F
from algorithmic import SequenceModel  # the sibling modules
from defaults_sweep import N_ENVS, TASKS, normalised_return
from memory_suite import LADDERS

from ntm_rl.cores import make_core
from ntm_rl.envs import AssociativeRecall
from ntm_rl.vec import TorchVecEnv

SUPERVISED_TASKS: dict[str, tuple[partial[TorchVecEnv], int]] = {
    # name: (env of n envs, the RL budget it is compared with)
    **{name: (TASKS[name][0], TASKS[name][2]) for name in ["repeat_previous", "repeat_first", "copy", "count_recall"]},
    # one answer an episode, at its query step; the memory suite's first rung and its budget
    "associative_recall": (
        partial(AssociativeRecall, **LADDERS["associative_recall"].rungs[0].env_kwargs),
        LADDERS["associative_recall"].rungs[0].budget,
    ),
}


def labelled_episodes(env: TorchVecEnv, seed: int | None = None) -> tuple[torch.Tensor, ...]:
    """One episode of every env, played by the oracle: observations ``[T, B, D]``, labels and scored mask ``[T, B]``.

    The probes' observations do not depend on the actions, so the oracle's episodes are the ones any
    agent would see. A step is scored where the oracle's action earns a reward.
    """
    observation = env.reset(seed=seed)
    observations, labels, rewards = [], [], []
    done = torch.zeros(env.num_envs, dtype=torch.bool)
    while not done.all():
        action = env.oracle_action()
        observations.append(observation)
        labels.append(action)
        step = env.step(action)
        rewards.append(step.reward)
        observation, done = step.observation, step.terminated | step.truncated
    return torch.stack(observations), torch.stack(labels), torch.stack(rewards) > 0


def normalised_score(model: SequenceModel, episodes: tuple[torch.Tensor, ...], env: TorchVecEnv) -> float:
    observations, labels, scored = episodes
    with torch.no_grad():
        correct = (model(observations).argmax(-1) == labels) & scored
    mean_return = correct.float().sum(0).mean().item()
    return normalised_return(mean_return, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="count_recall", choices=list(SUPERVISED_TASKS))
    parser.add_argument("--core", default="gru", choices=["ntm", "lstm", "gru"])
    parser.add_argument("--core-kwargs", type=json.loads, default={}, help="JSON keywords of the core")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON keywords of the probe")
    parser.add_argument("--steps", type=int, help="env steps to train on (default: 4x the task's RL budget)")
    parser.add_argument("--eval-every", type=int, help="env steps between evaluations (default: steps / 16)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    make_env, budget = SUPERVISED_TASKS[args.task]
    make_env = partial(make_env, **args.env_kwargs)
    steps = args.steps or 4 * budget
    eval_every = args.eval_every or steps // 16
    env, test_env = make_env(N_ENVS), make_env(256)
    test_episodes = labelled_episodes(test_env, seed=args.seed + 1000)
    env.reset(seed=args.seed)
    model = SequenceModel(make_core(args.core, env.observation_space.shape[0], **args.core_kwargs), env.action_space.n)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"{args.task} {make_env.keywords}, {args.core} {args.core_kwargs}, 16 episodes a batch, Adam lr {args.lr}, "
          f"1 torch thread; the RL budget: {budget:,} env steps")  # fmt: skip
    seen, next_eval, reached, start = 0, eval_every, None, time.perf_counter()
    while seen < steps:
        observations, labels, scored = labelled_episodes(env)
        logits = model(observations)
        loss = F.cross_entropy(logits[scored], labels[scored])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += labels.numel()
        if seen >= next_eval:
            next_eval += eval_every
            score = normalised_score(model, test_episodes, test_env)
            if reached is None and score >= 0.9:
                reached = seen
            print(f"{seen:>10,} env steps: loss {loss.item():.3f}, normalised score {score:.3f} "
                  f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    print(f"env steps to 0.9: {'never' if reached is None else f'{reached:,}'} (the RL budget: {budget:,})")


if __name__ == "__main__":
    main()
