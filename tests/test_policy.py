"""Policies, simplex projection and the two per-agent update rules."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import marl_kstep as mk
from marl_kstep.envs import number_matching, two_state


def brute_force_projection(v):
    """min ||x - v|| over the simplex by trying every support set (KKT on each face)."""
    best, best_d = None, np.inf
    A = v.size
    for r in range(1, A + 1):
        for S in itertools.combinations(range(A), r):
            S = list(S)
            x = np.zeros(A)
            x[S] = v[S] - (v[S].sum() - 1.0) / r
            if np.all(x >= -1e-15):
                d = np.sum((x - v) ** 2)
                if d < best_d:
                    best, best_d = x, d
    return best


rows = arrays(np.float64, st.integers(1, 6), elements=st.floats(-5, 5, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(v=rows)
def test_projection_is_on_simplex_idempotent_and_the_minimiser(v):
    x = mk.project_simplex(v)
    assert np.all(x >= 0)
    assert x.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(mk.project_simplex(x), x, atol=1e-12)
    np.testing.assert_allclose(x, brute_force_projection(v), atol=1e-10)


def test_projection_known_values():
    np.testing.assert_allclose(mk.project_simplex([0.5, 0.5 + 1.0]), [0.0, 1.0])
    np.testing.assert_allclose(mk.project_simplex([0.3, 0.3, 0.6]), np.array([0.7, 0.7, 1.6]) / 3)
    np.testing.assert_allclose(mk.project_simplex([1.0, 0.1, -2.0]), [0.95, 0.05, 0.0])
    np.testing.assert_allclose(mk.project_simplex([[2.0, 0.0], [0.25, 0.25]]), [[1, 0], [0.5, 0.5]])


def test_mirror_step_closed_form_and_no_overflow():
    th = np.array([[0.2, 0.3, 0.5]])
    g = np.array([[1.0, -2.0, 0.5]])
    expect = th * np.exp(0.7 * g)
    np.testing.assert_allclose(mk.mirror_step(th, g, 0.7), expect / expect.sum(), rtol=1e-14)
    big = mk.mirror_step(np.array([[0.5, 0.5]]), np.array([[1e6, 0.0]]), 1.0)
    np.testing.assert_array_equal(big, [[1.0, 0.0]])
    assert mk.mirror_step(np.array([[0.0, 1.0]]), np.array([[100.0, 0.0]]), 1.0)[0, 0] == 0.0


def test_pgd_step_moves_along_gradient_then_projects():
    out = mk.pgd_step(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]), 0.2)
    np.testing.assert_allclose(out, [[0.6, 0.4]])


@pytest.mark.parametrize("step", [mk.pgd_step, mk.mirror_step])
def test_a_step_that_overflows_names_eta_without_a_numpy_warning(step):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning before the error would be a second message
        with pytest.raises(ValueError, match=r"eta \* grad overflows: eta=1e\+308"):
            step(np.array([[0.5, 0.5]]), np.array([[10.0, 0.0]]), 1e308)


def test_constructors():
    mdp = number_matching.build_mdp()
    u = mk.Policy.uniform(mdp)
    assert all(np.allclose(t, 0.5) for t in u.theta)
    r1, r2 = mk.Policy.random(mdp, seed=7), mk.Policy.random(mdp, seed=7)
    assert r1.max_abs_diff(r2) == 0.0
    d = mk.Policy.deterministic(mdp, [[1, 0], [0, 0]])
    np.testing.assert_array_equal(d.theta[0], [[0, 1], [1, 0]])
    assert d.is_deterministic() and not u.is_deterministic()


def test_policy_validation_messages():
    mdp = two_state.build_mdp()
    with pytest.raises(ValueError, match=r"row theta\[0\]\[0\] sums to 0.9"):
        mk.Policy.from_arrays(mdp, [np.array([[0.4, 0.5]])])
    with pytest.raises(ValueError, match=r"theta\[0\]\[0, 0\] = -0.5 is negative"):
        mk.Policy.from_arrays(mdp, [np.array([[-0.5, 1.5]])])
    with pytest.raises(ValueError, match=r"theta\[0\] must have shape \(1, 2\); got \(2, 2\)"):
        mk.Policy.from_arrays(mdp, [np.full((2, 2), 0.5)])
    with pytest.raises(ValueError, match=r"theta\[0\]\[0, 1\] = nan is not finite"):
        mk.Policy.from_arrays(mdp, [np.array([[0.5, np.nan]])], check_simplex=False)
    with pytest.raises(ValueError, match=r"tables\[0\]\[0\] = 2 is not an action of agent 0"):
        mk.Policy.deterministic(mdp, [[2]])
    with pytest.raises(ValueError, match=r"arrays must hold one table per agent \(1\); got 2"):
        mk.Policy.from_arrays(mdp, [np.array([[0.5, 0.5]])] * 2)
