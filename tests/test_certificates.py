"""Certificates (SPEC §9) against brute force over every deterministic policy."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.certificates import certify
from marl_kstep.envs import number_matching


def all_tables(mdp):
    return [list(t) for t in itertools.product(*[itertools.product(range(a), repeat=o)
                                                 for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])]


@pytest.mark.parametrize("observation", ["match", "own"])
def test_certify_agrees_with_brute_force_on_two_agent_number_matching(observation):
    mdp = number_matching.build_mdp(n_agents=2, n_numbers=3 if observation == "own" else 6, start="far",
                                    observation=observation)
    tables = all_tables(mdp)
    value = {tuple(map(tuple, t)): mk.value(mdp, mk.Policy.deterministic(mdp, t)) for t in tables}
    for t in tables[:: max(1, len(tables) // 40)]:
        J0 = value[tuple(map(tuple, t))]
        singles, pairs = [], []
        for i in range(2):
            for o in range(mdp.n_obs[i]):
                for a in range(mdp.n_actions[i]):
                    if a != t[i][o]:
                        u = [list(x) for x in t]
                        u[i][o] = a
                        singles.append(value[tuple(map(tuple, u))])
        for (i1, o1), (i2, o2) in itertools.combinations([(i, o) for i in range(2) for o in range(mdp.n_obs[i])], 2):
            for a1 in range(mdp.n_actions[i1]):
                for a2 in range(mdp.n_actions[i2]):
                    if a1 != t[i1][o1] and a2 != t[i2][o2]:
                        u = [list(x) for x in t]
                        u[i1][o1], u[i2][o2] = a1, a2
                        pairs.append(value[tuple(map(tuple, u))])
        cert = certify(mdp, mk.Policy.deterministic(mdp, t), order=2, tol=1e-9)
        assert cert.J == pytest.approx(J0, abs=1e-10) and not cert.rounded
        assert cert.evaluated == len(singles) + len(pairs)
        assert cert.one_opt == (max(singles) <= J0 + 1e-9 * max(1, abs(J0)))
        assert cert.two_opt == (max(singles + pairs) <= J0 + 1e-9 * max(1, abs(J0)))
        gains = sorted((v for v in singles + pairs if v > J0 + 1e-9 * max(1, abs(J0))), reverse=True)
        np.testing.assert_allclose([d.J for d in cert.improving], gains, atol=1e-10)


def test_rounding_is_said_and_the_budget_refuses_before_work():
    mdp = number_matching.build_mdp(start="far")
    cert = certify(mdp, number_matching.trap_start(mdp), order=1)
    assert cert.rounded and cert.order == 1 and cert.two_opt is None
    assert cert.evaluated == sum(o * (a - 1) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True))
    with pytest.raises(ValueError, match="max_deviations"):
        certify(mdp, number_matching.trap_start(mdp), order=2, max_deviations=3)
    with pytest.raises(ValueError, match="order"):
        certify(mdp, number_matching.trap_start(mdp), order=0)
    with pytest.raises(ValueError, match="max_deviations"):  # order 40 on 4 slots: all 15 changes, counted first
        certify(mdp, number_matching.trap_start(mdp), order=40, max_deviations=14)
    assert certify(mdp, number_matching.trap_start(mdp), order=40).evaluated == 15


# ------------------------------------------------------------------ visitation
def test_slot_visitation_against_a_dense_inverse_and_the_value():
    from marl_kstep.envs import grid_coordination

    mdp = mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG))
    pol = mk.Policy.random(mdp, 4)
    P = mdp.to_dense()  # (N, J, N)
    acts = mdp.joint_actions()
    pi = np.ones((mdp.n_states, mdp.n_joint_actions))
    for i, t in enumerate(pol.theta):
        for s in range(mdp.n_states):
            pi[s] *= t[mdp.obs[i][s], acts[:, i]]
    P_pi = np.einsum("sj,sjt->st", pi, P)
    d = (1 - mdp.gamma) * np.linalg.inv(np.eye(mdp.n_states) - mdp.gamma * P_pi).T @ mdp.mu
    w = mk.slot_visitation(mdp, pol)
    for i in range(2):
        np.testing.assert_allclose(w[i], [d[mdp.obs[i] == o].sum() for o in range(mdp.n_obs[i])], atol=1e-13)
        assert w[i].sum() == pytest.approx(1.0, abs=1e-12)
    r_pi = (pi * np.asarray(mdp.rewards)).sum(axis=1)
    assert d @ r_pi / (1 - mdp.gamma) == pytest.approx(mk.value(mdp, pol), abs=1e-10)
    # an observation the walls map never produces has visitation 0 and an exact gradient of 0
    unseen = int(np.flatnonzero(w[0] == 0)[0])
    _, grad = mk.value_and_grad(mdp, pol, 2)
    assert np.all(grad[0][unseen] == 0.0)


# ------------------------------------------------------------------ escapes (train(..., escape=True))
def trap_2103():
    mdp = number_matching.build_mdp(start="far")  # 2 agents, m = 6, match observations: J* = 6.477
    return mdp, mk.Policy.deterministic(mdp, [[0, 1], [1, 1]])


@pytest.mark.parametrize("method", ["pgd", "mirror"])
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_escape_reaches_the_optimum_from_the_2103_trap(k, method):
    mdp, trap = trap_2103()
    j_star = mk.best_deterministic(mdp)[0]
    cert = certify(mdp, trap)
    assert cert.J == pytest.approx(2.103, abs=1e-9) and cert.one_opt and not cert.two_opt
    plain = mk.train(mdp, k=k, method=method, init=trap)
    assert plain.final_J == pytest.approx(2.103, abs=1e-9) and plain.stationary == "vertex"  # stuck for every k
    res = mk.train(mdp, k=k, method=method, init=trap, escape=True)
    assert res.final_J == pytest.approx(j_star, abs=1e-9) == 6.477
    assert res.certificate.two_opt and res.stationary == "vertex"
    (jump,) = res.escapes
    assert jump["kind"] == "deviation" and len(jump["slots"]) == 2 and jump["J_to"] == pytest.approx(j_star)
    assert len(res.history_J) == res.iterations + 1
    assert res.history_J[jump["iteration"]] == pytest.approx(j_star)


@pytest.mark.parametrize("alongside", [True, False])
def test_a_sampled_learner_escapes_the_2103_trap_too(alongside):
    mdp, trap = trap_2103()
    res = mk.train(mk.SampledKStep(mdp, 2, episodes=200, seed=1), init=trap, iters=200, escape=True,
                   exact_alongside=alongside)
    assert [e["kind"] for e in res.escapes][:1] == ["deviation"]
    assert mk.value(mdp, mk.Policy.deterministic(mdp, res.policy.greedy_tables())) == pytest.approx(6.477, abs=1e-9)
    assert res.certificate.two_opt


CASES = {
    "nm2": lambda: number_matching.build_mdp(start="far"),
    "nm3": lambda: number_matching.build_mdp(n_agents=3, n_numbers=5, start="far"),
    "own3": lambda: number_matching.build_mdp(n_agents=2, n_numbers=3, start="far", observation="own"),
}


@pytest.mark.parametrize("method", ["pgd", "mirror"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_escapes_never_end_below_plain_ascent_and_end_2opt(case, method):
    mdp = CASES[case]()
    for seed in range(6):
        for k in (1, 3):
            init = mk.Policy.random(mdp, seed)
            step = 0.05 if method == "pgd" else 0.5  # mirror's entries decay geometrically: a longer step
            plain = mk.train(mdp, k=k, method=method, step=step, init=init, iters=5000)
            res = mk.train(mdp, k=k, method=method, step=step, init=init, iters=5000, escape=True)
            assert res.final_J >= plain.final_J - 1e-9 * max(1, abs(plain.final_J)), (seed, k)
            assert res.certificate is not None and res.certificate.two_opt, (seed, k)
            # at a vertex its certified value; at a stochastic stationary point (a flat face, or a stochastic
            # policy better than its rounding: 3-agent number matching, J = 6.17733 > 6.177) at least that
            assert res.stationary in ("vertex", "stochastic"), (seed, k)
            if res.stationary == "vertex":
                assert res.final_J == pytest.approx(res.certificate.J, abs=1e-9)
            assert res.final_J >= res.certificate.J - 1e-9
            # each jump raised the exact value, and the histories hold the jumped-to value
            for e in res.escapes:  # (a "perturbation" off a saddle raises J_k, not necessarily J)
                assert e["kind"] == "perturbation" or e["J_to"] > e["J_from"]
                assert res.history_J[e["iteration"]] == pytest.approx(e["J_to"], abs=1e-9)


def test_escape_needs_a_model_and_checks_its_arguments():
    mdp, trap = trap_2103()
    with pytest.raises(ValueError, match="escape_order"):
        mk.train(mdp, init=trap, escape=True, escape_order=0)
    with pytest.raises(ValueError, match="max_escapes"):
        mk.train(mdp, init=trap, escape=True, max_escapes=-1)
    with pytest.raises(ValueError, match="escape"):
        mk.train(mdp, init=trap, escape="yes")
    res = mk.train(mdp, init=trap, escape=True, max_escapes=0)  # no jumps allowed: plain ascent
    assert res.escapes == [] and res.final_J == pytest.approx(2.103, abs=1e-9)


# ------------------------------------------------------------------ the grid trap's stuck point
def test_grid_trap_stuck_point_at_k4_is_2opt_and_needs_four_slots():
    from marl_kstep.envs import grid_coordination
    from marl_kstep.search import _joint_actions_of, _slot_layout, deterministic_values, used_observations

    mdp = mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG))
    j_star = 17.1875  # best_deterministic over all 5^8 tables: tests/test_envs.py (grid demonstration)
    res = mk.train(mdp, k=4, init=grid_coordination.near_stay_start(mdp), iters=2000)
    assert res.final_J == pytest.approx(0.8, abs=1e-9)
    cert = certify(mdp, res.policy, order=2)
    assert cert.rounded and cert.J == pytest.approx(0.8, abs=1e-9) and cert.one_opt and cert.two_opt
    esc = mk.train(mdp, k=4, init=grid_coordination.near_stay_start(mdp), iters=2000, escape=True)
    assert esc.final_J == pytest.approx(0.8, abs=1e-9) and esc.escapes == [] and esc.certificate.two_opt
    # brute force over changes of 3 and 4 slots: none of 3 improves; some of 4 reach J*
    radices, slot_of = _slot_layout(mdp)
    used = used_observations(mdp)
    tables = cert.policy.greedy_tables()
    base = np.array([tables[i][o] for i, u in enumerate(used) for o in u])
    best = {}
    for size in (3, 4):
        rows = []
        for slots in itertools.combinations(range(len(base)), size):
            for acts in itertools.product(*[[a for a in range(radices[q]) if a != base[q]] for q in slots]):
                d = base.copy()
                d[list(slots)] = acts
                rows.append(d)
        best[size] = deterministic_values(mdp, _joint_actions_of(mdp, np.array(rows), slot_of)).max()
    assert best[3] <= 0.8 + 1e-9
    assert best[4] == pytest.approx(j_star, abs=1e-9)


# ------------------------------------------------------------------ saddles and the default start
def test_the_symmetric_saddle_is_reported_and_the_default_start_avoids_it():
    mdp = number_matching.build_mdp(start="far")
    with pytest.warns(mk.SaddleWarning, match="saddle"):
        res = mk.train(mdp, k=3, init=mk.Policy.uniform(mdp))
    assert res.stationary == "saddle" and 0.5 < res.final_J < 1.0
    assert not res.policy.is_deterministic()
    default = mk.train(mdp, k=3)  # Policy.near_uniform: 1e-3 off the saddle, seeded
    assert default.final_J == pytest.approx(6.477, abs=1e-9) and default.stationary == "vertex"
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.SaddleWarning)
        loose = mk.train(mdp, k=3, init=mk.Policy.random(mdp, 3), tol=1.0)  # stopped by tol, not stationary
    assert loose.converged and loose.stationary is None
    esc = mk.train(mdp, k=3, init=mk.Policy.uniform(mdp), escape=True)
    assert esc.final_J == pytest.approx(6.477, abs=1e-9)
    assert [e["kind"] for e in esc.escapes][0] in ("perturbation", "deviation")


def test_a_flat_face_is_stochastic_but_not_a_saddle(recwarn):
    from marl_kstep.envs import grid_coordination

    mdp = mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG))
    res = mk.train(mdp, k=2, init=grid_coordination.near_stay_start(mdp), iters=2000)
    # at J* the rows of the end cells keep mixing "stay" with moves into the wall: the same thing
    assert res.final_J == pytest.approx(17.1875, abs=1e-9) and res.stationary == "stochastic"
    assert not [w for w in recwarn if issubclass(w.category, mk.SaddleWarning)]


def test_near_uniform_start():
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=4)
    a, b = mk.Policy.near_uniform(mdp), mk.Policy.near_uniform(mdp, 0)
    assert a.max_abs_diff(b) == 0.0 and 0 < a.max_abs_diff(mk.Policy.uniform(mdp)) <= 1e-3 / 2 + 1e-15
    assert mk.Policy.near_uniform(mdp, 1).max_abs_diff(a) > 0
    a.check_compatible(mdp)
    for bad in (0.0, -1e-3, 2.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            mk.Policy.near_uniform(mdp, scale=bad)


# ------------------------------------------------------------------ review regressions (random models, edge cases)
def rand_mdp(rng, gamma=0.9):
    """A random 2-agent model: 3-6 states, 2-3 actions and 1-3 observations per agent, sparse rewards."""
    N, A, n_obs = int(rng.integers(3, 7)), tuple(rng.integers(2, 4, size=2)), tuple(rng.integers(1, 4, size=2))
    J = int(np.prod(A))
    P = rng.dirichlet(np.ones(N) * 0.3, size=(N, J))
    R = rng.normal(size=(N, J)) * (rng.random((N, J)) < 0.4)
    obs = [rng.integers(0, o, size=N) for o in n_obs]
    return mk.JointMDP.from_dense(P, R, obs, list(A), rng.dirichlet(np.ones(N)), gamma, n_obs=list(n_obs))


def test_escapes_never_end_below_plain_ascent_on_random_models():
    """Deterministic starts (where a vertex is 2-opt but ascent leaves it) and long steps (transient
    vertices, oscillation after a jump): escape runs end at least as high as plain ascent."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        mdp = rand_mdp(rng)
        for k in (1, 2):
            for mode in ("det", "long"):
                if mode == "det":
                    init = mk.Policy.deterministic(mdp, [rng.integers(0, a, size=o)
                                                         for a, o in zip(mdp.n_actions, mdp.n_obs, strict=True)])
                    step = 0.05
                else:
                    init, step = mk.Policy.random(mdp, int(rng.integers(10**6))), 0.5
                plain = mk.train(mdp, k=k, init=init, step=step, iters=300)
                res = mk.train(mdp, k=k, init=init, step=step, iters=300, escape=True)
                assert res.final_J >= plain.final_J - 1e-9 * max(1, abs(plain.final_J))
                assert len(res.history_J) == res.iterations + 1
                for e in res.escapes:
                    assert 1 <= e["iteration"] <= res.iterations


