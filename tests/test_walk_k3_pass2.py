"""The dedicated k = 3 pass 2 (``_walk._k3_grad``) against independent computations: the
general walk's pass 2 (the same gradient to 1e-12, also off the simplex, with zero entries
and zero weights), central finite differences of J_3 (the fused and the unfused route), the
split over start states that the parallel walk uses, and the hand-written k = 3 loops of
``benchmarks/walk_limit.py`` (which must equal the library for its timings to mean anything)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from test_walk_special import random_model

import marl_kstep as mk
from marl_kstep.estimators._walk import (
    _KIND_GENERAL,
    _KIND_K3,
    _KIND_TAG,
    _MODE_GRAD,
    _walk_kind,
    count_steps,
    walk_grad,
    walk_grad_parallel,
    walk_kind,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

CASES = [(seed, n, N) for seed, (n, N) in enumerate(itertools.product((1, 2, 3, 4), (3, 6)))]


def off_simplex(mdp, seed, zeros=True):
    """Flat parameters with rows not summing to one (and, when ``zeros``, a few exact zeros)."""
    rng = np.random.default_rng(seed)
    theta = mk.Policy.random(mdp, seed=seed).flat(mdp)
    theta = theta * rng.uniform(0.3, 1.7, theta.size)
    if zeros:
        theta[rng.random(theta.size) < 0.15] = 0.0
    return theta


def grad_of(kind, mdp, p, theta, Vk, nu):
    e, ei = np.zeros(0), np.zeros(0, np.int64)
    g = np.zeros(theta.size)
    steps = _walk_kind(kind, 0, mdp.n_states, _MODE_GRAD, 3, p.sm, theta, p.toff, Vk, nu, e, ei, ei, e, g, 0)
    return g, steps


@pytest.mark.parametrize("seed,n,N", CASES)
def test_k3_pass2_equals_the_general_walk(seed, n, N):
    mdp = random_model(seed + 800, n, N, n_obs=3, succ=3)
    p = mk.ExactKStep(mdp, 3, lump=False).plan
    rng = np.random.default_rng(seed)
    Vk = rng.normal(size=N)
    nu = rng.random(N)
    nu[0] = 0.0  # a start state that the pass skips
    for theta in (mk.Policy.random(mdp, seed=seed).flat(mdp), off_simplex(mdp, seed)):
        g3, walked = grad_of(_KIND_TAG[_KIND_K3], mdp, p, theta, Vk, nu)
        gg, walked_g = grad_of(_KIND_TAG[_KIND_GENERAL], mdp, p, theta, Vk, nu)
        scale = np.max(np.abs(gg))
        assert scale > 0
        np.testing.assert_allclose(g3, gg, rtol=1e-12, atol=1e-12 * scale)
        assert walked == walked_g
    ones = np.ones(p.toff[-1] + mdp.n_obs[-1] * mdp.n_actions[-1])
    _, walked = grad_of(_KIND_TAG[_KIND_K3], mdp, p, ones, np.ones(N), np.ones(N))
    assert walked == count_steps(3, p.sm, ones, p.toff, 10**12) > 0  # every path step, once


def test_k3_pass2_is_the_route_of_k3_and_adds_over_chunks():
    assert walk_kind(3, _MODE_GRAD) is _KIND_TAG[_KIND_K3]
    assert walk_kind(4, _MODE_GRAD) is _KIND_TAG[_KIND_GENERAL]
    mdp = random_model(850, 3, 9, n_obs=3, succ=3)
    p = mk.ExactKStep(mdp, 3, lump=False).plan
    theta = off_simplex(mdp, 1)
    rng = np.random.default_rng(1)
    Vk, nu = rng.normal(size=9), rng.random(9)
    whole = np.zeros(theta.size)
    walk_grad(0, 9, 3, p.sm, theta, p.toff, Vk, nu, whole)
    parts = np.zeros(theta.size)
    for lo, hi in ((0, 2), (2, 7), (7, 9)):  # the rows of the parallel chunks, added up
        walk_grad(lo, hi, 3, p.sm, theta, p.toff, Vk, nu, parts)
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(walk_grad_parallel(3, 3, p.sm, theta, p.toff, Vk, nu, theta.size), whole,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed,n,N,fused", [(0, 1, 5, True), (1, 2, 5, False), (2, 3, 4, True), (3, 4, 3, False)])
def test_k3_gradient_off_the_simplex_equals_finite_differences(seed, n, N, fused):
    """d J_3 / d theta against central differences of J_3 (a polynomial of degree <= 3 in each
    entry through W and M, so the difference is exact up to rounding and the solve)."""
    mdp = random_model(seed + 900, n, N, n_obs=3, succ=3)
    est_theta = off_simplex(mdp, seed, zeros=False)

    def tables(flat):
        out, o = [], 0
        for n_o, n_a in zip(mdp.n_obs, mdp.n_actions, strict=True):
            out.append(flat[o:o + n_o * n_a].reshape(n_o, n_a).copy())
            o += n_o * n_a
        return mk.Policy.from_arrays(mdp, out, check_simplex=False)

    with mk.configure(fused_max_states=64 if fused else 0):
        _, grad = mk.value_and_grad(mdp, tables(est_theta), 3, lump=False)
        flat_grad = np.concatenate([g.ravel() for g in grad])
        h = 1e-6
        for q in range(est_theta.size):
            plus, minus = est_theta.copy(), est_theta.copy()
            plus[q] += h
            minus[q] -= h
            fd = (mk.value(mdp, tables(plus), 3, lump=False) - mk.value(mdp, tables(minus), 3, lump=False)) / (2 * h)
            assert flat_grad[q] == pytest.approx(fd, rel=1e-6, abs=1e-7), q


def equal_actions_model(seed, n, N, A, n_obs=3, succ=3):
    """A random model whose ``n`` agents all have ``A`` actions (the hand loops' shape)."""
    rng = np.random.default_rng(seed)
    J = A**n
    P = np.zeros((N, J, N))
    for s in range(N):
        for j in range(J):
            P[s, j, rng.choice(N, succ, replace=False)] = rng.dirichlet(np.ones(succ))
    obs = [rng.integers(0, n_obs, N) for _ in range(n)]
    return mk.JointMDP.from_dense(P, rng.normal(size=(N, J)), obs, (A,) * n, rng.dirichlet(np.ones(N)), 0.8,
                                  n_obs=(n_obs,) * n)


@pytest.mark.parametrize("n", [2, 3])
def test_the_benchmark_k3_hand_loops_equal_the_library(n):
    from walk_limit import hand_grad3_n2, hand_grad3_n3

    for seed in range(2):
        mdp = equal_actions_model(seed + 950, n, 7, A=2 if n == 3 else 3)  # the hand loops' shapes
        p = mk.ExactKStep(mdp, 3, lump=False).plan
        pol = mk.Policy.random(mdp, seed=seed)
        theta = pol.flat(mdp)
        ths = [np.ascontiguousarray(t, dtype=float) for t in pol.theta]
        N = mdp.n_states
        rng = np.random.default_rng(seed)
        Vk, nu = rng.normal(size=N), rng.random(N)
        g = np.zeros(theta.size)
        walk_grad(0, N, 3, p.sm, theta, p.toff, Vk, nu, g)
        gs = [np.zeros_like(t) for t in ths]
        args = (mdp.gamma, mdp.obs_matrix, mdp.indptr, mdp.indices, mdp.probs, mdp.rewards)
        if n == 2:
            hand_grad3_n2(*args, *mdp.n_actions, *ths, Vk, nu, *gs)
        else:
            hand_grad3_n3(*args, mdp.n_actions[0], *ths, Vk, nu, *gs)
        hand = np.concatenate([x.ravel() for x in gs])
        np.testing.assert_allclose(g, hand, rtol=1e-12, atol=1e-12 * np.max(np.abs(hand)))
