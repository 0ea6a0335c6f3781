"""The dedicated k = 3 pass 1 (``_walk._k3_values``) against the general walk (the same W, M
and path steps to 1e-12), the path recursion of SPEC §3, and the k = 3 gradient (pass 2:
``_walk._k3_grad``, also tested in test_walk_k3_pass2.py) against finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import path_formula, random_thetas
from test_walk_special import random_model

import marl_kstep as mk
from marl_kstep.estimators._walk import (
    _KIND_GENERAL,
    _KIND_K3,
    _KIND_TAG,
    _MODE_GRAD,
    _MODE_VALUES,
    _walk_kind,
    count_steps,
    walk_kind,
)

CASES = [(seed, n, N) for seed, (n, N) in enumerate(itertools.product((1, 2, 3, 4), (3, 6)))]


def both_walks(mdp, theta):
    p = mk.ExactKStep(mdp, 3, lump=False).plan
    N = mdp.n_states
    e = np.zeros(0)
    out = []
    for kind in (_KIND_TAG[_KIND_K3], _KIND_TAG[_KIND_GENERAL]):
        W, m = np.zeros(N), np.zeros(p.m_idx.size)
        steps = _walk_kind(kind, 0, N, _MODE_VALUES, 3, p.sm, theta, p.toff, e, e, W, p.m_ptr, p.m_idx, m, e, 0)
        out.append((W, m, steps))
    return out, int(count_steps(3, p.sm, np.ones(theta.size), p.toff, 10**12))


@pytest.mark.parametrize("seed,n,N", CASES)
def test_k3_pass1_equals_the_general_walk(seed, n, N):
    mdp = random_model(seed + 500, n, N, n_obs=3, succ=3)
    rng = np.random.default_rng(seed)
    theta = mk.Policy.random(mdp, seed=seed).flat(mdp) * rng.uniform(0.5, 1.5, size=1)  # off the simplex too
    ((W3, m3, a3), (Wg, mg, ag)), counted = both_walks(mdp, theta)
    np.testing.assert_allclose(W3, Wg, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(m3, mg, rtol=1e-12, atol=1e-13)
    assert a3 == ag == counted > 0


def test_k3_is_the_route_of_k3():
    assert walk_kind(3) is _KIND_TAG[_KIND_K3] and walk_kind(3, _MODE_GRAD) is _KIND_TAG[_KIND_K3]


@pytest.mark.parametrize("seed,n,N", CASES[::3])
def test_k3_values_equal_the_path_recursion(seed, n, N):
    mdp = random_model(seed + 600, n, N)
    th = random_thetas(mdp, seed)
    for lump in (True, False):
        V = mk.value_vector(mdp, mk.Policy.from_arrays(mdp, th), 3, lump=lump)
        np.testing.assert_allclose(V, path_formula(mdp, th, 3)[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed,n,N", CASES[1::4])
def test_k3_gradient_equals_finite_differences(seed, n, N):
    mdp = random_model(seed + 700, n, N)
    th = random_thetas(mdp, seed)
    with mk.configure(fused_max_states=0):
        _, grad = mk.value_and_grad(mdp, mk.Policy.from_arrays(mdp, th), 3)
        h = 1e-6
        for i, t in enumerate(th):
            for o, a in itertools.product(range(t.shape[0]), range(t.shape[1])):
                plus, minus = [x.copy() for x in th], [x.copy() for x in th]
                plus[i][o, a] += h
                minus[i][o, a] -= h
                fp = mk.value(mdp, mk.Policy.from_arrays(mdp, plus, check_simplex=False), 3)
                fm = mk.value(mdp, mk.Policy.from_arrays(mdp, minus, check_simplex=False), 3)
                assert grad[i][o, a] == pytest.approx((fp - fm) / (2 * h), rel=1e-6, abs=1e-7), (i, o, a)