def test_a_vertex_that_ascent_leaves_is_not_certified():
    """GridSmall (SPEC §5): the best deterministic policy is 2-opt, yet J_k rises into stochastic
    policies (6.34 > J* = 6.0627); escape=True must not stop there."""
    from marl_kstep.experiments import benchtable

    path = benchtable.DEFAULT_DATA_DIR / "GridSmall.dpomdp"
    if not path.exists():
        pytest.skip("the shared benchmark files are not beside the repository")
    mdp = mk.load_dpomdp(path, gamma=0.9)
    j_star, best = mk.best_deterministic(mdp)
    assert certify(mdp, best).two_opt
    plain = mk.train(mdp, k=1, init=best, iters=300)
    res = mk.train(mdp, k=1, init=best, iters=300, escape=True)
    assert plain.final_J > j_star + 0.2 and res.final_J == pytest.approx(plain.final_J, abs=1e-12)


def test_escape_edge_cases_cap_budget_reproducibility():
    mdp, trap = trap_2103()
    res = mk.train(mdp, k=2, init=trap, escape=True, iters=0)  # no iteration allowed: no jump recorded
    assert res.iterations == 0 and res.escapes == [] and len(res.history_J) == 1
    calls = []
    with mk.configure(max_policies=5), pytest.raises(ValueError, match="max_policies"):
        mk.train(mdp, k=1, init=trap, escape=True, callback=lambda *a: calls.append(a))
    assert calls == []  # refused before the first evaluation
    runs = [mk.train(mdp, k=3, init=mk.Policy.uniform(mdp), escape=True) for _ in range(2)]
    assert runs[0].iterations == runs[1].iterations and runs[0].final_J == runs[1].final_J
    np.testing.assert_array_equal(runs[0].history_J, runs[1].history_J)
    for bad in (2.0, 0, -1):
        with pytest.raises(ValueError, match="escape_order"):
            mk.train(mdp, init=trap, escape=True, escape_order=bad)
        with pytest.raises(ValueError, match="order"):
            certify(mdp, trap, order=bad)
    free = mk.Policy.from_arrays(mdp, [t * 2 for t in trap.theta], check_simplex=False)
    for fn in (lambda: certify(mdp, free), lambda: mk.slot_visitation(mdp, free)):
        with pytest.raises(ValueError, match="simplex"):
            fn()


