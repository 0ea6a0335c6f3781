"""Data from code we do not own (issue 22, causes 1, 2, 3, 5, 6, 7): users' ParallelEnvs checked
step by step, AEC envs converted, non-cooperative games refused or warned about, the sampled
estimator's limits, the observation encoders' edges, the OpenSpiel adapter's checks.

The fuzzed versions of these checks are in ``tests/test_fuzz_sampling.py``; here each cause has
its named cases, and every refusal is checked for the culprit it names.
"""

from __future__ import annotations

import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.envs.pz import mdp_parallel_env
from marl_kstep.sampling import (
    BoxDiscretiser,
    NonCooperativeRewardWarning,
    ObservationIndexer,
    rollout,
    space_encoder,
)
from marl_kstep.sampling.execution import KCoupledAgent, k_coupled_episode

Z_MAX = 4.5


# ---------------------------------------------------------------- a small user env, and one that misbehaves
class Pair(ParallelEnv):
    """Two agents. "a" sees a counter c in 0..2 (Discrete(3)); "b" sees (c % 2, c) as a
    MultiDiscrete([2, 3]). Both act in {0, 1}; the counter moves up when they agree (else it
    moves to a uniformly random value); the reward is 1 + c when they agree on action 1."""

    metadata = {"name": "pair_v0"}

    def __init__(self, max_cycles=6):
        self.possible_agents = ["a", "b"]
        self.max_cycles = max_cycles
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return spaces.Discrete(3) if agent == "a" else spaces.MultiDiscrete([2, 3])

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        return {"a": self.c, "b": np.array([self.c % 2, self.c])}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.c, self.t = int(self.rng.integers(3)), 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        agree = actions["a"] == actions["b"]
        r = float(1 + self.c) if agree and actions["a"] == 1 else 0.0
        self.c = (self.c + 1) % 3 if agree else int(self.rng.integers(3))
        self.t += 1
        done = self.t >= self.max_cycles
        rew = {a: r for a in self.agents}
        out = (self._obs(), rew, {a: False for a in self.agents}, {a: done for a in self.agents},
               {a: {} for a in self.agents})
        if done:
            self.agents = []
        return out


class Faulty(Pair):
    """``Pair`` whose output at one call is changed by ``fault(out, env) -> out``: ``at`` is -1
    for ``reset()``, else the step index."""

    def __init__(self, fault, at, max_cycles=6):
        super().__init__(max_cycles)
        self.fault, self.at = fault, at

    def reset(self, seed=None, options=None):
        out = super().reset(seed, options)
        return self.fault(out, self) if self.at == -1 else out

    def step(self, actions):
        out = super().step(actions)
        return self.fault(out, self) if self.t - 1 == self.at else out


def put(index, key, value):
    """A fault that sets ``out[index][key] = value`` (``key=None``: ``out[index] = value``)."""
    def fault(out, env):
        out = list(out)
        if key is None:
            out[index] = value
        else:
            out[index] = dict(out[index])
            out[index][key] = value
        return tuple(out)
    return fault


def drop(index, key):
    def fault(out, env):
        out = list(out)
        out[index] = {a: v for a, v in out[index].items() if a != key}
        return tuple(out)
    return fault


def space(n_obs, n_actions):
    """What ``Policy.uniform`` needs: the table shapes."""
    return SimpleNamespace(n_agents=len(n_obs), n_obs=n_obs, n_actions=n_actions)


PAIR = space((3, 6), (2, 2))


def sample(env, **kw):
    kw = dict(dict(gamma=0.9, episodes=5, seed=0), **kw)
    est = mk.SampledKStep(env, 2, **kw)
    return est.estimate(mk.Policy.uniform(est))


