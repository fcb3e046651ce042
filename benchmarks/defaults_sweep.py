"""The sweep behind the agents' defaults: candidate settings on the memory probes at gamma 0.99.

Every cell trains ``RecurrentPPO("MlpPolicy", env, n_steps=N, **setting)`` (``RecurrentA2C`` where the
setting says so, with its own ``n_steps`` unless the setting gives one) on a batched probe of 16 envs,
as a new user would (only the env, ``n_steps`` and the candidate's settings given; the core at its
default size unless the setting says otherwise),
records the learning curve (mean return of the last 100 training episodes after every rollout, with
the seconds trained so far) and a final deterministic evaluation of 200 episodes, normalised so that
the optimum is 1 and random actions 0.
Settings are named in ``SETTINGS``; ``defaults`` is whatever the library's defaults are now.

The report gives, per task, core and setting: the median (and range) over seeds of the final
normalised evaluation, the env steps and seconds to a normalised training return of 0.9, and env
steps/s. Cells run in ``--workers`` processes and are kept in ``<out>/cells.jsonl``.

    python benchmarks/defaults_sweep.py --tasks repeat_previous --cores gru --settings defaults old
    python benchmarks/defaults_sweep.py --workers 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from learning import LearningCurve, evaluate, normalised, run_cells, steps_to  # the sibling module

from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.envs import Copy, CountRecall, RepeatFirst, RepeatPrevious, TMaze
from ntm_rl.vec import TorchVecEnv, TorchVecEnvToSB3

TASKS: dict[str, tuple[partial[TorchVecEnv], int, int]] = {
    # name: (env of n envs, n_steps, training steps); the per-step probes as configs/ has them
    "repeat_previous": (partial(RepeatPrevious, num_symbols=4, delay=3, length=32), 128, 200_000),
    "repeat_first": (partial(RepeatFirst, num_symbols=4, length=16), 128, 100_000),
    "copy": (partial(Copy, num_symbols=4, length=5), 128, 500_000),
    "count_recall": (partial(CountRecall, num_symbols=4, length=16, max_count=8), 128, 300_000),
    "tmaze_100": (partial(TMaze, corridor_length=100), 256, 500_000),  # a cue, 100 blank steps, a query
    # 1,001-step episodes, two to a rollout: every cue lies in the rollout of its junction, so its
    # gradient path is never cut at a rollout boundary
    "tmaze_1000": (partial(TMaze, corridor_length=1000), 2002, 2_000_000),
}


def whole_rollouts(
    n_epochs: int,
    envs_per_batch: int,
    shared_core: bool = False,
    learning_rate: float = 3e-4,
    chrono_init: int | None = None,
) -> dict:
    """A candidate that trains on whole rollouts, ``envs_per_batch`` envs per minibatch (of 16)."""
    policy_kwargs = dict(shared_core=shared_core) | (
        {} if chrono_init is None else dict(core_kwargs=dict(chrono_init=chrono_init))
    )
    return dict(
        n_epochs=n_epochs,
        sequence_length=None,
        batch_size=envs_per_batch,
        learning_rate=learning_rate,
        policy_kwargs=policy_kwargs,
    )


# Every candidate pins what it varies (learning rate included), so that its cells keep their meaning
# when the library's defaults move; the core keeps its library default size. What a candidate does
# not pin it takes from the defaults of its run: GAE's lambda was 0.95 until "defaults_gae0.8" became
# the default, so "defaults" and the candidates built on it ran at 0.95 before that change; Adam's
# epsilon was 1e-5 and the entropy bonus 0 until "defaults_adam_eps1e-10_ent0.01" became the default.
A2C_SB3 = dict(
    n_steps=16, learning_rate=7e-4, gae_lambda=1.0, ent_coef=0.0, use_rms_prop=True, normalize_advantage=False
)
A2C_PPO_LIKE = dict(
    n_steps=16, use_rms_prop=False, learning_rate=1e-3, gae_lambda=0.8, normalize_advantage=True, ent_coef=0.01
)
SETTINGS: dict[str, dict] = {
    "defaults": {},
    # before this sweep: 4 epochs of minibatches of 512 steps, 32-step sequences, one core for both heads
    "old": dict(
        n_epochs=4, batch_size=512, sequence_length=32, learning_rate=3e-4, policy_kwargs=dict(shared_core=True)
    ),
    "old_separate": dict(
        n_epochs=4, batch_size=512, sequence_length=32, learning_rate=3e-4, policy_kwargs=dict(shared_core=False)
    ),
    "whole_4x4_shared": whole_rollouts(4, 4, shared_core=True),
    "whole_4x4_separate": whole_rollouts(4, 4),
    "whole_10x16_separate": whole_rollouts(10, 1),
    "whole_10x8_separate": whole_rollouts(10, 2),
    "whole_10x4_separate": whole_rollouts(10, 4),
    "whole_10x8_shared": whole_rollouts(10, 2, shared_core=True),
    # (the chrono settings' cells up to here and the README's first T-maze 1,000 runs predate
    # chrono_init's present recipe: they set every unit, timescales uniform up to T)
    "whole_10x8_separate_chrono256": whole_rollouts(10, 2, chrono_init=256),
    "whole_10x4_separate_chrono256": whole_rollouts(10, 4, chrono_init=256),
    "whole_10x4_separate_lr1e-3": whole_rollouts(10, 4, learning_rate=1e-3),
    "whole_4x4_separate_lr1e-3": whole_rollouts(4, 4, learning_rate=1e-3),
    "whole_10x8_separate_lr1e-3": whole_rollouts(10, 2, learning_rate=1e-3),
    "whole_10x4_separate_lr1e-3_chrono256": whole_rollouts(10, 4, learning_rate=1e-3, chrono_init=256),
    "whole_10x1_separate_lr1e-3_chrono256": whole_rollouts(10, 16, learning_rate=1e-3, chrono_init=256),
    # the defaults before LSTM and GRU cores got chrono_init=1000 (PyTorch's initialisation)
    "defaults_no_chrono": dict(policy_kwargs=dict(core_kwargs=dict(chrono_init=None))),
    # chrono initialisation (half the units, timescales up to 1,000 steps) for every core, the NTM's
    # controller included; without and with discounting (the passive T-maze pays once, at the
    # junction: at gamma 1 every corridor step has the same value, so the critic has no 1,000-step
    # ramp to fit, whose errors would reach the actor as advantages at every corridor step)
    "defaults_chrono1000": dict(policy_kwargs=dict(core_kwargs=dict(chrono_init=1000))),
    "defaults_chrono1000_gamma1": dict(gamma=1.0, policy_kwargs=dict(core_kwargs=dict(chrono_init=1000))),
    # an entropy bonus: without one, the junction's choice settled on one turn whatever the cue
    "defaults_chrono1000_ent0.01": dict(ent_coef=0.01, policy_kwargs=dict(core_kwargs=dict(chrono_init=1000))),
    # one core for both heads: the value loss then trains the actor's memory too. At gamma 1 every
    # step's value target in the passive T-maze depends on the cue (once the turn does), a dense,
    # supervised-like signal to carry the cue; at 0.99 it fades to 4e-5 over 1,000 steps
    "defaults_shared": dict(policy_kwargs=dict(shared_core=True)),
    "defaults_shared_gamma1": dict(gamma=1.0, policy_kwargs=dict(shared_core=True)),
    # The entropy bonus is averaged over every step, and normalised advantages shrink or grow with the
    # spread of the minibatch's advantages: in the T-maze 1,000 only 1 step in 1,001 carries any, so
    # normalisation multiplies the junction's by about 60 and ent_coef=0.01 there acts like 0.00016
    # would unnormalised. Either keep the advantages raw with SB3's usual bonus, or scale the bonus.
    "raw_advantages_ent0.01": dict(normalize_advantage=False, ent_coef=0.01),
    "defaults_ent0.5": dict(ent_coef=0.5),
    # Per-step rewards at gamma 0.99: GAE's lambda shortens the horizon of the advantages (the
    # variance that gamma 0.5 removes on repeat-previous) without shortening the value's horizon.
    # 0.8 became the default; 0.95 (SB3's) was the default before it.
    "defaults_gae0.95": dict(gae_lambda=0.95),
    "defaults_gae0.8": dict(gae_lambda=0.8),
    "defaults_gae0.5": dict(gae_lambda=0.5),
    # A faster learning rate for the 1,000-step T-maze: trained supervised on its cue
    # (cue_supervised.py, GRU, batch 16), it left chance after 250-375 Adam steps at lr 1e-3, 200-225
    # at 3e-3 and 100-125 at 1e-2 (one seed each)
    "defaults_lr3e-3": dict(learning_rate=3e-3),
    # Adam's epsilon. SB3's 1e-5 sits above the gradients that reach the memory from a sparse
    # decision: on the 1,000-step T-maze, at init, the loss (a mean over 8,008 steps with one
    # junction per 1,001) gives the GRU's cue weights gradients of about 5e-9, so Adam moves them
    # at 1/2,000 of its step size; supervised (one loss per episode) they move at the full step
    "defaults_adam_eps1e-10": dict(policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-10))),
    # the same with an entropy bonus, which holds the turn open (without it the junction's choice
    # drifted towards one turn, whatever the cue, before the memory formed)
    "defaults_adam_eps1e-10_ent0.01": dict(ent_coef=0.01, policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-10))),
    # the defaults before that: SB3's Adam epsilon and no entropy bonus
    "defaults_adam_eps1e-5_ent0": dict(ent_coef=0.0, policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-5))),
    # RecurrentA2C at the defaults of its run, its own n_steps included (A2C makes one gradient step
    # per rollout, so its n_steps is how often it learns; a probe's 128 gave it too few steps)
    "a2c_defaults": dict(algo=RecurrentA2C),
    # RecurrentA2C at SB3's A2C defaults, its defaults before the sweep below
    "a2c_sb3": dict(algo=RecurrentA2C, **A2C_SB3),
    # the defaults with a rollout as long as the 100-step T-maze's episode (at the default 8 steps a
    # rollout cuts every gradient path from the cue to the junction)
    "a2c_defaults_n256": dict(algo=RecurrentA2C, n_steps=256),
    # candidates, each changing one thing against SB3's defaults
    "a2c_ent0.01": dict(algo=RecurrentA2C, **A2C_SB3 | dict(ent_coef=0.01)),
    "a2c_gae0.95": dict(algo=RecurrentA2C, **A2C_SB3 | dict(gae_lambda=0.95)),
    "a2c_gae0.8": dict(algo=RecurrentA2C, **A2C_SB3 | dict(gae_lambda=0.8)),
    "a2c_lr3e-3": dict(algo=RecurrentA2C, **A2C_SB3 | dict(learning_rate=3e-3)),
    "a2c_n64": dict(algo=RecurrentA2C, **A2C_SB3 | dict(n_steps=64)),
    "a2c_adam1e-3": dict(algo=RecurrentA2C, **A2C_SB3 | dict(use_rms_prop=False, learning_rate=1e-3)),
    "a2c_normadv": dict(algo=RecurrentA2C, **A2C_SB3 | dict(normalize_advantage=True)),
    "a2c_combined": dict(algo=RecurrentA2C, **A2C_SB3 | dict(gae_lambda=0.95, normalize_advantage=True, ent_coef=0.01)),
    # RecurrentPPO's choices for the update (Adam at 1e-3 with epsilon 1e-10, GAE 0.8, normalised
    # advantages, entropy 0.01), then its learning rate and n_steps varied; "a2c_ppo_like_lr3e-3_n8"
    # became the defaults
    "a2c_ppo_like": dict(algo=RecurrentA2C, **A2C_PPO_LIKE),
    "a2c_ppo_like_lr3e-3": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(learning_rate=3e-3)),
    "a2c_ppo_like_lr1e-2": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(learning_rate=1e-2)),
    "a2c_ppo_like_n8": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(n_steps=8)),
    "a2c_ppo_like_lr3e-3_n8": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(learning_rate=3e-3, n_steps=8)),
    "a2c_ppo_like_lr3e-3_n4": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(learning_rate=3e-3, n_steps=4)),
    "a2c_ppo_like_n128": dict(algo=RecurrentA2C, **A2C_PPO_LIKE | dict(n_steps=128)),
}
N_ENVS = 16


def agent_kwargs(setting: str, n_steps: int) -> dict:
    """The setting's keywords; a whole-rollout setting gives ``batch_size`` in envs, made steps here."""
    kwargs = dict(SETTINGS[setting])
    if kwargs.get("sequence_length", "") is None:
        kwargs["batch_size"] = kwargs["batch_size"] * n_steps
    return kwargs