@pytest.mark.parametrize("kw", [dict(method="pgd"), dict(method="mirror", step=0.5), dict(method="pgd", floor=1e-3)])
def test_saddles_are_found_with_mirror_and_with_a_floor(kw):
    """Entries at (or numerically near) their bound do not move in the saddle probes."""
    mdp = number_matching.build_mdp(n_agents=2, n_numbers=3, start="far", observation="own")
    with pytest.warns(mk.SaddleWarning):
        res = mk.train(mdp, k=1, init=mk.Policy.uniform(mdp), iters=3000, **kw)
    assert res.stationary == "saddle"
    esc = mk.train(mdp, k=1, init=mk.Policy.uniform(mdp), iters=3000, escape=True, **kw)
    assert esc.final_J > res.final_J + 1.0


def test_a_loose_tol_is_not_a_saddle_and_a_local_maximum_is_not_either():
    rng = np.random.default_rng(21)
    for _ in range(20):
        mdp = rand_mdp(rng)
    init = mk.Policy.random(mdp, 19)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.SaddleWarning)
        loose = mk.train(mdp, k=1, init=init, tol=1e-6, iters=3000)
        tight = mk.train(mdp, k=1, init=init, tol=1e-12, iters=20000)
    assert loose.stationary is None and tight.stationary == "stochastic"


