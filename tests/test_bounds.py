"""Bounds and baselines (marl_kstep/bounds.py): the fast informed bound against an independent
dense loop, against brute force over memoryless policies and 2-node controllers, and against the
fully observable optimum; the blind baseline against brute force over constant joint actions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.bounds import best_blind, blind_values, fast_informed_bound, joint_observation
from marl_kstep.search import best_deterministic, mdp_optimum

DATA = mk.dpomdp_path("dectiger").parent  # the problems shipped in the package


def random_model(seed, N=4, A=(2, 2), O=(2, 2), gamma=0.9, mu=None):  # noqa: E741
    rng = np.random.default_rng(seed)
    J = int(np.prod(A))
    P = rng.dirichlet(np.full(N, 0.5), size=(N, J))
    R = rng.normal(size=(N, J))
    obs = [rng.integers(0, o, size=N) for o in O]
    for i, o in enumerate(O):  # every observation used
        obs[i][:o] = np.arange(o)
    mu = np.eye(N)[0] if mu is None else mu
    return mk.JointMDP.from_dense(P, R, obs, list(A), mu, gamma, n_obs=list(O))


def fib_dense(mdp, iters=2000):
    """SPEC-free reference: the FIB recursion written with explicit loops over (x, j, o')."""
    P, R, g = mdp.to_dense(), np.asarray(mdp.rewards), mdp.gamma
    N, J = R.shape
    code = [tuple(int(o[x]) for o in mdp.obs) for x in range(N)]
    groups = {}
    for x in range(N):
        groups.setdefault(code[x], []).append(x)
    Q = np.zeros((N, J))
    for _ in range(iters):
        new = R.copy()
        for x in range(N):
            for j in range(J):
                new[x, j] += g * sum(max(sum(P[x, j, y] * Q[y, jj] for y in ys) for jj in range(J))
                                     for ys in groups.values())
        Q = new
    first = {}
    for x in np.flatnonzero(mdp.mu > 0):
        first.setdefault(code[x], []).append(x)
    return sum(max(sum(mdp.mu[x] * Q[x, j] for x in xs) for j in range(J)) for xs in first.values())


@pytest.mark.parametrize("seed", range(3))
def test_fib_matches_dense_loop_and_stays_above(seed):
    mu = np.random.default_rng(seed + 100).dirichlet(np.ones(4))  # several first observations
    m = random_model(seed, mu=mu)
    F = fast_informed_bound(m, tol=1e-10)
    ref = fib_dense(m, iters=400)  # 0.9**400 ~ 5e-19
    assert F == pytest.approx(ref, abs=1e-8)
    assert F >= ref - 1e-12  # the residual term keeps it above the fixed point's value


@pytest.mark.parametrize("seed", range(3))
def test_fib_bounds_memoryless_and_two_node_controllers(seed):
    m = random_model(seed)
    F = fast_informed_bound(m)
    opt = mdp_optimum(m)
    best1, _ = best_deterministic(m)
    aug = mk.with_memory(m, 2)
    best2, _ = best_deterministic(aug, max_policies=10**6)
    assert best1 <= best2 + 1e-12  # memory never hurts (the lifted policy is a controller)
    assert best2 <= F + 1e-9
    assert F <= opt + 1e-9
    # a stochastic controller found by ascent is bounded too
    res = mk.train(mk.ExactKStep(aug, 2), iters=200, init=mk.Policy.random(aug, seed))
    assert res.final_J <= F + 1e-9


def test_fib_strictly_below_mdp_optimum_when_state_is_hidden():
    # dectiger: listening cannot be skipped by a controller that does not see the tiger
    m = mk.load_dpomdp(DATA / "dectiger.dpomdp", gamma=0.9)
    F, opt = fast_informed_bound(m), mdp_optimum(m)
    assert 13.448 <= F < opt - 100  # above the best published value, far below 200
    assert F == pytest.approx(84.2105, abs=1e-3)


def test_fib_equals_mdp_optimum_when_observations_identify_the_state():
    m0 = random_model(7, N=5, O=(2, 2))
    m = mk.JointMDP.from_dense(m0.to_dense(), m0.rewards, [np.arange(5), np.zeros(5, int)], [2, 2], m0.mu, 0.9,
                               n_obs=[5, 1])
    assert fast_informed_bound(m, tol=1e-11) == pytest.approx(mdp_optimum(m, tol=1e-11), abs=1e-9)
    # and on a .dpomdp whose joint observation is the state (Grid3x3corners: each agent sees its cell)
    g = mk.load_dpomdp(DATA / "Grid3x3corners.dpomdp.gz", gamma=0.9)
    assert fast_informed_bound(g) == pytest.approx(mdp_optimum(g), abs=1e-6)


def test_joint_observation_code():
    m = random_model(1, O=(2, 3))
    code = joint_observation(m)
    assert np.array_equal(code, m.obs[0] * 3 + m.obs[1])


@pytest.mark.parametrize("seed", range(3))
def test_blind_equals_brute_force(seed):
    m = random_model(seed, A=(2, 3))
    vals = blind_values(m)
    brute = []
    for a0, a1 in itertools.product(range(2), range(3)):
        pol = mk.Policy.deterministic(m, [np.full(m.n_obs[0], a0), np.full(m.n_obs[1], a1)])
        brute.append(mk.value(m, pol))
    assert np.allclose(vals, brute, atol=1e-10)
    v, acts = best_blind(m)
    assert v == pytest.approx(max(brute)) and brute[acts[0] * 3 + acts[1]] == pytest.approx(v)
    assert v <= best_deterministic(m)[0] + 1e-12


def test_bad_input_named():
    with pytest.raises(ValueError, match="mdp"):
        fast_informed_bound("x")
    with pytest.raises(ValueError, match="tol"):
        fast_informed_bound(random_model(0), tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        fast_informed_bound(random_model(0), max_iter=0)
    with pytest.raises(ValueError, match="max_iter=1 "):
        fast_informed_bound(random_model(0), max_iter=1)
    with pytest.raises(ValueError, match="mdp"):
        best_blind(None)