def normalised_return(mean_return: float, probe: TorchVecEnv) -> float:
    """A probe's mean return on the scale where random actions score 0 and the optimum 1."""
    return normalised(mean_return, probe.optimal_return, probe.random_return)


def run_cell(task: str, core: str, setting: str, seed: int) -> dict:
    make_env, n_steps, steps = TASKS[task]
    kwargs = agent_kwargs(setting, n_steps)
    algo = kwargs.pop("algo", RecurrentPPO)
    if algo is RecurrentPPO:  # (RecurrentA2C keeps its own n_steps unless the setting gives one)
        kwargs = dict(n_steps=n_steps) | kwargs
    policy_kwargs = dict(core=core) | kwargs.pop("policy_kwargs", {})
    model = algo("MlpPolicy", TorchVecEnvToSB3(make_env(N_ENVS)), seed=seed, policy_kwargs=policy_kwargs, **kwargs)
    curve = LearningCurve()
    start = time.perf_counter()
    model.learn(steps, callback=curve)
    seconds = time.perf_counter() - start
    probe = make_env(20)
    eval_mean = evaluate(model, TorchVecEnvToSB3(probe), 200, seed + 1000)
    normalised = normalised_return(eval_mean, probe)
    return {"steps": steps, "seconds": round(seconds, 1), "fps": round(steps / seconds), "eval_mean": eval_mean,
            "normalised": round(normalised, 4), "optimal": probe.optimal_return, "random": probe.random_return,
            "parameters": sum(p.numel() for p in model.policy.parameters()), "curve": curve.points}  # fmt: skip