STEP_FAULTS = [  # (fault at step 2, fragments the message must hold)
    (lambda out, env: out[:4], ["env.step() at step 2 must return"]),
    (lambda out, env: None, ["env.step() at step 2 must return", "NoneType"]),
    (lambda out, env: list(out), ["env.step() at step 2 must return"]),
    (put(1, None, {}), ["step 2", "no reward for agent 'a'"]),
    (put(1, "ghost", 100.0), ["step 2", "'ghost'", "possible_agents"]),
    (drop(1, "b"), ["step 2", "no reward for agent 'b'"]),
    (put(2, None, None), ["step 2", "terminations must be a dict"]),
    (put(3, None, "no"), ["step 2", "truncations must be a dict"]),
    (put(2, None, {}), ["step 2", "'a' is missing"]),
    (put(0, None, [0, 1]), ["step 2", "observations must be a dict"]),
    (drop(0, "b"), ["step 2", "agent 1 ('b')", "no observation"]),
    (put(0, "ghost", 1), ["step 2", "'ghost'"]),
] + [(put(1, "a", v), ["step 2", "reward of agent 'a'"])
     for v in (np.nan, np.inf, -np.inf, "1", None, 1 + 1j, True, 10**400, np.array([1.0]), np.float64(np.nan))] + [
    (put(0, "a", v), ["step 2", "observation of agent 0 ('a')"])
    for v in (1.5, None, "x", np.nan, 2**70, -1, 3, [0, 1], np.array([1.5]), np.inf, np.array(["1"]), 1 + 0j)] + [
    (put(0, "b", v), ["step 2", "observation of agent 1 ('b')"])
    for v in ([1], [1, 2, 0], [1.5, 0], None, "xy", [2**70, 0], [np.nan, 0], [2, 0], [[1, 2]], np.array([1, 3]),
              [0, -1], ["0", "1"])]


@pytest.mark.parametrize("fault,fragments", STEP_FAULTS)
def test_a_misbehaving_step_is_named(fault, fragments):
    with pytest.raises(ValueError) as err:
        sample(Faulty(fault, at=2))
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


RESET_FAULTS = [
    (lambda out, env: out[0], ["env.reset() must return (observations, infos)"]),
    (lambda out, env: None, ["env.reset() must return"]),
    (lambda out, env: (out[0], {}, 3), ["env.reset() must return", "length 3"]),
    (drop(0, "a"), ["env.reset()", "agent 0 ('a')", "no observation"]),
    (put(0, "a", 0.5), ["env.reset()", "observation of agent 0 ('a')"]),
    (put(0, "b", [1]), ["env.reset()", "observation of agent 1 ('b')", "shape"]),
]


@pytest.mark.parametrize("fault,fragments", RESET_FAULTS)
def test_a_misbehaving_reset_is_named(fault, fragments):
    with pytest.raises(ValueError) as err:
        sample(Faulty(fault, at=-1))
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


def test_agents_that_vanish_or_are_unknown_are_named():
    def no_agents(out, env):
        env.agents = []
        return out

    def stranger(out, env):
        env.agents = ["a", "zed"]
        return out

    with pytest.raises(ValueError, match=r"env.reset\(\): env.agents is empty"):
        sample(Faulty(no_agents, at=-1))
    with pytest.raises(ValueError, match="'zed'"):
        sample(Faulty(stranger, at=-1))
    env = Pair()
    env.possible_agents = []
    with pytest.raises(ValueError, match="possible_agents"):
        mk.SampledKStep(env, 2, gamma=0.9)
    env.possible_agents = ["a", "a"]
    with pytest.raises(ValueError, match="repeated agent"):
        mk.SampledKStep(env, 2, gamma=0.9)
    env = Pair()
    env.observation_space = "Discrete(3)"
    with pytest.raises(TypeError, match="observation_space must be callable"):
        mk.SampledKStep(env, 2, gamma=0.9)


def test_an_env_ended_early_by_its_agents_is_not_an_error():
    """Agents may leave: the episode ends when env.agents is empty, at any step."""
    def end(out, env):
        env.agents = []
        return out

    est = mk.SampledKStep(Faulty(end, at=1), 2, gamma=0.9, episodes=3, seed=0)
    assert np.isfinite(est.estimate(mk.Policy.uniform(est)).J_k)


