"""The sampled k-step estimator (SPEC §8) against the exact kernel: z-scores, both paths.

Every comparison is a z-score: (sample mean - exact) / standard error, for J_k and for every
entry of the row-centred gradient C grad J_k; |z| <= 4.5 (with a few hundred entries per test,
a false alarm has probability below 1e-3). Truncation at the horizon is kept far below one
standard error (gamma^H <= 1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

import marl_kstep as mk
from marl_kstep.envs import aggregated_chain, grid_coordination, mdp_parallel_env, number_matching, two_state
from marl_kstep.optim import mirror_step, pgd_step, project_simplex
from marl_kstep.sampling import BoxDiscretiser, ObservationIndexer, _kernels, horizon_for, space_encoder

Z_MAX = 4.5

#: (name, parallel_env factory, config): small configurations of every built-in scenario
SCENARIOS = [
    ("two_state", two_state.parallel_env, {}),
    ("aggregated_chain", aggregated_chain.parallel_env, dict(length=4)),
    ("number_matching", number_matching.parallel_env, dict(n_numbers=4, start="far")),
    ("number_matching_own3", number_matching.parallel_env, dict(n_agents=3, n_numbers=3, observation="own")),
    ("grid_trap", grid_coordination.parallel_env, dict(grid_coordination.TRAP_CONFIG)),
]


def centred(grad):
    return [g - g.mean(axis=1, keepdims=True) for g in grad]


def z_scores(est: mk.Estimate, exact: mk.Estimate):
    """z of J_k, and of every gradient entry (entries with a zero standard error must match exactly)."""
    zJ = (est.J_k - exact.J_k) / est.J_k_se
    zs = []
    for g, c, se in zip(est.grad, centred(exact.grad), est.grad_se, strict=True):
        d = g - c
        ok = se > 0
        # an entry never drawn (its row unreachable) has estimate 0 and se 0: the exact one is 0 too
        np.testing.assert_allclose(d[~ok], 0.0, atol=1e-9)
        zs.append(d[ok] / se[ok])
    return zJ, np.concatenate(zs)


def check(est, exact):
    zJ, zg = z_scores(est, exact)
    assert abs(zJ) <= Z_MAX, (est.J_k, exact.J_k, est.J_k_se)
    assert zg.size and np.abs(zg).max() <= Z_MAX, np.abs(zg).max()
    return zJ, zg


def interior_policy(space, seed):
    # concentration 3 keeps entries away from 0, where the 1/theta weights make the spread heavy-tailed
    return mk.Policy.random(space, seed, concentration=3.0)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("name,factory,config", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_fast_path_matches_exact(name, factory, config, k):
    mdp = mk.compile_env(factory(**config))
    pol = interior_policy(mdp, 10 + k)
    est = mk.SampledKStep(mdp, k, episodes=20_000, seed=k)
    assert est.path == "fast" and est.truncation_bound <= 1e-4 * np.abs(mdp.rewards).max() / (1 - mdp.gamma) * 1.01
    check(est.estimate(pol), mk.ExactKStep(mdp, k).estimate(pol))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("name,factory,config", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_env_path_matches_exact(name, factory, config, k):
    config = dict(config, gamma=0.8)  # a short horizon keeps the Python loop quick (gamma^H <= 1e-4)
    H = horizon_for(0.8, 1e-4)
    env = factory(**config, max_cycles=H)
    mdp = mk.compile_env(env)
    pol = interior_policy(mdp, 20 + k)
    est = mk.SampledKStep(env, k, episodes=600, seed=k, path="env")
    assert est.path == "env" and est.horizon == H and est.gamma == 0.8
    check(est.estimate(pol), mk.ExactKStep(mdp, k).estimate(pol))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("name,factory,config", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_batched_path_matches_exact(name, factory, config, k):
    env = factory(**config)
    mdp = mk.compile_env(env)
    pol = interior_policy(mdp, 30 + k)
    est = mk.SampledKStep(env, k, episodes=6000, seed=k)  # a scenario env: its model, in batches
    assert est.path == "batched" and est.mdp is None and est.gamma == mdp.gamma
    check(est.estimate(pol), mk.ExactKStep(mdp, k).estimate(pol))


def test_env_path_on_a_model_and_fast_path_agree_in_distribution():
    mdp = mk.compile_env(number_matching.parallel_env(n_numbers=3, gamma=0.8))
    pol = interior_policy(mdp, 3)
    exact = mk.ExactKStep(mdp, 2).estimate(pol)
    env_est = mk.SampledKStep(mdp, 2, episodes=800, seed=1, path="env")
    assert env_est.path == "env" and env_est.mdp is mdp
    check(env_est.estimate(pol), exact)


# ---------------------------------------------------------------- a PettingZoo env written here
class RelayEnv(ParallelEnv):
    """Two agents, three rooms 0,1,2 and a lamp. Agent 0 ("pusher") sees whether the lamp is on
    (Discrete(2)); agent 1 ("walker") sees its room and the lamp as a MultiDiscrete([3, 2]).
    Walker: 0 = stay, 1 = move right (room 2 wraps to 0 with probability 1/2, else stays).
    Pusher: 0 = wait, 1 = toggle the lamp. Reward: 1 when the walker is in room 2 with the lamp
    on, minus 0.1 per toggle; both agents receive it. Start: room 0, lamp off or on with
    probability 3/4, 1/4."""

    metadata = {"name": "relay_v0"}

    def __init__(self, max_cycles=60):
        self.possible_agents = ["pusher", "walker"]
        self.max_cycles = max_cycles
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return spaces.Discrete(2) if agent == "pusher" else spaces.MultiDiscrete([3, 2])

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        return {"pusher": self.lamp, "walker": np.array([self.room, self.lamp])}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.room, self.lamp, self.t = 0, int(self.rng.random() < 0.25), 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        push, walk = actions["pusher"], actions["walker"]
        r = float(self.room == 2 and self.lamp == 1) - 0.1 * push
        if walk == 1:
            if self.room < 2:
                self.room += 1
            elif self.rng.random() < 0.5:
                self.room = 0
        if push == 1:
            self.lamp = 1 - self.lamp
        self.t += 1
        done = self.t >= self.max_cycles
        rew = {a: r for a in self.agents}
        term = {a: False for a in self.agents}
        trunc = {a: done for a in self.agents}
        obs = self._obs()
        if done:
            self.agents = []
        return obs, rew, term, trunc, {a: {} for a in rew}


def relay_model(gamma):
    """RelayEnv's exact joint MDP, written independently: state = room * 2 + lamp."""
    N, J = 6, 4
    P = np.zeros((N, J, N))
    R = np.zeros((N, J))
    for room in range(3):
        for lamp in range(2):
            s = room * 2 + lamp
            for push in range(2):
                for walk in range(2):
                    j = push * 2 + walk  # agent 0 (pusher) most significant
                    R[s, j] = float(room == 2 and lamp == 1) - 0.1 * push
                    lamp2 = 1 - lamp if push else lamp
                    rooms = {room: 1.0} if walk == 0 else ({room + 1: 1.0} if room < 2 else {0: 0.5, 2: 0.5})
                    for r2, p in rooms.items():
                        P[s, j, r2 * 2 + lamp2] += p
    obs = [np.array([s % 2 for s in range(N)]), np.array([s for s in range(N)])]  # walker: room*2+lamp
    mu = np.zeros(N)
    mu[0], mu[1] = 0.75, 0.25
    return mk.JointMDP.from_dense(P, R, obs, (2, 2), mu, gamma, n_obs=(2, 6))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_user_env_matches_its_exact_model(k):
    gamma = 0.8
    H = horizon_for(gamma, 1e-4)
    env = RelayEnv(max_cycles=H)
    est = mk.SampledKStep(env, k, gamma=gamma, episodes=1500, seed=7)
    assert est.n_obs == (2, 6) and est.n_actions == (2, 2) and est.mdp is None
    pol = interior_policy(est, 5 + k)  # Policy constructors accept the estimator
    check(est.estimate(pol), mk.ExactKStep(relay_model(gamma), k).estimate(pol))