def report(results: list[dict]) -> None:
    rows = sorted({(r["task"], r["core"], r["setting"]) for r in results}, key=lambda k: (k[0], k[1], k[2]))
    print(f"\n{'task':16s} {'core':4s} {'setting':22s} {'seeds':>5s} {'normalised eval: median [min, max]':>36s} "
          f"{'steps to 0.9':>14s} {'s to 0.9':>9s} {'steps/s':>8s}")  # fmt: skip
    for task, core, setting in rows:
        runs = [r for r in results if (r["task"], r["core"], r["setting"]) == (task, core, setting)]
        scores = [r["normalised"] for r in runs]
        reached = []
        for r in runs:
            at = steps_to(r["curve"], 0.9, lambda value, r=r: normalised(value, r["optimal"], r["random"]))
            seconds = next((p[1] for p in r["curve"] if p[0] == at), None) if at is not None else None
            reached.append((at, seconds))
        done = [a for a, _ in reached if a is not None]
        steps_text, seconds_text = "never", "-"
        if done:
            steps_text = f"{int(np.median(done)):,}" + ("" if len(done) == len(runs) else f" ({len(done)}/{len(runs)})")
            seconds_text = f"{np.median([s for _, s in reached if s is not None]):.0f}"
        print(f"{task:16s} {core:4s} {setting:22s} {len(runs):5d} "
              f"{np.median(scores):14.3f} [{min(scores):6.3f}, {max(scores):6.3f}]{'':6s} "
              f"{steps_text:>14s} {seconds_text:>9s} {np.median([r['fps'] for r in runs]):8,.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--cores", nargs="+", default=["ntm", "gru", "lstm"], choices=["ntm", "gru", "lstm"])
    parser.add_argument("--settings", nargs="+", default=["defaults"], choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1, help="processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=Path("runs/defaults_sweep"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells = [dict(task=t, core=c, setting=s, seed=seed) for t in args.tasks for c in args.cores
             for s in args.settings for seed in args.seeds]  # fmt: skip
    report(run_cells(run_cell, cells, args.out / "cells.jsonl", args.workers))


if __name__ == "__main__":
    main()