class Alias(Pair):
    """``Pair`` with its observations and rewards in other valid types (numpy integers, 0-d arrays,
    integral floats, lists, tuples, float arrays, numpy rewards)."""

    def __init__(self, variant, max_cycles=6):
        super().__init__(max_cycles)
        self.variant = variant

    def _obs(self):
        c = self.c
        a, b = {0: (np.int64(c), [c % 2, c]), 1: (np.array(c), (c % 2, c)), 2: (float(c), np.array([c % 2, c], float)),
                3: (np.uint8(c), np.array([c % 2, c], np.int32))}[self.variant]
        return {"a": a, "b": b}

    def step(self, actions):
        out = super().step(actions)
        rew = {k: (np.float64(v) if self.variant % 2 else np.int64(v)) for k, v in out[1].items()}
        return (out[0], rew) + out[2:]


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_valid_output_types_give_the_same_estimate(variant):
    ref = sample(Pair(), episodes=60, seed=3)
    other = sample(Alias(variant), episodes=60, seed=3)
    assert other.J_k == ref.J_k and other.J_k_se == ref.J_k_se
    for g, h in zip(ref.grad, other.grad, strict=True):
        np.testing.assert_array_equal(g, h)


def test_before_and_after_the_checks_the_issue_examples():
    """The issue's examples on a built-in model's env: a ghost reward, an agent without observation."""
    mdp = mk.compile_env(number_matching.parallel_env())

    class Ghost(ParallelEnv):
        def __init__(self, mode):
            self.env, self.mode = mdp_parallel_env(mdp, max_cycles=40), mode
            self.possible_agents, self.max_cycles = self.env.possible_agents, 40

        agents = property(lambda self: self.env.agents)

        def observation_space(self, a):
            return self.env.observation_space(a)

        def action_space(self, a):
            return self.env.action_space(a)

        def reset(self, seed=None, options=None):
            return self.env.reset(seed=seed)

        def step(self, actions):
            out = self.env.step(actions)
            rew = dict(out[1], ghost=100.0) if self.mode == "ghost" else out[1]
            obs = {a: o for a, o in out[0].items() if a != "agent_1"} if self.mode == "drop" else out[0]
            return (obs, rew) + out[2:]

    plain = sample(Ghost("plain"), gamma=mdp.gamma, episodes=100)
    same = mk.SampledKStep(mdp, 2, episodes=100, seed=0, horizon=40, path="env").estimate(mk.Policy.uniform(mdp))
    assert plain.J_k == same.J_k and plain.J_k_se > 0  # the wrapper changes nothing when it behaves
    with pytest.raises(ValueError, match="'ghost', which is not in possible_agents"):
        sample(Ghost("ghost"), gamma=mdp.gamma)
    with pytest.raises(ValueError, match=r"agent 1 \('agent_1'\) is live .* no observation"):
        sample(Ghost("drop"), gamma=mdp.gamma)


def test_team_reward_callables_are_checked():
    for bad in (lambda r: np.nan, lambda r: "1", lambda r: None, lambda r: np.inf):
        with pytest.raises(ValueError, match="team_reward"):
            sample(Pair(), team_reward=bad)
    with pytest.raises(ValueError, match="team_reward must be"):
        mk.SampledKStep(Pair(), 2, gamma=0.9, team_reward="max")
    with pytest.raises(ValueError, match="team_reward must be"):
        mk.SampledKStep(Pair(), 2, gamma=0.9, team_reward=5)
    # "sum" is twice the mean here (both agents get the same reward)
    m, s = sample(Pair(), team_reward="mean", episodes=30), sample(Pair(), team_reward="sum", episodes=30)
    assert s.J_k == pytest.approx(2 * m.J_k) and m.J_k > 0


def test_k_coupled_episode_checks_without_an_estimator():
    env = Faulty(put(1, "a", np.nan), at=0)
    agents = [KCoupledAgent(np.full((3, 2), 0.5), 1, np.random.default_rng(0)),
              KCoupledAgent(np.full((6, 2), 0.5), 1, np.random.default_rng(1))]
    with pytest.raises(ValueError, match=r"env.step\(\) at step 0: the reward of agent 'a' must be finite"):
        k_coupled_episode(env, agents, horizon=5, reset_seed=0)
    ep = k_coupled_episode(Pair(), agents, horizon=5, reset_seed=0)
    assert ep.rewards.shape == (5,)
    with pytest.raises(ValueError, match="one KCoupledAgent per possible agent"):
        k_coupled_episode(Pair(), agents[:1], horizon=5)


