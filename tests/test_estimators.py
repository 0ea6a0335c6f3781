"""The estimator layer: ExactKStep against the pre-re-layout kernel, the protocol, train with
estimators, immutable models, singular systems, lumping cost."""

import dataclasses
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import path_formula

import marl_kstep as mk
from marl_kstep.envs import aggregated_chain, grid_coordination, number_matching, two_state

REFERENCE = Path(__file__).parent / "data" / "kernel_reference_b5ba8ce.npz"


def reference_models(ref):
    """The models of the reference file, rebuilt the same way (see tests/data/README.md)."""
    models = {"two_state": two_state.build_mdp(),
              "nm": number_matching.build_mdp(n_agents=3, n_numbers=4, observation="match"),
              "nm_own": number_matching.build_mdp(n_agents=2, n_numbers=5, observation="own"),
              "grid_trap": grid_coordination.build_mdp(**grid_coordination.TRAP_CONFIG),
              "grid_slip": grid_coordination.build_mdp(slip=0.1, observation="position"),
              "chain": aggregated_chain.build_mdp(length=5)}
    for c in range(6):
        n_act = ref[f"rand{c}_n_act"].tolist()
        obs = [ref[f"rand{c}_obs{i}"] for i in range(len(n_act))]
        models[f"rand{c}"] = mk.JointMDP.from_dense(ref[f"rand{c}_P"], ref[f"rand{c}_R"], obs, n_act,
                                                    ref[f"rand{c}_mu"], float(ref[f"rand{c}_gamma"]),
                                                    n_obs=[int(o.max()) + 1 for o in obs])
    return models


def test_exact_estimator_equals_the_old_kernel():
    """68 cases (random models, every scenario, k = 1..3, random policies) computed by the kernel
    of commit b5ba8ce before the re-layout: ExactKStep, the wrappers and the unlumped walk agree
    to 1e-12 (relative to the size of the numbers)."""
    ref = np.load(REFERENCE)
    models = reference_models(ref)
    names = [str(n) for n in ref["names"]]
    assert len(names) == 68
    for tag in names:
        name, k, s = tag.rsplit("_", 2)
        mdp, k = models[name], int(k[1:])
        pol = mk.Policy.random(mdp, seed=100 * k + int(s[1:]))
        J_old = float(ref[f"{tag}_J"])
        g_old = [ref[f"{tag}_g{i}"] for i in range(mdp.n_agents)]
        scale = 1 + abs(J_old) + max(np.abs(g).max() for g in g_old)
        est = mk.ExactKStep(mdp, k)
        for J, g, V in (est.values_and_grad(pol), mk.values_and_grad(mdp, pol, k),
                        mk.ExactKStep(mdp, k, lump=False).values_and_grad(pol)):
            assert abs(J - J_old) <= 1e-12 * scale, tag
            np.testing.assert_allclose(V, ref[f"{tag}_V"], rtol=0, atol=1e-12 * scale)
            for a, b in zip(g, g_old, strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * scale)
        e = est.estimate(pol)
        assert e.exact and e.J_k == est.value(pol) and e.grad_se is None


@pytest.mark.parametrize("p,k,J,dL,dR", [
    (0.0, 1, 5.0, 50.0, 40.5), (0.0, 3, 5.0, 18.4501845018, 18.4151291513),
    (0.0, 4, 5.0, 14.5391102065, 15.6773771445), (0.05, 2, 4.8962500000, 25.7669078947, 24.0116447368),
    (0.5, 3, 5.9912361624, 20.4441371305, 24.4441371305)])
def test_exact_estimator_on_the_spec_table(p, k, J, dL, dR):
    mdp = two_state.build_mdp()
    est = mk.ExactKStep(mdp, k)
    e = est.estimate(mk.Policy.from_arrays(est, [np.array([[1 - p, p]])]))
    assert e.J_k == pytest.approx(J, abs=1e-9)
    np.testing.assert_allclose(e.grad[0][0], [dL, dR], atol=1e-9)


def test_estimator_protocol_and_policy_constructors():
    mdp = number_matching.build_mdp()
    est = mk.ExactKStep(mdp, 2)
    assert isinstance(est, mk.Estimator)
    assert (est.n_agents, est.n_obs, est.n_actions, est.k, est.mdp) == (2, (2, 2), (2, 2), 2, mdp)
    for pol in (mk.Policy.uniform(est), mk.Policy.random(est, seed=0), mk.Policy.deterministic(est, [[0, 1], [1, 0]])):
        pol.check_compatible(mdp)
    assert "ExactKStep(k=2" in repr(est)