def test_deterministic_policy_value_is_the_same_for_every_k():
    mdp = mk.compile_env(number_matching.parallel_env(n_numbers=4, start="far"))
    pol = mk.Policy.deterministic(mdp, [[1, 0], [0, 0]])
    exact = mk.ExactKStep(mdp, 1).value(pol)
    for k in (1, 2, 5):
        e = mk.SampledKStep(mdp, k, episodes=2000, seed=0).estimate(pol)
        assert abs(e.J_k - exact) <= Z_MAX * e.J_k_se + mk.SampledKStep(mdp, k).truncation_bound


# ---------------------------------------------------------------- reproducibility, threads, baseline
def test_seeds_make_estimates_reproducible_and_calls_independent():
    mdp = mk.compile_env(two_state.parallel_env())
    pol = mk.Policy.uniform(mdp)
    a = mk.SampledKStep(mdp, 2, episodes=500, seed=4)
    b = mk.SampledKStep(mdp, 2, episodes=500, seed=4)
    ea, eb = a.estimate(pol), b.estimate(pol)
    assert ea.J_k == eb.J_k and all(np.array_equal(x, y) for x, y in zip(ea.grad, eb.grad, strict=True))
    assert a.estimate(pol).J_k != ea.J_k  # the second call draws a new stream
    assert a.estimate(pol, seed=99).J_k == b.estimate(pol, seed=99).J_k