# ---------------------------------------------------------------- cause 2: AEC envs
def test_an_aec_env_is_converted_and_gives_the_parallel_envs_numbers():
    rps_v2 = pytest.importorskip("pettingzoo.classic.rps_v2")
    mine = lambda rew: rew["player_0"]  # noqa: E731
    a = sample(rps_v2.env(max_cycles=8), team_reward=mine, episodes=200, seed=4)
    p = sample(rps_v2.parallel_env(max_cycles=8), team_reward=mine, episodes=200, seed=4)
    assert a.J_k == p.J_k and a.J_k_se == p.J_k_se and a.J_k_se > 0
    # rollout converts too
    pol = mk.Policy.uniform(mk.SampledKStep(rps_v2.parallel_env(), 1, gamma=0.9, team_reward=mine))
    r1 = rollout(rps_v2.env(max_cycles=8), pol, 2, 20, seed=1, gamma=0.9, team_reward=mine)
    r2 = rollout(rps_v2.parallel_env(max_cycles=8), pol, 2, 20, seed=1, gamma=0.9, team_reward=mine)
    np.testing.assert_array_equal(r1, r2)


def test_a_turn_based_aec_env_is_refused_by_name():
    ttt = pytest.importorskip("pettingzoo.classic.tictactoe_v3")
    with pytest.raises(ValueError, match="AEC .*is_parallelizable"):
        mk.SampledKStep(ttt.env(), 2, gamma=0.9, horizon=9)


# ---------------------------------------------------------------- cause 3: non-cooperative games
class Unequal(Pair):
    def step(self, actions):
        out = super().step(actions)
        return (out[0], {"a": 1.0, "b": 2.0}) + out[2:]


def test_different_rewards_warn_once_when_no_team_reward_was_chosen():
    rps_v2 = pytest.importorskip("pettingzoo.classic.rps_v2")
    with pytest.warns(NonCooperativeRewardWarning) as rec:
        est = mk.SampledKStep(rps_v2.parallel_env(max_cycles=8), 2, gamma=0.9, episodes=50, seed=0)
        est.estimate(mk.Policy.uniform(est))
        est.estimate(mk.Policy.uniform(est))
    assert sum(r.category is NonCooperativeRewardWarning for r in rec) == 1
    assert "player_0" in str(rec[0].message)
    for choice in ("mean", "sum"):  # chosen, but 0 in a zero-sum game: still a warning, saying so
        with pytest.warns(NonCooperativeRewardWarning, match=f"their {choice} is 0"):
            sample(rps_v2.parallel_env(max_cycles=8), team_reward=choice, episodes=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonCooperativeRewardWarning)
        sample(rps_v2.parallel_env(max_cycles=8), team_reward=lambda r: r["player_0"], episodes=20)
        sample(Pair(), episodes=20)  # equal rewards: no warning
        sample(Unequal(), episodes=20, team_reward="mean")  # chosen, unequal, not zero-sum: no warning
    with pytest.warns(NonCooperativeRewardWarning, match="no team_reward was chosen"):
        sample(Unequal(), episodes=20)


def test_zero_sum_openspiel_games_need_a_team_reward():
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv
    env = SpielParallelEnv(pyspiel.load_game("kuhn_poker"))
    assert env.cooperative is False and "zero_sum" in env.utility
    with pytest.raises(ValueError, match="not cooperative .*zero_sum.* team_reward"):
        mk.SampledKStep(env, 1, gamma=0.9)
    with pytest.raises(ValueError, match="team_reward"):
        rollout(env, mk.Policy.uniform(space((7, 7), (2, 2))), 1, 5, horizon=3, gamma=0.9)
    from marl_kstep.envs.openspiel import tiny_hanabi_game
    assert SpielParallelEnv(tiny_hanabi_game("A")).cooperative is True


def _kuhn_exact(game, gamma, player):
    """Expected discounted return of ``player`` when both play uniformly (all actions, tree walk)."""
    def walk(state, depth):
        if state.is_terminal():
            return gamma ** (depth - 1) * state.returns()[player]
        if state.is_chance_node():
            return sum(q * walk(state.child(a), depth) for a, q in state.chance_outcomes())
        acts = state.legal_actions()
        return sum(walk(state.child(a), depth + 1) for a in acts) / game.num_distinct_actions()
    return walk(game.new_initial_state(), 0)


