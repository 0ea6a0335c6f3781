"""Training outcomes of SPEC §5 with both update rules.

Step sizes: projected ascent uses eta = 0.05 (SPEC); mirror ascent uses eta = 0.05 too but
needs more iterations (its steps shrink as rows approach a vertex), so it gets up to 2000
iterations and its end values are compared within 1e-6.
"""

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.envs import number_matching, two_state

METHODS = [("pgd", 0.05, 2000, 1e-9), ("mirror", 0.05, 2000, 1e-6)]


@pytest.mark.parametrize("method,eta,iters,tol", METHODS)
@pytest.mark.parametrize("k,expected", [(1, 5.0), (2, 5.0), (3, 9.0), (4, 9.0), (5, 9.0), (6, 9.0)])
def test_two_state_trap_outcomes(method, eta, iters, tol, k, expected):
    mdp = two_state.build_mdp(0.5, 0.9)
    init = mk.Policy.from_arrays(mdp, [np.array([[0.95, 0.05]])])
    res = mk.train(mdp, k=k, method=method, step=eta, iters=iters, init=init)
    assert res.converged
    assert res.final_J == pytest.approx(expected, abs=tol)
    assert res.history_J.shape == res.history_J_k.shape == (res.iterations + 1,)
    assert res.history_J[0] == pytest.approx(mk.value(mdp, init, 1), abs=1e-12)
    assert res.history_J_k[0] == pytest.approx(mk.value(mdp, init, k), abs=1e-12)


def number_matching_start(eps=0.0):
    mdp = number_matching.build_mdp(n_agents=2, n_numbers=6, move_cost=0.3, gamma=0.9,
                                    observation="match", start="far")
    rows = [np.tile([0.97, 0.03], (2, 1)), np.tile([0.97 + eps, 0.03 - eps], (2, 1))]
    return mdp, mk.Policy.from_arrays(mdp, rows)


@pytest.mark.parametrize("method,iters,tol", [("pgd", 200, 1e-9), ("mirror", 2000, 1e-6)])
@pytest.mark.parametrize("k,expected", [(1, 0.0), (2, 6.477)])
def test_number_matching_from_the_spec_start(method, iters, tol, k, expected):
    mdp, init = number_matching_start()
    res = mk.train(mdp, k=k, method=method, step=0.05, iters=iters, init=init)
    assert res.final_J == pytest.approx(expected, abs=tol)


def test_number_matching_symmetric_saddle_for_k3_pgd():
    """From the exactly symmetric SPEC start, pgd with k = 3 keeps both agents identical and
    stops at a symmetric KKT point (both mix on mismatch), not at 6.477 (see SPEC note)."""
    mdp, init = number_matching_start()
    with pytest.warns(mk.SaddleWarning):
        res = mk.train(mdp, k=3, method="pgd", step=0.05, iters=200, init=init)
    assert res.converged and res.stationary == "saddle"
    np.testing.assert_allclose(res.policy.theta[0], res.policy.theta[1], atol=1e-12)
    assert 0.5 < res.final_J < 1.0
    _, grad = mk.value_and_grad(mdp, res.policy, 3)
    mismatch = grad[0][0]
    assert mismatch[0] == pytest.approx(mismatch[1], abs=1e-6)  # stationary in the mixed row


@pytest.mark.parametrize("method,iters,tol", [("pgd", 200, 1e-9), ("mirror", 2000, 1e-6)])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_number_matching_escapes_with_symmetry_broken(method, iters, tol, k):
    mdp, init = number_matching_start(eps=1e-6)
    res = mk.train(mdp, k=k, method=method, step=0.05, iters=iters, init=init, tol=0.0)
    assert res.final_J == pytest.approx(6.477, abs=tol)


def test_number_matching_k1_trap_depends_on_the_start():
    """k = 1 stays at 0.0 from the SPEC start perturbed by 1e-6 (the symmetry-broken start
    on which k >= 2 escape), but a 1e-3 asymmetry already lets k = 1 reach 6.477: the
    ordinary-gradient trap of SPEC §5 is a property of near-symmetric starts."""
    for eps, expected in [(1e-6, 0.0), (1e-3, 6.477)]:
        mdp, init = number_matching_start(eps=eps)
        res = mk.train(mdp, k=1, method="pgd", step=0.05, iters=200, init=init)
        assert res.final_J == pytest.approx(expected, abs=1e-9)


def test_callback_and_stopping():
    mdp = two_state.build_mdp()
    seen = []

    def cb(it, pol, Jk, J):
        seen.append((it, Jk, J))
        return it < 3

    res = mk.train(mdp, k=3, callback=cb, iters=100)
    assert [s[0] for s in seen] == [0, 1, 2, 3] and res.iterations == 3
    np.testing.assert_allclose([s[1] for s in seen], res.history_J_k)
    capped = mk.train(mdp, k=1, iters=2, tol=0.0)
    assert capped.iterations == 2 and not capped.converged


def test_normalized_step_and_random_start_reproducible():
    mdp = number_matching.build_mdp()
    a = mk.train(mdp, k=2, iters=5, seed=3, normalize_step=True, step=0.5)
    b = mk.train(mdp, k=2, iters=5, seed=3, normalize_step=True, step=0.5)
    assert a.step == pytest.approx(0.05)
    np.testing.assert_array_equal(a.history_J, b.history_J)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(method="adam"), r"method must be one of \['mirror', 'pgd'\]; got method='adam'"),
        (dict(step=-1.0), r"step must be a positive number; got step=-1.0"),
        (dict(iters=-2), r"iters must be a non-negative integer; got iters=-2"),
        (dict(k=0), r"k must be >= 1; got k=0"),
    ],
)
def test_train_argument_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        mk.train(two_state.build_mdp(), **kw)
