"""The k-step kernel against independent computations (SPEC §3 properties, §5 table)."""

import itertools

import numpy as np
import pytest
from helpers import ordinary, path_formula, random_thetas, small_mdps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.envs import number_matching, two_state

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(mdp=small_mdps(), seed=st.integers(0, 10**6))
def test_k1_is_ordinary_value_and_gradient(mdp, seed):
    th = random_thetas(mdp, seed)
    pol = mk.Policy.from_arrays(mdp, th)
    J, grad = mk.value_and_grad(mdp, pol, 1)
    J_ref, V_ref, g_ref = ordinary(mdp, th)
    np.testing.assert_allclose(mk.value_vector(mdp, pol, 1), V_ref, rtol=1e-10, atol=1e-10)
    assert J == pytest.approx(J_ref, rel=1e-10, abs=1e-10)
    for g, gr in zip(grad, g_ref, strict=True):
        np.testing.assert_allclose(g, gr, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(mdp=small_mdps(), k=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_deterministic_policies_have_Vk_equal_V(mdp, k, seed):
    rng = np.random.default_rng(seed)
    tables = [rng.integers(0, a, size=o) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)]
    pol = mk.Policy.deterministic(mdp, tables)
    _, V_ref, _ = ordinary(mdp, pol.theta)
    np.testing.assert_allclose(mk.value_vector(mdp, pol, k), V_ref, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(mdp=small_mdps(max_states=4), k=st.integers(1, 3), seed=st.integers(0, 10**6),
       on_simplex=st.booleans())
def test_value_equals_brute_force_path_recursion(mdp, k, seed, on_simplex):
    th = random_thetas(mdp, seed)
    if not on_simplex:  # the path-formula extension: entries are free variables
        th = [t * np.random.default_rng(seed).uniform(0.5, 1.5, size=t.shape) for t in th]
    pol = mk.Policy.from_arrays(mdp, th, check_simplex=on_simplex)
    J_ref, V_ref = path_formula(mdp, th, k)
    np.testing.assert_allclose(mk.value_vector(mdp, pol, k), V_ref, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(mdp=small_mdps(), k=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_gradient_matches_central_finite_differences(mdp, k, seed):
    th = random_thetas(mdp, seed)
    _, grad = mk.value_and_grad(mdp, mk.Policy.from_arrays(mdp, th), k)
    h = 1e-6
    for i, t in enumerate(th):
        for o, a in itertools.product(range(t.shape[0]), range(t.shape[1])):
            plus = [x.copy() for x in th]
            minus = [x.copy() for x in th]
            plus[i][o, a] += h
            minus[i][o, a] -= h
            fp = mk.value(mdp, mk.Policy.from_arrays(mdp, plus, check_simplex=False), k)
            fm = mk.value(mdp, mk.Policy.from_arrays(mdp, minus, check_simplex=False), k)
            fd = (fp - fm) / (2 * h)
            assert grad[i][o, a] == pytest.approx(fd, rel=1e-6, abs=1e-6), (i, o, a)


def test_drawing_up_front_gives_the_same_value_on_the_simplex():
    """On the simplex, drawing every slot at the window start (independent construction)
    gives the same J_k; its tangent derivatives equal the kernel's row differences."""
    mdp = number_matching.build_mdp(start="far")
    th = random_thetas(mdp, 3)
    P, R, g, N = mdp.to_dense(), mdp.rewards, mdp.gamma, mdp.n_states
    slots = [(i, o) for i in range(mdp.n_agents) for o in range(mdp.n_obs[i])]

    def up_front(thetas, k):
        W, M = np.zeros(N), np.zeros((N, N))
        for acts in itertools.product(*[range(mdp.n_actions[i]) for i, _ in slots]):
            table = dict(zip(slots, acts, strict=True))
            w = np.prod([thetas[i][o, a] for (i, o), a in table.items()])
            ja = [mdp.joint_index([table[(i, mdp.obs[i][s])] for i in range(mdp.n_agents)])
                  for s in range(N)]
            Pd, rd = P[np.arange(N), ja], R[np.arange(N), ja]
            D = np.eye(N)
            for t in range(k):
                W += w * g**t * D @ rd
                D = D @ Pd
            M += w * g**k * D
        return mdp.mu @ np.linalg.solve(np.eye(N) - M, W)

    for k in (1, 2, 3):
        J, grad = mk.value_and_grad(mdp, mk.Policy.from_arrays(mdp, th), k)
        assert J == pytest.approx(up_front(th, k), abs=1e-10)
        h = 1e-6
        for i, o in slots:
            plus = [t.copy() for t in th]
            minus = [t.copy() for t in th]
            plus[i][o] += [h, -h]
            minus[i][o] += [-h, h]
            fd = (up_front(plus, k) - up_front(minus, k)) / (2 * h)
            assert grad[i][o, 0] - grad[i][o, 1] == pytest.approx(fd, abs=1e-6)


SPEC_TABLE = [
    (0.0, 1, 5.0, 50.0, 40.5),
    (0.0, 3, 5.0, 18.4501845018, 18.4151291513),
    (0.0, 4, 5.0, 14.5391102065, 15.6773771445),
    (0.05, 2, 4.8962500000, 25.7669078947, 24.0116447368),
    (0.5, 3, 5.9912361624, 20.4441371305, 24.4441371305),
]


@pytest.mark.parametrize("p,k,J,dL,dR", SPEC_TABLE)
def test_spec_section5_table(p, k, J, dL, dR):
    mdp = two_state.build_mdp(0.5, 0.9)
    val, grad = mk.value_and_grad(mdp, mk.Policy.from_arrays(mdp, [np.array([[1 - p, p]])]), k)
    assert val == pytest.approx(J, abs=1e-8)
    assert grad[0][0, 0] == pytest.approx(dL, abs=1e-8)
    assert grad[0][0, 1] == pytest.approx(dR, abs=1e-8)


def test_two_state_closed_form_Jk_at_p_half_k1():
    # k = 1, p = 1/2: V0 = 0.25 + 0.9 (V0 + V1)/2, V1 = 0.5 + 0.9 (V0 + V1)/2 -> closed form
    mdp = two_state.build_mdp(0.5, 0.9)
    pol = mk.Policy.uniform(mdp)
    A = np.array([[1 - 0.45, -0.45], [-0.45, 1 - 0.45]])
    V = np.linalg.solve(A, [0.25, 0.5])
    np.testing.assert_allclose(mk.value_vector(mdp, pol, 1), V, rtol=1e-12)


def test_zero_probability_entries_have_exact_partials():
    """At p = 0 the R-branch has zero weight but its partial (40.5 for k = 1) is exact."""
    mdp = two_state.build_mdp(0.5, 0.9)
    pol = mk.Policy.deterministic(mdp, [[0]])
    _, grad = mk.value_and_grad(mdp, pol, 1)
    assert grad[0][0, 1] == 40.5 or grad[0][0, 1] == pytest.approx(40.5, abs=1e-12)
    _, g2 = mk.value_and_grad(mdp, pol, 2)
    # k = 2 at always-L: dJ/dR = 10 * (0 + 0.9 * (1 + 0.9 V(s1)) ... ) checked by FD
    h = 1e-7
    plus = mk.Policy.from_arrays(mdp, [np.array([[1.0, h]])], check_simplex=False)
    fd = (mk.value(mdp, plus, 2) - mk.value(mdp, pol, 2)) / h
    assert g2[0][0, 1] == pytest.approx(fd, rel=1e-5)


def test_budget_refusal_names_the_estimate_and_the_knob():
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=4)
    pol = mk.Policy.uniform(mdp)
    with pytest.raises(ValueError, match=r"max_path_steps=10.*raise the budget"):
        mk.value_and_grad(mdp, pol, 4, max_path_steps=10)
    steps = mk.estimate_path_steps(mdp, 2)
    # 64 states, 8 joint actions, deterministic moves, memo-free bound: 64 * (8 + 64) = 4608
    assert steps == 64 * (8 + 8 * 8)


def test_exact_count_is_used_when_the_bound_is_over_budget():
    # fully aggregated: after the first step every slot is drawn, so k steps cost 2 + 2*(k-1)
    mdp = two_state.build_mdp()
    # memo-free bound for k = 5 is 2 * (2 + 4 + 8 + 16 + 32) = 124 steps
    assert mk.estimate_path_steps(mdp, 5) == 124
    exact = mk.estimate_path_steps(mdp, 6, max_path_steps=30)
    assert exact == 2 * 2 * 6  # two start states x two first choices x six steps
    mk.value(mdp, mk.Policy.uniform(mdp), 6, max_path_steps=30)


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True])
def test_bad_k(k):
    mdp = two_state.build_mdp()
    with pytest.raises(ValueError, match="k must be"):
        mk.value(mdp, mk.Policy.uniform(mdp), k)


def test_policy_that_does_not_fit_the_mdp():
    mdp = two_state.build_mdp()
    other = number_matching.build_mdp()
    with pytest.raises(ValueError, match="policy has 2 agents; the MDP has 1"):
        mk.value(mdp, mk.Policy.uniform(other))
    with pytest.raises(ValueError, match="policy must be a marl_kstep.Policy"):
        mk.value(mdp, [np.array([[0.5, 0.5]])])


def test_iterative_solver_path_agrees_with_lu():
    """Larger systems use the compiled BiCGSTAB (both systems side by side); it must agree
    with sparse LU, and a system that misses the tolerance falls back to LU."""
    from marl_kstep.envs import grid_coordination

    mdp = grid_coordination.build_mdp(slip=0.1, observation="position")
    assert mdp.n_states > mk.Settings().fused_max_states
    pol = mk.Policy.random(mdp, seed=2)
    for k in (1, 2):
        with mk.configure(direct_solve_max_states=10**6):
            J_lu, g_lu, V_lu = mk.values_and_grad(mdp, pol, k)
        with mk.configure(direct_solve_max_states=0):
            J_it, g_it, V_it = mk.values_and_grad(mdp, pol, k)
        # residual 1e-13 and cond(I - M) <= (1 + gamma^k) / (1 - gamma^k): errors near 1e-12
        assert J_it == pytest.approx(J_lu, rel=1e-11)
        np.testing.assert_allclose(V_it, V_lu, rtol=1e-11, atol=1e-12 * np.abs(V_lu).max())
        for a, b in zip(g_it, g_lu, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
        with mk.configure(direct_solve_max_states=0, iter_rtol=0.0):  # unreachable: every system falls back
            J_fb, g_fb, V_fb = mk.values_and_grad(mdp, pol, k)
        assert J_fb == pytest.approx(J_lu, rel=1e-13)
        for a, b in zip(g_fb, g_lu, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_compiled_bicgstab_against_spsolve(seed):
    """``_bicgstab_pair`` on random substochastic ``M`` (rows sum to gamma): both systems to a
    true relative residual of 1e-13, against scipy's sparse direct solve."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    from marl_kstep.estimators._linalg import _bicgstab_pair

    rng = np.random.default_rng(seed)
    N = 300
    M = sparse.random(N, N, density=0.03, random_state=rng, format="csr") + sparse.identity(N) * 0.01
    M = sparse.diags(0.95 / np.asarray(M.sum(axis=1)).ravel()) @ M
    M = M.tocsr()
    M.sort_indices()
    b, c = rng.normal(size=N), rng.dirichlet(np.ones(N))
    out, ok = _bicgstab_pair(M.indptr.astype(np.int64), M.indices.astype(np.int64), M.data, b, c, True, 1e-13, 3000)
    assert ok.all()
    A = (sparse.identity(N) - M).tocsc()
    assert np.linalg.norm(A @ out[0] - b) <= 1e-13 * np.linalg.norm(b)
    assert np.linalg.norm(A.T @ out[1] - c) <= 1e-13 * np.linalg.norm(c)
    np.testing.assert_allclose(out[0], spsolve(A, b), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(out[1], spsolve(A.T.tocsc(), c), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_parallel_and_serial_enumeration_agree(k):
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=3, observation="own")
    pol = mk.Policy.random(mdp, seed=k)
    with mk.configure(serial_max_path_steps=10**12):
        est_s = mk.ExactKStep(mdp, k)
        J_s, g_s = est_s.value_and_grad(pol)
    with mk.configure(serial_max_path_steps=0):
        est_p = mk.ExactKStep(mdp, k)
        J_p, g_p = est_p.value_and_grad(pol)
    assert est_s.plan.serial and not est_p.plan.serial
    assert J_p == pytest.approx(J_s, rel=1e-13, abs=1e-13)
    for a, b in zip(g_p, g_s, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_fused_small_path_agrees_with_the_general_route(k):
    """Problems up to FUSED_MAX_STATES run in one compiled call (own LU); the general route
    (scipy LU, separate passes) must give the same numbers, on and off the simplex."""
    from marl_kstep.envs import grid_coordination

    mdp = grid_coordination.build_mdp(**grid_coordination.TRAP_CONFIG)
    assert mdp.n_states <= mk.Settings().fused_max_states
    rng = np.random.default_rng(k)
    for pol in (mk.Policy.random(mdp, seed=k),
                mk.Policy.from_arrays(mdp, [rng.uniform(-1, 2, size=(o, a)) for o, a in
                                            zip(mdp.n_obs, mdp.n_actions, strict=True)], check_simplex=False)):
        J1, g1, V1 = mk.values_and_grad(mdp, pol, k)
        assert mk.ExactKStep(mdp, k).plan.fused
        with mk.configure(fused_max_states=0):
            J0, g0, V0 = mk.values_and_grad(mdp, pol, k)
            assert not mk.ExactKStep(mdp, k).plan.fused
        assert J1 == pytest.approx(J0, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(V1, V0, rtol=1e-11, atol=1e-11 * (1 + np.abs(V0).max()))
        for a, b in zip(g1, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * (1 + np.abs(b).max()))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10**6), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_compiled_lu_solves_both_systems(n, seed, scale):
    """The compiled LU (partial pivoting) against numpy.linalg.solve, for A x = b and A^T y = c,
    on general matrices (zero diagonals force row swaps)."""
    from marl_kstep.estimators._linalg import _lu_inplace, _lu_solve

    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n)) * scale
    A[np.diag_indices(n)] *= rng.integers(0, 2, size=n)  # some zero pivots
    if abs(np.linalg.det(A / scale)) < 1e-6:
        A += np.eye(n) * scale * 3
    b, c = rng.normal(size=n), rng.normal(size=n)
    LU, piv = A.copy(), np.empty(n, np.int64)
    assert _lu_inplace(LU, piv)
    cond = np.linalg.cond(A)
    np.testing.assert_allclose(_lu_solve(LU, piv, b, False), np.linalg.solve(A, b), rtol=0,
                               atol=1e-13 * cond * (1 + np.abs(np.linalg.solve(A, b)).max()))
    np.testing.assert_allclose(_lu_solve(LU, piv, c, True), np.linalg.solve(A.T, c), rtol=0,
                               atol=1e-13 * cond * (1 + np.abs(np.linalg.solve(A.T, c)).max()))


def test_compiled_lu_reports_a_singular_matrix():
    from marl_kstep.estimators._linalg import _lu_inplace

    A = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert not _lu_inplace(A, np.empty(2, np.int64))


def test_bad_policy_entries_are_named_by_the_fast_check():
    mdp = number_matching.build_mdp()
    pol = mk.Policy.uniform(mdp)
    pol.theta[1][0, 1] = np.nan
    with pytest.raises(ValueError, match=r"theta\[1\]\[0, 1\] = nan is not finite"):
        mk.value_and_grad(mdp, pol, 2)
    pol = mk.Policy.uniform(mdp)
    pol.theta[0][1] = [0.7, 0.7]
    with pytest.raises(ValueError, match=r"row theta\[0\]\[1\] sums to 1.4"):
        mk.value(mdp, pol, 1)
    pol = mk.Policy.uniform(mdp)
    pol.theta[0][0] = [1.5, -0.5]
    with pytest.raises(ValueError, match=r"theta\[0\]\[0, 1\] = -0.5 is negative"):
        mk.value(mdp, pol, 1)
