"""The dedicated k = 2 passes (``_walk._k2_rows``) against independent computations: the plain
path recursion of SPEC §3 (values, also off the simplex), central finite differences
(gradients), the general walk's step count, and the hand-written loop of
``benchmarks/walk_limit.py`` (which must stay equal to the library for its timings to mean
anything)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import path_formula, random_thetas

import marl_kstep as mk
from marl_kstep.estimators._plan import kernel_args
from marl_kstep.estimators._walk import _walk, count_steps, walk_grad, walk_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def random_model(seed, n, N, n_obs=2, succ=2):
    rng = np.random.default_rng(seed)
    n_actions = tuple(int(x) for x in rng.integers(1, 4, n))
    J = int(np.prod(n_actions))
    P = np.zeros((N, J, N))
    for s in range(N):
        for j in range(J):
            P[s, j, rng.choice(N, min(succ, N), replace=False)] = rng.dirichlet(np.ones(min(succ, N)))
    obs = [rng.integers(0, n_obs, N) for _ in range(n)]
    return mk.JointMDP.from_dense(P, rng.normal(size=(N, J)), obs, n_actions, rng.dirichlet(np.ones(N)), 0.8,
                                  n_obs=(n_obs,) * n)


CASES = [(seed, n, N) for seed, (n, N) in enumerate(itertools.product((1, 2, 3, 4), (3, 6)))]


@pytest.mark.parametrize("seed,n,N", CASES)
def test_k2_values_equal_the_path_recursion(seed, n, N):
    mdp = random_model(seed, n, N)
    th = random_thetas(mdp, seed)
    free = [t * np.random.default_rng(seed).uniform(0.5, 1.5, size=t.shape) for t in th]  # off the simplex too
    for tables, on in ((th, True), (free, False)):
        pol = mk.Policy.from_arrays(mdp, tables, check_simplex=on)
        for lump in (True, False):
            V = mk.value_vector(mdp, pol, 2, lump=lump)
            np.testing.assert_allclose(V, path_formula(mdp, tables, 2)[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed,n,N", CASES[::2])
def test_k2_gradient_equals_finite_differences(seed, n, N):
    mdp = random_model(seed + 100, n, N)
    th = random_thetas(mdp, seed)
    with mk.configure(fused_max_states=0):  # the unfused route: walk_values / walk_grad themselves
        _, grad = mk.value_and_grad(mdp, mk.Policy.from_arrays(mdp, th), 2)
        h = 1e-6
        for i, t in enumerate(th):
            for o, a in itertools.product(range(t.shape[0]), range(t.shape[1])):
                plus, minus = [x.copy() for x in th], [x.copy() for x in th]
                plus[i][o, a] += h
                minus[i][o, a] -= h
                fp = mk.value(mdp, mk.Policy.from_arrays(mdp, plus, check_simplex=False), 2)
                fm = mk.value(mdp, mk.Policy.from_arrays(mdp, minus, check_simplex=False), 2)
                assert grad[i][o, a] == pytest.approx((fp - fm) / (2 * h), rel=1e-6, abs=1e-7), (i, o, a)


@pytest.mark.parametrize("seed,n,N", CASES)
def test_k2_passes_walk_exactly_the_counted_steps(seed, n, N):
    mdp = random_model(seed + 200, n, N)
    sm, toff, ones = kernel_args(mdp)
    p = mk.ExactKStep(mdp, 2, lump=False).plan
    e, ei = np.zeros(0), np.zeros(0, np.int64)
    W, m = np.zeros(N), np.zeros(p.m_idx.size)
    walked = _walk(0, N, 0, 2, sm, ones, toff, e, e, W, p.m_ptr, p.m_idx, m, e, 0)  # pass 1 (the k = 2 loops)
    grad = np.zeros(ones.size)
    walked2 = _walk(0, N, 1, 2, sm, ones, toff, np.ones(N), np.ones(N), e, ei, ei, e, grad, 0)  # pass 2
    counted = count_steps(2, sm, ones, toff, 10**12)  # the general walk, counting
    assert walked == walked2 == counted > 0


def test_the_benchmark_hand_loop_equals_the_library():
    from walk_limit import hand_grad, hand_values

    for seed in range(3):
        mdp = random_model(seed + 300, 2, 7, n_obs=3, succ=3)
        est = mk.ExactKStep(mdp, 2, lump=False)
        p = est.plan
        pol = mk.Policy.random(mdp, seed=seed)
        theta = pol.flat(mdp)
        th0, th1 = (np.ascontiguousarray(t, dtype=float) for t in pol.theta)
        A0, A1 = mdp.n_actions
        N = mdp.n_states
        W, m, W2, m2 = np.zeros(N), np.zeros(p.m_idx.size), np.zeros(N), np.zeros(p.m_idx.size)
        walk_values(0, N, 2, p.sm, theta, p.toff, p.m_ptr, p.m_idx, W, m)
        hand_values(mdp.gamma, mdp.obs_matrix, mdp.indptr, mdp.indices, mdp.probs, mdp.rewards, A0, A1, th0, th1,
                    p.m_ptr, p.m_idx, W2, m2)
        np.testing.assert_allclose(W, W2, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(m, m2, rtol=1e-13, atol=1e-14)
        Vk, nu = np.random.default_rng(seed).random(N), np.random.default_rng(seed + 1).random(N)
        g = np.zeros(theta.size)
        walk_grad(0, N, 2, p.sm, theta, p.toff, Vk, nu, g)
        g0, g1 = np.zeros_like(th0), np.zeros_like(th1)
        hand_grad(mdp.gamma, mdp.obs_matrix, mdp.indptr, mdp.indices, mdp.probs, mdp.rewards, A0, A1, th0, th1, Vk,
                  nu, g0, g1)
        np.testing.assert_allclose(g, np.concatenate([g0.ravel(), g1.ravel()]), rtol=1e-12, atol=1e-14)