def test_certificate_rounding_ignores_unused_observations():
    P = np.zeros((2, 4, 2))
    P[:, :, 0] = 1.0
    R = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mdp = mk.JointMDP.from_dense(P, R, [[0, 0], [0, 0]], [2, 2], [1.0, 0.0], 0.9, n_obs=[2, 1])
    pol = mk.Policy([np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[1.0, 0.0]])])  # observation 1 never occurs
    cert = certify(mdp, pol)
    assert not cert.rounded and cert.J == pytest.approx(10.0) and cert.two_opt


# ------------------------------------------------------------------ higher orders
def test_order_three_against_brute_force_on_three_agent_number_matching():
    """Every deterministic policy of 3-agent number matching (m = 5): the values of all changes of up
    to three slots from mk.value of each table, against certify(order=3) and is_opt."""
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=5, start="far")
    tables = all_tables(mdp)
    key = lambda t: tuple(map(tuple, t))  # noqa: E731
    value = {key(t): mk.value(mdp, mk.Policy.deterministic(mdp, t)) for t in tables}
    slots = [(i, o) for i in range(3) for o in range(2)]
    n_two_opt = n_three_opt = 0
    for t in tables:
        J0 = value[key(t)]
        gains = {1: [], 2: [], 3: []}
        for size in (1, 2, 3):
            for chosen in itertools.combinations(slots, size):
                u = [list(x) for x in t]
                for i, o in chosen:
                    u[i][o] = 1 - u[i][o]  # two actions: the one alternative
                gains[size].append(value[key(u)] - J0)
        cert = certify(mdp, mk.Policy.deterministic(mdp, t), order=3)
        thresh = 1e-9 * max(1, abs(J0))
        assert cert.evaluated == 6 + 15 + 20
        for m in (1, 2, 3):
            assert cert.is_opt(m) == (max(g for s in range(1, m + 1) for g in gains[s]) <= thresh)
        better = sorted((g for s in (1, 2, 3) for g in gains[s] if g > thresh), reverse=True)
        np.testing.assert_allclose([d.gain for d in cert.improving], better, atol=1e-10)
        n_two_opt += cert.two_opt and J0 < 6.177 - 1e-9
        n_three_opt += cert.is_opt(3) and J0 < 6.177 - 1e-9
    assert (n_two_opt, n_three_opt) == (7, 4)  # 2-opt traps at J = 0; 4 of them need four slots


def test_escape_of_order_four_leaves_the_grid_trap():
    from marl_kstep.envs import grid_coordination

    mdp = mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG))
    start = grid_coordination.near_stay_start(mdp)
    for order in (2, 3):
        assert mk.train(mdp, k=4, init=start, iters=2000, escape=True, escape_order=order).final_J == pytest.approx(0.8)
    res = mk.train(mdp, k=4, init=start, iters=2000, escape=True, escape_order=4)
    assert res.final_J == pytest.approx(17.1875, abs=1e-9) and res.certificate.is_opt(4)
    (jump,) = res.escapes
    assert sorted(map(tuple, jump["slots"])) == [(0, 3, 4), (0, 7, 4), (1, 3, 3), (1, 11, 3)]
