"""The saddle probe does not depend on floating-point asymmetry (issue 25).

From the exact uniform start of 2-agent number matching (far start), whether plain ascent "reached
J*" at k = 4 used to depend on the two agents' gradients differing by 2.2e-16; starts 1e-15 apart
stopped at a saddle or reached J* at random. Now an exact run is probed for a saddle when it is
stationary relative to the gradient's scale (``near_stationary``), before rounding has grown, so
the exact start and starts perturbed by 1e-15 stop identically, and with ``escape=True`` leave the
saddle along the same seeded probe and end at the same value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.optim.escape import SADDLE_RTOL, near_stationary

J_STAR = 6.477
SADDLE_J = {3: 0.8895, 4: 0.8994, 5: 0.9076}  # tests/test_symmetric_saddle.py: exactly symmetric ascent


@pytest.fixture(scope="module")
def mdp():
    return number_matching.build_mdp(start="far")


def perturbed(policy: mk.Policy, eps: float, seed: int) -> mk.Policy:
    """``policy`` moved by at most ``eps`` per entry, rows still summing to 1 (independently per agent)."""
    rng = np.random.default_rng(seed)
    theta = []
    for t in policy.theta:
        d = rng.uniform(-eps, eps, t.shape)
        theta.append(t + d - d.mean(axis=1, keepdims=True))
    return mk.Policy(theta)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_uniform_and_1e15_perturbed_starts_stop_alike(mdp, k):
    u = mk.Policy.uniform(mdp)
    starts = [u, perturbed(u, 1e-15, 1), perturbed(u, 1e-15, 2)]
    assert 0 < starts[1].max_abs_diff(u) < 2e-15
    plain = []
    for init in starts:
        with pytest.warns(mk.SaddleWarning):
            plain.append(mk.train(mdp, k=k, init=init, iters=2000))
    for r in plain:  # every one stops at the symmetric saddle of the exactly symmetric computation
        assert r.stationary == "saddle" and r.converged
        assert r.final_J == pytest.approx(SADDLE_J[k], abs=5e-5)
        assert r.iterations == plain[0].iterations
        assert abs(r.final_J - plain[0].final_J) < 1e-9
    escaped = [mk.train(mdp, k=k, init=init, iters=2000, escape=True) for init in starts]
    for r in escaped:  # the same seeded probe leaves the saddle in each, to the same end
        assert r.final_J == pytest.approx(J_STAR, abs=1e-9) and r.stationary == "vertex"
        assert [e["kind"] for e in r.escapes] == ["perturbation"]
        assert r.iterations == escaped[0].iterations
        np.testing.assert_allclose(r.history_J, escaped[0].history_J, atol=1e-6)


def test_a_start_really_off_the_saddle_is_not_stopped(mdp):
    """Policy.near_uniform (1e-3 off) leaves the saddle by ascent alone: never near-stationary there."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.SaddleWarning)
        for k in (3, 4):
            r = mk.train(mdp, k=k, iters=2000)
            assert r.final_J == pytest.approx(J_STAR, abs=1e-9) and r.stationary == "vertex"


def test_near_stationary_is_relative_to_the_gradient_scale():
    g = [np.array([[2.0, -1.0], [0.5, 0.5]])]
    eta = 0.05
    edge = SADDLE_RTOL * eta * 2.0
    assert near_stationary(edge, eta, g) and not near_stationary(edge * 1.01, eta, g)
    # rescaling rewards (the gradient) and the move together, or the step and the move, changes nothing
    g10 = [10.0 * x for x in g]
    assert near_stationary(10 * edge, eta, g10) and not near_stationary(10 * edge * 1.01, eta, g10)
    assert near_stationary(edge * 4, eta * 4, g) and not near_stationary(edge * 4 * 1.01, eta * 4, g)
    assert not near_stationary(0.0, eta, [np.zeros((2, 2))])  # no gradient at all: nothing to compare with


def test_a_flat_face_is_probed_once_in_the_loop(monkeypatch):
    """The probe runs at the first near-stationary iterate only (then once more when the run stops)."""
    import sys

    from marl_kstep.envs import grid_coordination

    train_module = sys.modules["marl_kstep.optim.train"]  # (the package exports the function train too)

    calls = []
    real = train_module.classify_stop
    monkeypatch.setattr(train_module, "classify_stop", lambda *a, **kw: calls.append(a[3]) or real(*a, **kw))
    mdp = mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG))
    res = mk.train(mdp, k=2, init=grid_coordination.near_stay_start(mdp), iters=2000)
    assert res.stationary == "stochastic" and res.stop_reason == "tol"
    assert len(calls) == 2 <= train_module.MAX_SADDLE_PROBES + 1  # in the loop, and after it