def test_fast_path_result_does_not_depend_on_threads():
    mdp = mk.compile_env(number_matching.parallel_env(n_numbers=3))
    est = mk.SampledKStep(mdp, 2, episodes=64, seed=0)
    theta = np.concatenate([t.ravel() for t in mk.Policy.random(mdp, 1).theta])
    out = []
    for parallel in (False, True):
        acc = [np.zeros((16, theta.size)), np.zeros((16, theta.size)), np.zeros((16, 3))]
        seeds = np.arange(1, 17, dtype=np.uint64)
        _kernels.simulate_chunks(parallel, np.full(16, 4, dtype=np.int64), seeds, True, 2, est.horizon, mdp.gamma,
                                 theta, est._layout, est._arrays, *acc)
        out.append(acc)
    for x, y in zip(*out, strict=True):
        np.testing.assert_array_equal(x, y)


def test_no_baseline_is_unbiased_too_and_the_baseline_lowers_the_spread():
    mdp = mk.compile_env(aggregated_chain.parallel_env(length=4))
    pol = interior_policy(mdp, 1)
    exact = mk.ExactKStep(mdp, 2).estimate(pol)
    with_b = mk.SampledKStep(mdp, 2, episodes=20_000, seed=1).estimate(pol)
    without = mk.SampledKStep(mdp, 2, episodes=20_000, seed=1, baseline="none").estimate(pol)
    check(without, exact)
    assert np.median(np.concatenate([s.ravel() for s in with_b.grad_se])) < \
        0.8 * np.median(np.concatenate([s.ravel() for s in without.grad_se]))


# ---------------------------------------------------------------- training
def test_sampled_training_escapes_the_number_matching_trap_with_k2():
    mdp = number_matching.build_mdp(start="far")
    start = number_matching.trap_start(mdp)
    j_star = 6.477
    escaped = {}
    for k in (2,):
        count = 0
        for seed in range(8):
            res = mk.train(mk.SampledKStep(mdp, k, seed=seed), init=start, iters=300)
            greedy = mk.Policy.deterministic(mdp, res.policy.greedy_tables())
            count += mk.value(mdp, greedy) > j_star - 1e-3
            assert res.history_J_k_se is not None and res.history_J_k_exact is not None
            assert np.all(np.concatenate([t.ravel() for t in res.policy.theta]) >= 0.01 - 1e-12)
        escaped[k] = count
    assert escaped[2] >= 6, escaped
    # the exact k = 1 gradient stays in the trap from this start (SPEC §5)
    assert mk.train(mdp, k=1, init=start, iters=300).final_J < 0.5


def test_training_on_a_user_env_runs_with_both_rules():
    env = RelayEnv(max_cycles=20)
    for method in ("pgd", "mirror"):
        res = mk.train(mk.SampledKStep(env, 2, gamma=0.8, episodes=100, seed=0), method=method, iters=15, step=0.2)
        assert res.iterations == 15 and np.isnan(res.history_J).all() and res.history_J_k_exact is None
        assert res.history_J_k[-1] > res.history_J_k[0]


def test_floored_steps_are_the_projections_they_claim():
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.normal(size=4) * 3
        eps = 0.05
        x = pgd_step(np.full(4, 0.25), v, 1.0, floor=eps)
        assert np.all(x >= eps - 1e-12) and abs(x.sum() - 1) < 1e-12
        # optimality: no feasible point is closer (x minus the floor is the projection of a scaled simplex)
        for _ in range(20):
            y = eps + (1 - 4 * eps) * project_simplex(rng.normal(size=4) * 2)
            assert np.linalg.norm(x - (0.25 + v)) <= np.linalg.norm(y - (0.25 + v)) + 1e-12
        m = mirror_step(np.full(4, 0.25), v, 1.0, floor=eps)
        assert np.all(m >= eps - 1e-12) and abs(m.sum() - 1) < 1e-12
    with pytest.raises(ValueError, match="floor"):
        pgd_step(np.full(4, 0.25), np.zeros(4), 1.0, floor=0.25)