@pytest.mark.parametrize("player", [0, 1])
def test_a_zero_sum_game_pays_each_player_its_own_return(player):
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv
    game = pyspiel.load_game("kuhn_poker")
    est = mk.SampledKStep(SpielParallelEnv(game), 2, gamma=0.9, episodes=4000, seed=player,
                          team_reward=lambda rew: rew[f"player_{player}"])
    e = est.estimate(mk.Policy.uniform(est))
    exact = _kuhn_exact(game, 0.9, player)
    assert abs(exact) > 0.01 and abs(e.J_k - exact) <= Z_MAX * e.J_k_se


# ---------------------------------------------------------------- cause 5: limits of SampledKStep
def small_mdp(gamma=0.9, reward=1.0):
    P = np.zeros((2, 2, 2))
    P[:, 0, 0] = P[:, 1, 1] = 1.0
    R = np.array([[0.0, reward], [reward, 0.0]])
    return mk.JointMDP.from_dense(P, R, [np.array([0, 1])], (2,), np.array([1.0, 0.0]), gamma)


@pytest.mark.parametrize("kw,fragment", [
    (dict(horizon=2**31), "horizon must be <= 2147483647"),
    (dict(horizon=2**31 - 1), "max_sample_steps"),
    (dict(episodes=2**31, horizon=10), "max_sample_steps"),
    (dict(episodes=2**62, horizon=2**31 - 1), "max_sample_steps"),
    (dict(path="batched"), "path='batched' needs a scenario model"),
    (dict(team_reward="sum"), "team_reward applies to the env path"),
    (dict(team_reward=lambda r: 0.0), "team_reward applies to the env path"),
    (dict(horizon=10, tail=1e-3), "give horizon or tail"),
    (dict(tail=0.0), "tail"),
    (dict(seed=-1), "seed"),
    (dict(seed="1"), "seed"),
])
def test_sampled_limits_are_named_before_any_work(kw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        mk.SampledKStep(small_mdp(), 2, **dict(dict(episodes=10), **kw))


def test_the_default_horizon_near_gamma_one_is_refused_and_the_budget_is_read_at_call_time():
    with pytest.raises(ValueError, match=r"is 9.21e\+09 steps.*give horizon="):
        mk.SampledKStep(small_mdp(gamma=1 - 1e-9), 2)
    est = mk.SampledKStep(small_mdp(gamma=1 - 1e-9), 2, horizon=100, episodes=10)  # explicit: fine
    with mk.configure(max_sample_steps=999):
        with pytest.raises(ValueError, match=r"10 \* 100 = 1e\+03 simulated steps .*max_sample_steps = 999"):
            est.estimate(mk.Policy.uniform(est))
        with pytest.raises(ValueError, match="max_sample_steps"):
            mk.SampledKStep(Pair(), 2, gamma=0.9, episodes=1000)
        with pytest.raises(ValueError, match="max_sample_steps"):
            rollout(Pair(), mk.Policy.uniform(PAIR), 2, 1000, gamma=0.9)
    with mk.configure(max_sample_steps=2**62, max_model_bytes=2**20):
        with pytest.raises(ValueError, match="scratch memory"):
            mk.SampledKStep(small_mdp(), 2, horizon=10**7, episodes=1)
    assert np.isfinite(est.estimate(mk.Policy.uniform(est)).J_k)
    with pytest.raises(ValueError, match="tail sets the default horizon of a model"):
        mk.SampledKStep(Pair(), 2, gamma=0.9, tail=1e-3)
    for bad in (10**12, 6.5, 0, None, "6"):
        env = Pair()
        env.max_cycles = bad
        with pytest.raises(ValueError, match="horizon"):
            mk.SampledKStep(env, 2, gamma=0.9)
        assert mk.SampledKStep(env, 2, gamma=0.9, horizon=6).horizon == 6


def test_seed_sequences_and_generators_are_seeds():
    mdp = small_mdp()
    pol = mk.Policy.from_arrays(mdp, [np.array([[0.3, 0.7], [0.6, 0.4]])])

    def run(seed, calls=2, **kw):
        est = mk.SampledKStep(mdp, 2, episodes=50, horizon=20, seed=seed, **kw)
        return [est.estimate(pol).J_k for _ in range(calls)]

    assert run(np.random.SeedSequence(7)) == run(7)  # the same streams as the int seed
    assert run(np.random.default_rng(3)) == run(np.random.default_rng(3))
    assert run(np.random.PCG64(3)) == run(np.random.default_rng(3))
    a, b = run(np.random.SeedSequence(7).spawn(2)[1]), run(np.random.SeedSequence(7).spawn(2)[1])
    assert a == b and a != run(7)
    est = mk.SampledKStep(mdp, 2, episodes=50, horizon=20, seed=0)
    assert est.estimate(pol, seed=np.random.SeedSequence(5)).J_k == est.estimate(pol, seed=5).J_k
    assert "SeedSequence" in repr(mk.SampledKStep(mdp, 2, seed=np.random.SeedSequence(1)))
    for bad in (1.5, "x", -3, np.nan):
        with pytest.raises(ValueError, match="seed"):
            est.estimate(pol, seed=bad)


class Scaled(Pair):
    def step(self, actions):
        out = super().step(actions)
        return (out[0], {a: r * 2.0**500 for a, r in out[1].items()}) + out[2:]


class Huge(Pair):
    def step(self, actions):
        out = super().step(actions)
        return (out[0], {a: 5e307 for a in out[1]}) + out[2:]


def test_returns_that_overflow_are_an_error_not_an_infinite_estimate():
    for path in ("fast", "env"):
        est = mk.SampledKStep(small_mdp(reward=1e307), 2, episodes=10, horizon=30, seed=0, path=path)
        with pytest.raises(ValueError, match="overflow"):
            est.estimate(mk.Policy.uniform(est))
    with pytest.raises(ValueError, match="overflow"):
        sample(Huge())
    with pytest.raises(ValueError, match="overflow"):
        rollout(Huge(), mk.Policy.uniform(PAIR), 2, 3, gamma=0.99)
    # large but representable: a finite estimate, exactly scaled (a power of 2 scales without rounding)
    small, big = sample(Pair(), episodes=20), sample(Scaled(), episodes=20)
    assert big.J_k == small.J_k * 2.0**500 and big.J_k > 0


class Gate(Pair):
    """``Pair`` whose first step waits until ``release`` is set (and says it has started)."""

    def __init__(self):
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def step(self, actions):
        if self.t == 0 and not self.release.is_set():
            self.started.set()
            assert self.release.wait(20)
        return super().step(actions)


def test_an_env_used_by_two_threads_at_once_is_refused():
    env = Gate()
    est_a = mk.SampledKStep(env, 2, gamma=0.9, episodes=3, seed=1)
    est_b = mk.SampledKStep(env, 2, gamma=0.9, episodes=3, seed=2)
    pol = mk.Policy.uniform(est_a)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("a", est_a.estimate(pol)))
    th.start()
    assert env.started.wait(20)
    with pytest.raises(ValueError, match="already running an episode .* its own env"):
        est_b.estimate(pol)
    env.release.set()
    th.join(20)
    # the first thread's estimate is the one a lone run gives
    lone = mk.SampledKStep(Pair(), 2, gamma=0.9, episodes=3, seed=1).estimate(pol)
    assert out["a"].J_k == lone.J_k
    # the refused call used up est_b's first stream; its second call is a lone estimator's second
    est_c = mk.SampledKStep(Pair(), 2, gamma=0.9, episodes=3, seed=2)
    est_c.estimate(pol)
    assert est_b.estimate(pol).J_k == est_c.estimate(pol).J_k