class RowShifted:
    """A protocol-only estimator: the exact gradient plus a different constant in every row
    (what a row-centred sampled estimate differs by, SPEC §8)."""

    def __init__(self, mdp, k):
        self.inner = mk.ExactKStep(mdp, k)
        self.k, self.mdp = k, mdp
        self.n_agents, self.n_obs, self.n_actions = mdp.n_agents, mdp.n_obs, mdp.n_actions
        self.calls = 0

    def estimate(self, policy):
        self.calls += 1
        e = self.inner.estimate(policy)
        shifted = [g + np.arange(g.shape[0])[:, None] * 3.0 - 7.0 for g in e.grad]
        return mk.Estimate(J_k=e.J_k, grad=shifted, J_k_se=0.0, grad_se=[np.zeros_like(g) for g in e.grad])


@pytest.mark.parametrize("method", ["pgd", "mirror"])
def test_train_runs_with_any_estimator(method):
    """train(estimator) equals train(mdp, k=...); a row-shifted gradient gives the same iterates
    (both updates ignore a constant per row) and its standard errors reach the history."""
    mdp = number_matching.build_mdp(start="far")
    init = number_matching.trap_start(mdp)
    a = mk.train(mdp, k=2, method=method, step=0.05, iters=60, init=init)
    b = mk.train(mk.ExactKStep(mdp, 2), method=method, step=0.05, iters=60, init=init)
    shifted = RowShifted(mdp, 2)
    c = mk.train(shifted, method=method, step=0.05, iters=60, init=init)
    assert shifted.calls == c.iterations + 1 and c.iterations == a.iterations == b.iterations
    np.testing.assert_array_equal(a.history_J_k, b.history_J_k)
    np.testing.assert_array_equal(a.history_J, b.history_J)
    # equal up to rounding (the shift changes the last bits of each step, over 60 steps)
    np.testing.assert_allclose(c.history_J_k, a.history_J_k, rtol=1e-9)
    np.testing.assert_allclose(c.history_J, a.history_J, rtol=1e-9)
    assert a.history_J_k_se is None and np.array_equal(c.history_J_k_se, np.zeros(c.iterations + 1))
    with pytest.raises(ValueError, match="k=3 disagrees with the estimator's k=2"):
        mk.train(shifted, k=3)
    with pytest.raises(ValueError, match="train needs a JointMDP or an estimator"):
        mk.train("number_matching")


def test_replaced_models_never_see_stale_values():
    """dataclasses.replace and pickling go through the checks and share no derived data."""
    mdp = two_state.build_mdp()
    pol = mk.Policy.from_arrays(mdp, [np.array([[0.5, 0.5]])])
    assert mk.value(mdp, pol, 3) == pytest.approx(5.9912361624, abs=1e-9)
    half = dataclasses.replace(mdp, gamma=0.5)
    expected = path_formula(half, pol.theta, 3)[0]
    assert expected == pytest.approx(0.9464, abs=1e-4)
    assert mk.value(half, pol, 3) == pytest.approx(expected, rel=1e-12)
    assert mk.value(mdp, pol, 3) == pytest.approx(5.9912361624, abs=1e-9)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\)"):
        dataclasses.replace(mdp, gamma=1.5)
    with pytest.raises(ValueError, match=r"transition row P\[0, 0, :\] sums to 2.0"):
        dataclasses.replace(mdp, probs=mdp.probs * 2)
    blob = pickle.dumps(mdp)
    assert len(blob) < 2000  # the arrays and names only
    back = pickle.loads(blob)
    assert not back.rewards.flags.writeable and not back.probs.flags.writeable
    assert mk.value(back, pol, 3) == mk.value(mdp, pol, 3)


def test_from_sparse_leaves_caller_arrays_alone_and_takes_a_models_own_arrays():
    indptr = np.array([0, 5, 6, 7, 8])
    indices = np.array([1, 0, 1, 0, 1, 1, 0, 1])
    probs = np.array([0.25, 0.5, 0.25, 0.0, 0.0, 1.0, 1.0, 1.0])
    copies = indptr.copy(), indices.copy(), probs.copy()
    R = np.zeros((2, 2))
    mdp = mk.JointMDP.from_sparse(indptr, indices, probs, R, [np.zeros(2, int)], [2], [1, 0], 0.9)
    for a, b in zip((indptr, indices, probs), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mdp.to_dense()[0, 0], [0.5, 0.5])  # 0.25 + 0.25 merged, zeros dropped
    again = mk.JointMDP.from_sparse(mdp.indptr, mdp.indices, mdp.probs, mdp.rewards, mdp.obs, mdp.n_actions, mdp.mu,
                                    mdp.gamma)
    for f in ("indptr", "indices", "probs", "rewards", "mu"):
        np.testing.assert_array_equal(getattr(again, f), getattr(mdp, f))
    R[0, 0] = 7.0
    assert mdp.rewards[0, 0] == 0.0  # a copy was kept