# ---------------------------------------------------------------- encoders and bad input
def test_encoders():
    enc = space_encoder(spaces.MultiDiscrete([3, 2]))
    assert enc.n == 6 and enc(np.array([2, 1])) == 5 and enc(np.array([0, 1])) == 1
    d = space_encoder(spaces.Discrete(3, start=-1))
    assert d.n == 3 and d(-1) == 0 and d(1) == 2
    box = BoxDiscretiser([-1.0, 0.0], [1.0, 1.0], [4, 2], dims=[2, 0])
    assert box.n == 8 and box(np.array([0.9, 0.0, -0.99])) == 1 and box(np.array([0.2, 0.0, 5.0])) == 6
    ix = ObservationIndexer(2, decimals=3)
    assert ix(np.array([0.1, 0.2])) == 0 and ix(np.array([0.1, 0.2001])) == 0 and ix(np.array([1.0, 0.0])) == 1
    with pytest.raises(ValueError, match="ObservationIndexer"):
        ix(np.array([3.0, 0.0]))
    with pytest.raises(ValueError, match="Discrete or MultiDiscrete"):
        space_encoder(spaces.Box(0, 1, (2,)))


def test_bad_input_is_named():
    mdp = mk.compile_env(two_state.parallel_env())
    env = RelayEnv()
    cases = [
        (lambda: mk.SampledKStep(env, 2), "gamma is required"),
        (lambda: mk.SampledKStep(mdp, 2, gamma=0.5), "gamma"),
        (lambda: mk.SampledKStep(env, 2, gamma=0.9, path="fast"), "path='fast'"),
        (lambda: mk.SampledKStep(two_state.parallel_env().unwrapped.model, 2, path="fast"), "batched"),
        (lambda: mk.SampledKStep(two_state.parallel_env(), 2, gamma=0.5), "gamma"),
        (lambda: mk.SampledKStep(env, 2, gamma=0.9, encoders=[int]), "encoders"),
        (lambda: mk.SampledKStep(mdp, 0), "k"),
        (lambda: mk.SampledKStep(mdp, 1, episodes=0), "episodes"),
        (lambda: mk.SampledKStep(mdp, 1, baseline="zero"), "baseline"),
        (lambda: mk.SampledKStep(mdp, 1, floor=-1.0), "floor"),
        (lambda: mk.SampledKStep("env", 1), "target"),
        (lambda: mk.SampledKStep(mdp, 1).estimate([np.ones((1, 2))]), "policy"),
        (lambda: mk.SampledKStep(mdp, 1).estimate(mk.Policy([np.array([[1.0, 0.0]] * 5)])), "theta|shape|observ"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
    # an encoder that maps outside 0..O-1 is named with the agent
    bad = mk.SampledKStep(mdp_parallel_env(mdp), 1, episodes=3, encoders=[_Const(5, 2)], seed=0)
    with pytest.raises(ValueError, match="agent 0"):
        bad.estimate(mk.Policy.uniform(bad))


class _Const:
    def __init__(self, value, n):
        self.value, self.n = value, n

    def __call__(self, obs):
        return self.value


def test_a_pettingzoo_classic_env_with_a_chosen_team_reward():
    rps_v2 = pytest.importorskip("pettingzoo.classic.rps_v2")
    env = rps_v2.parallel_env(max_cycles=8)
    # zero-sum: the mean of the agents' rewards is always 0; score player 0's reward instead
    est = mk.SampledKStep(env, 2, gamma=0.9, episodes=400, seed=0, team_reward=lambda rew: rew["player_0"])
    assert est.n_obs == (4, 4) and est.n_actions == (3, 3) and est.horizon == 8
    e = est.estimate(mk.Policy.uniform(est))  # against a uniform opponent every policy is worth 0
    assert e.J_k_se > 0 and abs(e.J_k) <= Z_MAX * e.J_k_se
    # player 0 always plays rock, player 1 always paper: player 0 loses every round
    rock_paper = mk.Policy.from_arrays(est, [np.tile([1.0, 0, 0], (4, 1)), np.tile([0, 1.0, 0], (4, 1))])
    assert est.estimate(rock_paper).J_k == pytest.approx(-sum(0.9 ** t for t in range(8)))