def test_threads_sharing_an_env_get_the_lone_runs_numbers_or_a_refusal():
    env = Pair()
    pol = mk.Policy.uniform(mk.SampledKStep(env, 2, gamma=0.9))
    lone = [mk.SampledKStep(Pair(), 2, gamma=0.9, episodes=200, seed=s).estimate(pol).J_k for s in range(4)]
    results = [None] * 4

    def work(s):
        try:
            results[s] = mk.SampledKStep(env, 2, gamma=0.9, episodes=200, seed=s).estimate(pol).J_k
        except ValueError as exc:
            results[s] = str(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in range(4):
        assert results[s] == lone[s] or "already running an episode" in results[s]


def test_an_env_that_steps_itself_inside_its_step_is_refused():
    class Reentrant(Pair):
        def step(self, actions):
            if self.t == 1:
                rollout(self, mk.Policy.uniform(PAIR), 1, 1, gamma=0.9)
            return super().step(actions)

    with pytest.raises(ValueError, match="already running an episode"):
        sample(Reentrant())


# ---------------------------------------------------------------- cause 6: encoders
def test_box_bin_counts_that_overflow_are_refused():
    with pytest.raises(ValueError, match=r"bins must multiply to fewer than 2\*\*62"):
        BoxDiscretiser([0.0] * 3, [1.0] * 3, [2**21] * 3)  # was n = -2**63
    assert BoxDiscretiser([0.0] * 3, [1.0] * 3, [2**20] * 3).n == 2**60
    with pytest.raises(ValueError, match="space .* too many"):
        space_encoder(spaces.MultiDiscrete([2**31] * 2))


def test_box_cells_on_the_widest_range_and_at_infinity():
    wide = BoxDiscretiser([-1e308], [1e308], 4)  # cells of width 5e307
    cells = {-np.inf: 0, -1e308: 0, -6e307: 0, -1e307: 1, 0.0: 2, 1e307: 2, 6e307: 3, 1e308: 3, np.inf: 3}
    assert {v: wide([v]) for v in cells} == cells  # before: every one in cell 0
    box = BoxDiscretiser([0.0, -1.0], [1.0, 1.0], [4, 2])
    assert box([np.inf, -np.inf]) == 3 * 2 + 0 and box([-np.inf, np.inf]) == 1 and box([0.5, 0.0]) == 2 * 2 + 1
    for bad, fragment in [([np.nan, 0.0], "entry 0 is NaN"), ([0.0, np.nan], "entry 1 is NaN"),
                          (None, "real numbers"), (["x", "y"], "real numbers"), ([1 + 1j, 0], "real numbers"),
                          ([0.5], "has 1 entries")]:
        with pytest.raises(ValueError, match=fragment):
            box(bad)


def test_observation_indexer_refuses_nan_and_bounds_decimals():
    ix = ObservationIndexer(6, decimals=300)
    assert [ix(np.array([1.5])), ix(np.array([1e300])), ix([1.5]), ix(("left", "open")), ix(("left", "open"))] == \
        [0, 1, 0, 2, 2]
    for bad in (np.nan, np.float32(np.nan), np.array([0.0, np.nan]), [np.nan], (1.0, np.nan), ("a", np.nan)):
        with pytest.raises(ValueError, match="NaN"):
            ix(bad)  # before: a new id for every NaN
    for bad in ({}, ["a", "b"], [[1], [1, 2]]):
        with pytest.raises(ValueError, match="observation"):
            ix(bad)
    for bad in (10**30, 301, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="decimals"):
            ObservationIndexer(3, decimals=bad)


def test_space_encoders_take_integers_exactly():
    d = space_encoder(spaces.Discrete(3))
    assert [d(1), d(1.0), d(np.int64(2)), d(np.array(0)), d(True)] == [1, 1, 2, 0, 1]
    for bad in (1.5, np.nan, None, "1", 2**70, 3, -1, [1], 1 + 0j):
        with pytest.raises(ValueError, match="is not in Discrete"):
            d(bad)  # before: 1.5 -> 1
    m = space_encoder(spaces.MultiDiscrete([2, 3]))
    assert [m([1, 2]), m((0, 1)), m(np.array([1.0, 0.0]))] == [5, 1, 3]
    for bad in ([1], [1, 2, 0], [[1, 2]], [1.5, 0], None, [2**70, 0], ["1", "0"], [2, 0]):
        with pytest.raises(ValueError, match="is not in MultiDiscrete"):
            m(bad)  # before: [1] broadcast to id 4


# ---------------------------------------------------------------- cause 7: the OpenSpiel adapter
def test_openspiel_games_the_adapter_cannot_represent_are_refused():
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv, best_deterministic_spiel, spiel_value
    cases = [("matrix_rps", "simultaneous dynamics"), ("catch", "1 player"), ("chess", "game-tree nodes"),
             ("go", "game-tree nodes"), ("hex", "game-tree nodes")]
    for name, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            SpielParallelEnv(pyspiel.load_game(name))
    with pytest.raises(ValueError, match="more than max_nodes=100 "):
        SpielParallelEnv(pyspiel.load_game("leduc_poker"), max_nodes=100)
    for bad in (0, None, 1.5, "9"):
        with pytest.raises(ValueError, match="max_nodes"):
            SpielParallelEnv(pyspiel.load_game("kuhn_poker"), max_nodes=bad)
    with pytest.raises(ValueError, match="game must be a pyspiel.Game"):
        SpielParallelEnv("kuhn_poker")
    with pytest.raises(ValueError, match="zero_sum utility"):
        best_deterministic_spiel(pyspiel.load_game("kuhn_poker"))
    with pytest.raises(ValueError, match="zero_sum utility"):
        spiel_value(pyspiel.load_game("kuhn_poker"), [], [])


@pytest.mark.parametrize("name", ["kuhn_poker", "leduc_poker"])
def test_tree_size_probes_are_unbiased(name):
    """Knuth's estimate (one probe) has the exact node count as its mean: z-test over 400 probes."""
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import probe_tree_size
    game = pyspiel.load_game(name)

    def count(state):
        if state.is_terminal():
            return 1
        acts = [a for a, _ in state.chance_outcomes()] if state.is_chance_node() else state.legal_actions()
        return 1 + sum(count(state.child(a)) for a in acts)

    exact = count(game.new_initial_state())
    est = np.array([probe_tree_size(game, probes=1, seed=s) for s in range(400)])
    assert est.std() > 0 and abs(est.mean() - exact) <= Z_MAX * est.std() / np.sqrt(est.size), (exact, est.mean())


def test_openspiel_step_refuses_illegal_and_non_integer_actions():
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv
    env = SpielParallelEnv(pyspiel.load_game("leduc_poker"))
    env.reset(seed=0)
    cur = f"player_{env.spiel_state.current_player()}"
    legal = env.spiel_state.legal_actions()
    illegal = [a for a in range(3) if a not in legal]
    assert illegal, legal
    for bad, fragment in [(illegal[0], "is illegal here"), (5, "is illegal here"), (-1, "is illegal here"),
                          (1.0, "must be an integer"), (True, "must be an integer"), (None, "must be an integer"),
                          (np.float64(1), "must be an integer"), ("1", "must be an integer")]:
        with pytest.raises(ValueError, match=fragment):
            env.step({cur: bad})
    with pytest.raises(ValueError, match="no action for"):
        env.step({})
    history = env.spiel_state.history()
    env.step({cur: np.int64(legal[0])})  # numpy integers are integers
    assert env.spiel_state.history()[: len(history)] == history and len(env.spiel_state.history()) > len(history)
    with pytest.raises(ValueError, match="reset"):
        SpielParallelEnv(pyspiel.load_game("kuhn_poker")).step({"player_0": 0})
    for bad in (-1, 1.5, "3", np.nan, True):
        with pytest.raises(ValueError, match="seed"):
            env.reset(seed=bad)
    obs, _ = env.reset(seed=np.int64(3))
    while env.agents:  # play to the end with legal actions; then step() is refused
        cur = f"player_{env.spiel_state.current_player()}"
        env.step({cur: env.spiel_state.legal_actions()[0]})
    with pytest.raises(ValueError, match="call reset"):
        env.step({cur: 0})


def test_best_deterministic_spiel_checks_max_policies():
    pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import best_deterministic_spiel, tiny_hanabi_game
    game = tiny_hanabi_game("A")
    value, _, count = best_deterministic_spiel(game, max_policies=None)  # the Settings default
    assert value == best_deterministic_spiel(game, max_policies=count)[0]
    for bad in (np.nan, 0, -1, 1.5, "10", True):
        with pytest.raises(ValueError, match="max_policies"):
            best_deterministic_spiel(game, max_policies=bad)
    with pytest.raises(ValueError, match=f"exceed max_policies={count - 1}"):
        best_deterministic_spiel(game, max_policies=count - 1)
    with mk.configure(max_policies=10):
        with pytest.raises(ValueError, match="exceed max_policies=10"):
            best_deterministic_spiel(game)