def singular_model():
    """One state pair swapped by every action: with theta = [1/0.9, 0] (off the simplex),
    I - gamma P_pi = [[1, -1], [-1, 1]] is exactly singular."""
    P = np.array([[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    mdp = mk.JointMDP.from_dense(P, [[1.0, 0.0], [0.0, 1.0]], [np.zeros(2, int)], [2], [1, 0], 0.9)
    return mdp, mk.Policy.from_arrays(mdp, [np.array([[1 / 0.9, 0.0]])], check_simplex=False)


@pytest.mark.parametrize("route", [dict(), dict(fused_max_states=0),
                                   dict(fused_max_states=0, direct_solve_max_states=0)])
def test_a_singular_system_raises(route):
    mdp, pol = singular_model()
    with mk.configure(**route), pytest.raises(mk.SingularSystemError, match="I - M is singular or nearly singular"):
        mk.value_and_grad(mdp, pol, 1, lump=False)
    # nearly singular: a tiny step back towards the simplex
    near = mk.Policy.from_arrays(mdp, [np.array([[1 / 0.9 - 1e-14, 0.0]])], check_simplex=False)
    with mk.configure(**route), pytest.raises(ValueError, match="nearly singular"):
        mk.value(mdp, near, 1, lump=False)
    # well away from it the free-entry extension is computed as before
    ok = mk.Policy.from_arrays(mdp, [np.array([[0.7, 0.6]])], check_simplex=False)
    with mk.configure(**route):
        assert mk.value(mdp, ok, 1, lump=False) == pytest.approx(path_formula(mdp, ok.theta, 1)[0], rel=1e-12)


def test_settings_are_read_at_call_time(monkeypatch):
    mdp = number_matching.build_mdp()
    pol = mk.Policy.uniform(mdp)
    monkeypatch.setenv("MARL_KSTEP_MAX_PATH_STEPS", "10")
    with pytest.raises(ValueError, match="max_path_steps=10"):
        mk.value(mdp, pol, 2)
    monkeypatch.delenv("MARL_KSTEP_MAX_PATH_STEPS")
    mk.value(mdp, pol, 2)
    with mk.configure(max_path_steps=10), pytest.raises(ValueError, match="max_path_steps=10"):
        mk.value(mdp, pol, 2)
    assert mk.value(mdp, pol, 2, max_path_steps=10**6) == mk.value(mdp, pol, 2)
    with pytest.raises(ValueError, match="unknown setting 'max_paths'"):
        with mk.configure(max_paths=1):
            pass


def test_lumping_costs_at_most_a_few_unlumped_calls():
    """The aggregated chain does not lump, and refining it used to be quadratic (1.6 s against
    0.05 s unlumped at 4,000 states). Now lumping costs about what an unlumped call does: the
    ratio of best-of-5 times, measured side by side, stays under 10 (measured: about 0.1)."""
    import time

    chain = aggregated_chain.build_mdp(length=4000)
    pol = mk.Policy.uniform(chain)
    mk.value_and_grad(chain, pol, 1, lump=False)  # compile, warm the caches

    def best(fn):
        out = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return min(out)

    lumping = best(lambda: mk.lump(chain))  # (the estimators cache it per model: time it alone)
    unlumped = best(lambda: mk.ExactKStep(chain, 1, lump=False).value_and_grad(pol))
    est = mk.ExactKStep(chain, 1, lump=True)
    assert est.plan.lumping is not None and est.plan.lumping.is_trivial and est.plan.lumping.skipped is None
    assert lumping < 10 * unlumped + 0.01, (lumping, unlumped)


def test_skipped_lumping_warns_and_the_plan_says_why():
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=4)
    pol = mk.Policy.random(mdp, seed=1)
    with mk.configure(lump_max_transitions=10), pytest.warns(mk.LumpingSkippedWarning, match="lump_max_transitions"):
        est = mk.ExactKStep(mdp, 2)
    assert est.plan.block is None and "more than Settings.lump_max_transitions=10" in est.plan.lumping.skipped
    need = mk.model.lumping.refine_bytes(mdp)
    with mk.configure(max_model_bytes=need - 1), pytest.warns(
            mk.LumpingSkippedWarning, match=rf"refinement would take about {need / 2**30:.2f} GiB, more than"):
        assert mk.ExactKStep(mdp, 2).plan.block is None
    with mk.configure(max_model_bytes=need), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mk.ExactKStep(mdp, 2).plan.model.n_states == 16
    lumped = mk.ExactKStep(mdp, 2)
    assert lumped.plan.model.n_states == 16 and lumped.plan.lumping.skipped is None
    J0, g0 = est.value_and_grad(pol)
    J1, g1 = lumped.value_and_grad(pol)
    assert J1 == pytest.approx(J0, rel=1e-12)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
