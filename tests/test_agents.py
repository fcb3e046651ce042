"""RecurrentPPO and RecurrentA2C with the real SB3 and gymnasium: learning, every core, spaces,
save/load, predict, callbacks."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecMonitor, VecNormalize

from ntm_rl.agents import RecurrentA2C, RecurrentPPO
from ntm_rl.cores import state_leaves, where_state
from ntm_rl.envs import CartPole, RepeatFirst, RepeatPrevious, TMaze
from ntm_rl.vec import TorchVecEnvToSB3

SMALL_CORES = {
    "ntm": dict(core="ntm", core_kwargs=dict(controller_size=16, memory_size=8, word_size=4)),
    "lstm": dict(core="lstm", core_kwargs=dict(hidden_size=16)),
    "gru": dict(core="gru", core_kwargs=dict(hidden_size=16)),
}


ALGORITHMS = {
    "ppo": (RecurrentPPO, dict(n_steps=16, batch_size=64, sequence_length=8, n_epochs=2, seed=0)),
    "a2c": (RecurrentA2C, dict(n_steps=8, seed=0)),
}


@pytest.fixture(params=sorted(ALGORITHMS))
def algo(request):
    return request.param


def small_agent(env, core="ntm", algo="ppo", **kwargs):
    algorithm, options = ALGORITHMS[algo]
    policy_kwargs = SMALL_CORES[core] | kwargs.pop("policy_kwargs", {})
    return algorithm(kwargs.pop("policy", "MlpPolicy"), env, policy_kwargs=policy_kwargs, **(options | kwargs))


@pytest.mark.parametrize("core", sorted(SMALL_CORES))
@pytest.mark.parametrize("shared_core", [True, False])
def test_learn_runs_with_every_core_shared_or_separate(algo, core, shared_core):
    env = TorchVecEnvToSB3(RepeatFirst(8, length=6))
    model = small_agent(env, core, algo, policy_kwargs=dict(shared_core=shared_core))
    model.learn(256)
    assert model.num_timesteps == 256
    assert (model.policy.critic_core is None) == shared_core


@pytest.mark.parametrize(
    "env_id",
    ["CartPole-v1", "Pendulum-v1", "FrozenLake-v1"],  # Discrete / Box actions, Discrete obs
)
def test_learn_on_gymnasium_envs_through_sb3_vec_envs(env_id):
    model = small_agent(make_vec_env(env_id, n_envs=4, seed=0))
    model.learn(128)
    assert model.num_timesteps == 128


class MultiActionEnv(gym.Env):
    """A two-step episode with a configurable action space, to exercise every distribution."""

    def __init__(self, action_space: gym.Space):
        self.observation_space = gym.spaces.Box(-1, 1, (3,), dtype=np.float32)
        self.action_space = action_space
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype))
        self._t += 1
        return self.observation_space.sample(), float(np.sum(action)), self._t >= 2, False, {}


@pytest.mark.parametrize(
    "action_space",
    [
        gym.spaces.Discrete(3),
        gym.spaces.MultiDiscrete([2, 3]),
        gym.spaces.MultiBinary(4),
        gym.spaces.Box(-1, 1, (2,), dtype=np.float32),
    ],
    ids=["Discrete", "MultiDiscrete", "MultiBinary", "Box"],
)
def test_every_action_space(algo, action_space):
    model = small_agent(DummyVecEnv([lambda: MultiActionEnv(action_space)] * 2), algo=algo)
    model.learn(64)
    actions, _ = model.predict(np.zeros((2, 3), dtype=np.float32))
    assert actions.shape == (2, *action_space.shape)


class DictImageEnv(gym.Env):
    """Dict observations holding a small image and a vector."""

    observation_space = gym.spaces.Dict(
        {"image": gym.spaces.Box(0, 255, (36, 36, 1), dtype=np.uint8), "vector": gym.spaces.Box(-1, 1, (2,))}
    )
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 1.0, bool(self.np_random.random() < 0.2), False, {}


def test_dict_observations_with_a_small_image():
    model = small_agent(DummyVecEnv([DictImageEnv] * 2), policy="MultiInputPolicy")
    model.learn(64)
    assert model.num_timesteps == 64


def test_image_observations_with_the_cnn_policy():
    image_env = lambda: gym.wrappers.TransformObservation(  # noqa: E731
        DictImageEnv(), lambda obs: obs["image"], DictImageEnv.observation_space["image"]
    )
    model = small_agent(DummyVecEnv([image_env] * 2), policy="CnnPolicy",
                      policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)))  # fmt: skip
    model.learn(64)
    assert model.num_timesteps == 64


def deterministic_episode(model, env, steps=200):
    """Actions over ``steps`` steps of an SB3 VecEnv with the recurrent state threaded through."""
    env.seed(7)
    obs = env.reset()
    state, starts, actions = None, np.ones(env.num_envs, dtype=bool), []
    for _ in range(steps):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = env.step(action)
        actions.append(action)
    return np.array(actions)


@pytest.mark.parametrize("core", sorted(SMALL_CORES))
def test_save_then_load_gives_identical_deterministic_actions(algo, core, tmp_path):
    train_env = TorchVecEnvToSB3(TMaze(4, corridor_length=5))
    model = small_agent(train_env, core, algo)
    model.learn(128)
    model.save(tmp_path / "model")
    loaded = type(model).load(tmp_path / "model", device="cpu")
    first = deterministic_episode(model, TorchVecEnvToSB3(TMaze(2, corridor_length=5)))
    second = deterministic_episode(loaded, TorchVecEnvToSB3(TMaze(2, corridor_length=5)))
    np.testing.assert_array_equal(first, second)


def test_compile_core_compiles_both_cores_and_survives_save_and_load(tmp_path):
    # (torch.compile is lazy: building and saving compiles nothing; the compiled step's outputs and
    # gradients are tested against eager ones in test_cores.py)
    model = small_agent(TorchVecEnvToSB3(TMaze(2, corridor_length=3)), policy_kwargs=dict(compile_core=True))
    model.save(tmp_path / "model")
    for policy in (model.policy, RecurrentPPO.load(tmp_path / "model", device="cpu").policy):
        assert policy.compile_core
        assert all("_step" in vars(core) for core in (policy.core, policy.critic_core))
    assert "_step" not in vars(small_agent(TorchVecEnvToSB3(TMaze(2, corridor_length=3))).policy.core)


def test_load_onto_cpu_from_another_device_string(tmp_path):
    model = small_agent(TorchVecEnvToSB3(TMaze(2, corridor_length=3)), device="cpu")
    model.save(tmp_path / "model")
    loaded = RecurrentPPO.load(tmp_path / "model", device="cuda" if torch.cuda.is_available() else "cpu")
    moved = RecurrentPPO.load(tmp_path / "model", device=torch.device("cpu"))
    assert moved.device.type == "cpu"
    original = model.policy.state_dict().values()
    for a, b, c in zip(loaded.policy.state_dict().values(), moved.policy.state_dict().values(), original, strict=True):
        torch.testing.assert_close(a.cpu(), b)
        torch.testing.assert_close(b, c)


def test_predict_on_a_single_env_without_a_state():
    model = small_agent(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    action, state = model.predict(np.zeros(4, dtype=np.float32))
    assert np.shape(action) == () and model.action_space.contains(action)
    action, _ = model.predict(np.zeros(4, dtype=np.float32), state=state, episode_start=np.array([False]))
    assert model.action_space.contains(action)


def test_evaluate_policy_and_callbacks_fire(algo, tmp_path):
    env = TorchVecEnvToSB3(RepeatFirst(4, length=4))
    eval_env = TorchVecEnvToSB3(RepeatFirst(1, length=4))
    stop = StopTrainingOnRewardThreshold(reward_threshold=1e9)
    evaluation = EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=16, n_eval_episodes=2)
    checkpoints = CheckpointCallback(save_freq=32, save_path=str(tmp_path), name_prefix="ppo")
    model = small_agent(env, algo=algo)
    model.learn(128, callback=[evaluation, checkpoints])
    assert evaluation.n_calls > 0 and evaluation.last_mean_reward is not None
    assert len(list(tmp_path.glob("ppo_*.zip"))) >= 1
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=3)
    assert 0 <= mean <= 3 and std >= 0


@pytest.mark.parametrize("through_numpy", [False, True], ids=["device-env", "sb3-infos"])
def test_a_callback_stops_training_mid_rollout_and_learn_goes_on_from_there(through_numpy):
    """SB3's StopTrainingOnMaxEpisodes reads each step's ``dones`` (numpy); once it stops the
    agent mid-rollout, the agent holds the envs' current observations, and learn() goes on."""
    cartpole = CartPole(4, observation="no_velocity")
    env = VecMonitor(TorchVecEnvToSB3(cartpole)) if through_numpy else TorchVecEnvToSB3(cartpole)
    model = small_agent(env, n_steps=64, batch_size=64)
    stop = StopTrainingOnMaxEpisodes(max_episodes=1)  # 4 episodes in all, over the 4 envs
    model.learn(100_000, callback=stop)
    assert stop.n_episodes >= 4 and model.num_timesteps < 100_000
    np.testing.assert_array_equal(torch.as_tensor(model._last_obs).numpy(), cartpole.state[:, [0, 2]].float().numpy())
    model.learn(256, reset_num_timesteps=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_device_env_on_the_cpu_trains_a_policy_on_cuda(algo):
    model = small_agent(TorchVecEnvToSB3(TMaze(4, corridor_length=3)), algo=algo, device="cuda")
    model.learn(64)
    assert model.num_timesteps == 64 and len(model.ep_info_buffer) == 16


def test_vec_normalize_wraps_the_env():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = small_agent(env)
    model.learn(64)
    assert env.obs_rms.count > 64


def test_bad_sequence_settings_are_reported():
    env = TorchVecEnvToSB3(TMaze(2))
    with pytest.raises(ValueError, match=r"batch_size \(60\) must be a multiple of sequence_length \(8\)"):
        small_agent(env, batch_size=60)
    with pytest.raises(ValueError, match=r"n_steps \(12\) must be a multiple of sequence_length \(8\)"):
        small_agent(env, n_steps=12)
    for name in ("sequence_length", "n_epochs", "batch_size", "n_steps"):
        with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got 0"):
            small_agent(env, **{name: 0})


def test_ntm_agent_learns_a_cue_that_a_memoryless_policy_cannot_use():
    """T-maze: the cue shows at step 0, the turn is scored 9 steps later; without memory the
    best return is 0.5. The NTM agent must reach at least 0.9 within a CI-sized budget."""
    torch.manual_seed(0)
    env = TorchVecEnvToSB3(TMaze(32, corridor_length=8))
    model = RecurrentPPO(
        "MlpPolicy", env, n_steps=32, batch_size=256, sequence_length=16, learning_rate=1e-3, n_epochs=4,
        ent_coef=0.01, seed=0, policy_kwargs=dict(core="ntm", core_kwargs=dict(controller_size=32, memory_size=16,
                                                                                   word_size=8)),
    )  # fmt: skip
    model.learn(70_000)
    mean, _ = evaluate_policy(model, TorchVecEnvToSB3(TMaze(1, corridor_length=8)), n_eval_episodes=100)
    assert mean >= 0.9 * TMaze().optimal_return


@pytest.mark.parametrize("algorithm, steps", [(RecurrentPPO, 32_768), (RecurrentA2C, 40_000)], ids=["ppo", "a2c"])
def test_the_defaults_learn_a_recall_at_gamma_0_99(algorithm, steps):
    """Only the env given (the core a GRU at its default size): each step's reward asks for the
    symbol shown one step earlier, which a memoryless policy can only guess (normalised 0)."""
    model = algorithm("MlpPolicy", TorchVecEnvToSB3(RepeatPrevious(16, delay=1, length=16)), seed=0,
                      policy_kwargs=dict(core="gru"))  # fmt: skip
    model.learn(steps)
    probe = RepeatPrevious(1, delay=1, length=16)
    mean, _ = evaluate_policy(model, TorchVecEnvToSB3(probe), n_eval_episodes=50)
    assert (mean - probe.random_return) / (probe.optimal_return - probe.random_return) >= 0.9


def test_device_env_episodes_reach_the_logged_statistics(algo):
    model = small_agent(TorchVecEnvToSB3(TMaze(4, corridor_length=3)), algo=algo)
    model.learn(64)
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == 16  # 4 envs x 16 steps, in episodes of 4 steps
    assert all(e["l"] == 4 and e["r"] in (0.0, 1.0) for e in episodes)


def test_vec_frame_stack_and_vec_monitor_wrap_the_env():
    env = VecFrameStack(VecMonitor(TorchVecEnvToSB3(RepeatFirst(4, length=4))), n_stack=3)
    model = small_agent(env)
    model.learn(64)
    assert model.observation_space.shape == (12,)
    assert len(model.ep_info_buffer) == 16  # VecMonitor's episode records reach SB3's statistics


@pytest.mark.parametrize("through_numpy", [False, True], ids=["device-env", "sb3-infos"])
def test_truncated_episodes_bootstrap_from_their_terminal_value(through_numpy):
    """Rewards of truncating steps gain gamma * V(terminal observation); others stay 0 or 1."""
    probe = RepeatFirst(4, length=6)
    probe.max_episode_steps = 3  # truncate every episode after 3 of its 6 steps
    env = TorchVecEnvToSB3(probe)
    model = small_agent(VecMonitor(env) if through_numpy else env, n_epochs=1)
    model.learn(16)
    rewards = model.rollout_buffer.rewards
    truncating = torch.zeros_like(rewards, dtype=torch.bool)
    truncating[2::3] = True  # steps 2, 5, 8, ... end an episode by truncation
    assert torch.isin(rewards[~truncating], torch.tensor([0.0, 1.0])).all()
    assert not torch.isin(rewards[truncating], torch.tensor([0.0, 1.0])).any()


@pytest.mark.parametrize("core", sorted(SMALL_CORES))
@pytest.mark.parametrize(("sequence_length", "burn_in"), [(4, 0), (4, 3), (4, 4), (None, 0)])
def test_training_replays_the_rollout_exactly(core, sequence_length, burn_in):
    """Before any update, unrolling the stored sequences (from their stored states, or from the
    states burned in over the steps before them) gives back the rollout's values and
    log-probabilities: stored states, burn-in windows and resets inside sequences all line up."""
    env = TorchVecEnvToSB3(RepeatFirst(3, length=5))  # episodes of 5 steps end inside sequences
    model = small_agent(env, core, n_steps=16, batch_size=16, sequence_length=sequence_length, burn_in=burn_in,
                        policy_kwargs=dict(shared_core=False))  # fmt: skip
    _, callback = model._setup_learn(48)
    callback.on_training_start(locals(), globals())
    for _ in range(2):  # the second rollout starts from a carried state
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    batches = list(model.rollout_buffer.sequences(2))
    assert sum(batch.episode_starts.shape[1] for batch in batches) == 3 * 16 // model.sequence_length
    for batch in batches:
        state = batch.state
        if burn_in > 0:
            burned = model.policy.unroll_state(batch.burn_in.observations, batch.burn_in.state,
                                               batch.burn_in.episode_starts)  # fmt: skip
            history = batch.burn_in.has_history
            for leaf, stored in zip(state_leaves(burned), state_leaves(state), strict=True):
                torch.testing.assert_close(leaf[history], stored[history], atol=1e-5, rtol=1e-5)
            state = where_state(batch.burn_in.has_history, burned, state)
        with torch.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions, state,
                                                                batch.episode_starts)  # fmt: skip
        torch.testing.assert_close(values, batch.old_values.flatten(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(log_prob, batch.old_log_prob.flatten(), atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_trains_the_same_parameters(algo):
    models = []
    for checkpoint_steps in (None, 3):
        model = small_agent(TorchVecEnvToSB3(RepeatFirst(4, length=5)), algo=algo, checkpoint_steps=checkpoint_steps)
        model.learn(2 * model.n_steps * 4)
        models.append(model)
    for a, b in zip(models[0].policy.state_dict().values(), models[1].policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_burn_in_is_reported():
    env = TorchVecEnvToSB3(TMaze(2))
    with pytest.raises(ValueError, match=r"burn_in must be an integer from 0 to sequence_length \(8\), got 9"):
        small_agent(env, burn_in=9)
    with pytest.raises(ValueError, match=r"checkpoint_steps must be an integer >= 1, got 0"):
        small_agent(env, checkpoint_steps=0)


class ObservationSpaceEnv(gym.Env):
    """Random observations from any space, reward 1 for action 0, episodes of 3 steps."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, observation_space: gym.Space):
        self.observation_space = observation_space
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._t += 1
        return self.observation_space.sample(), float(action == 0), self._t >= 3, False, {}


OBSERVATION_SPACES = {
    "Box": gym.spaces.Box(-1, 1, (3,), dtype=np.float32),
    "Discrete": gym.spaces.Discrete(5),
    "MultiDiscrete": gym.spaces.MultiDiscrete([2, 3, 4]),
    "MultiBinary": gym.spaces.MultiBinary(4),
    "Dict": gym.spaces.Dict(
        {
            "cards": gym.spaces.MultiDiscrete([4, 13]),
            "flag": gym.spaces.MultiBinary(1),
            "vector": gym.spaces.Box(-1, 1, (2,), dtype=np.float32),
        }
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(OBSERVATION_SPACES))
def test_every_observation_space_through_learn_and_predict(algo, name):
    space = OBSERVATION_SPACES[name]
    env = DummyVecEnv([lambda: ObservationSpaceEnv(space)] * 2)
    model = small_agent(env, "gru", algo, policy="MultiInputPolicy" if name == "Dict" else "MlpPolicy")
    model.learn(64)
    assert model.num_timesteps == 64
    single = space.sample()
    action, state = model.predict(single)
    assert model.action_space.contains(action)
    batch = env.reset()
    actions, _ = model.predict(batch, state=model.policy.initial_state(2), episode_start=np.ones(2, dtype=bool))
    assert actions.shape == (2,)


def test_tuple_observations_are_refused_with_the_wrapper_that_fixes_them():
    space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,))))
    env = DummyVecEnv([lambda: ObservationSpaceEnv(space)])
    with pytest.raises(
        ValueError, match=r"Tuple observations are not supported .*gymnasium\.wrappers\.FlattenObservation"
    ):
        small_agent(env)


def test_tuple_observations_learn_once_flattened():
    space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,), dtype=np.float32)))
    env = DummyVecEnv([lambda: gym.wrappers.FlattenObservation(ObservationSpaceEnv(space))] * 2)
    model = small_agent(env)
    model.learn(64)
    assert model.observation_space.shape == (4,)


def test_default_minibatches_are_a_quarter_of_the_rollout_in_whole_sequences():
    env = TorchVecEnvToSB3(RepeatFirst(16, length=5))
    whole = RecurrentPPO("MlpPolicy", env, n_steps=128, policy_kwargs=SMALL_CORES["gru"])
    assert (whole.sequence_length, whole.batch_size) == (128, 4 * 128)  # 4 envs over the whole rollout
    cut = RecurrentPPO("MlpPolicy", env, n_steps=128, sequence_length=32, policy_kwargs=SMALL_CORES["gru"])
    assert cut.batch_size == 16 * 32  # 64 sequences of 32 steps, 16 per minibatch
    few = RecurrentPPO("MlpPolicy", TorchVecEnvToSB3(RepeatFirst(2, length=5)), n_steps=64,
                       policy_kwargs=SMALL_CORES["gru"])  # fmt: skip
    assert few.batch_size == 64  # 2 sequences: one per minibatch
    assert not whole.policy.shared_core and whole.policy.critic_core is not None


class RecordsStepLocals(BaseCallback):
    """Keeps what SB3 callbacks usually read each step (as rl-zoo3's statistics callbacks do)."""

    def __init__(self):
        super().__init__()
        self.steps: list[dict] = []

    def _on_step(self) -> bool:
        self.steps.append({key: self.locals[key] for key in ("new_obs", "rewards", "actions", "dones", "infos")})
        return True


@pytest.mark.parametrize("through_numpy", [False, True])
def test_callbacks_see_numpy_step_locals_and_episode_infos_on_every_path(through_numpy):
    env = TorchVecEnvToSB3(RepeatFirst(3, length=5))
    env = VecMonitor(env) if through_numpy else env  # the SB3 path, or the device env stepped as tensors
    model = small_agent(env, core="gru", n_steps=10, batch_size=30, sequence_length=10)
    callback = RecordsStepLocals()
    model.learn(60, callback=callback)
    assert len(callback.steps) == 20
    for step in callback.steps:
        assert all(isinstance(step[key], np.ndarray) for key in ("new_obs", "rewards", "actions", "dones"))
        assert step["new_obs"].shape == (3, *env.observation_space.shape) and len(step["infos"]) == 3
        for done, info in zip(step["dones"], step["infos"], strict=True):
            assert ("episode" in info) == bool(done)
    records = [info["episode"] for step in callback.steps for info in step["infos"] if "episode" in info]
    assert len(records) == 12 and all(record["l"] == 5 for record in records)  # 3 envs x 4 episodes
    rewards = np.stack([step["rewards"] for step in callback.steps])  # [20, 3]
    expected = sorted(round(float(r), 6) for r in rewards.reshape(4, 5, 3).sum(axis=1).ravel())
    assert sorted(record["r"] for record in records) == pytest.approx(expected)


def test_a_device_env_is_its_own_monitor_for_evaluate_policy(recwarn):
    env = TorchVecEnvToSB3(TMaze(1, corridor_length=3))
    assert env.env_is_wrapped(gym.Wrapper) == [True] and env.env_is_wrapped(gym.ObservationWrapper) == [False]
    model = small_agent(TorchVecEnvToSB3(TMaze(2, corridor_length=3)), core="gru")
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=4, return_episode_rewards=True)
    assert lengths == [4, 4, 4, 4] and set(returns) <= {0.0, 1.0}
    assert not [w for w in recwarn if "Monitor" in str(w.message)]


def test_sb3_contrib_state_round_trip_keeps_the_actions():
    from ntm_rl.policies import from_sb3_contrib_state, to_sb3_contrib_state

    env = TorchVecEnvToSB3(RepeatFirst(3, length=6))
    model = small_agent(env, core="lstm")
    obs, starts = env.reset(), np.ones(3, dtype=bool)
    _, state = model.predict(obs, None, starts)
    h, c = to_sb3_contrib_state(state)
    assert h.shape == c.shape == (1, 3, model.policy.core.hidden_size) and isinstance(h, np.ndarray)
    rebuilt = from_sb3_contrib_state(model.policy, (h, c))
    no_starts = np.zeros(3, dtype=bool)
    for _ in range(4):
        obs = env.step(np.zeros(3, dtype=np.int64))[0]
        actions, state = model.predict(obs, state, no_starts, deterministic=True)
        rebuilt_actions, rebuilt = model.predict(obs, rebuilt, no_starts, deterministic=True)
        assert np.array_equal(actions, rebuilt_actions)
    with pytest.raises(TypeError, match="this policy's core is 'gru'"):
        from_sb3_contrib_state(small_agent(env, core="gru").policy, (h, c))
    with pytest.raises(ValueError, match=r"\[1, n_envs, \d+\] arrays"):
        from_sb3_contrib_state(model.policy, (h[0], c[0]))


def test_load_refuses_a_zip_of_the_other_algorithm(tmp_path):
    small_agent(TorchVecEnvToSB3(TMaze(2, corridor_length=3)), core="gru", algo="a2c").save(tmp_path / "a2c")
    with pytest.raises(ValueError, match="was saved by RecurrentA2C; load it with RecurrentA2C.load"):
        RecurrentPPO.load(tmp_path / "a2c.zip")
    assert RecurrentA2C.load(tmp_path / "a2c.zip").n_steps > 0


def test_sb3_contrib_policy_and_lstm_names_build_an_lstm_core(algo, tmp_path):
    env = TorchVecEnvToSB3(RepeatFirst(2, length=6))
    algorithm, options = ALGORITHMS[algo]
    contrib_kwargs = dict(lstm_hidden_size=12, enable_critic_lstm=True, ortho_init=False, net_arch=dict(pi=[8], vf=[8]))
    model = algorithm("MlpLstmPolicy", env, policy_kwargs=contrib_kwargs, **options)
    policy = model.policy
    assert policy.core_name == "lstm" and policy.core.hidden_size == 12 and policy.critic_core is not None
    assert not policy.ortho_init and policy.net_arch == dict(pi=[8], vf=[8])
    model.learn(32)
    model.save(tmp_path / "model")
    assert type(model).load(tmp_path / "model.zip").policy.core.hidden_size == 12
    assert algorithm("MlpLstmPolicy", env, **options).policy.core.hidden_size == 256  # sb3-contrib's default
    assert algorithm("MlpPolicy", env, policy_kwargs=dict(shared_lstm=True), **options).policy.critic_core is None
    with pytest.warns(UserWarning, match="enable_critic_lstm=False"):
        model = algorithm("MlpLstmPolicy", env, policy_kwargs=dict(enable_critic_lstm=False), **options)
    assert model.policy.critic_core is None
    with pytest.raises(ValueError, match="n_lstm_layers=2"):
        algorithm("MlpLstmPolicy", env, policy_kwargs=dict(n_lstm_layers=2), **options)
    with pytest.raises(ValueError, match="core='gru'"):
        algorithm("MlpLstmPolicy", env, policy_kwargs=dict(core="gru"), **options)
