"""Finite-state controllers (SPEC §10): the augmented model against independent computations.

* one node per agent is today's memoryless model, bit for bit (arrays, J and gradients);
* J of the augmented model equals a product-chain solve over (x, q) written here from the
  original model's dense P, R, observations and the controller tables (not via the module);
  the k = 1 gradient equals central finite differences of that solve;
* the reachable augmented states are those of a breadth-first search of the full product;
* the sampled estimator agrees with the exact one (z-scores) on the augmented model and on the
  env path through ``MemoryParallelEnv`` around the original model's environment;
* certify on a controller agrees with brute force over every deterministic controller.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import marl_kstep as mk
from marl_kstep.envs import mdp_parallel_env
from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR
from marl_kstep.model import memory as memory_module
from marl_kstep.sampling import horizon_for

Z_MAX = 4.5
DECTIGER = DEFAULT_DATA_DIR / "dectiger.dpomdp"
needs_dectiger = pytest.mark.skipif(not DECTIGER.exists(), reason="the .dpomdp files are not available")


# ----------------------------------------------------------------------------- independent references
def random_model(seed, n_actions=(2, 2), n_obs=(2, 2), N=5, gamma=0.8, start_only=True):
    """A random dense model; state 0 is a start state never re-entered (when ``start_only``), so
    the augmented model keeps it with node 0 only."""
    rng = np.random.default_rng(seed)
    J = int(np.prod(n_actions))
    P = rng.random((N, J, N)) * (rng.random((N, J, N)) < 0.6)
    if start_only:
        P[:, :, 0] = 0.0
    P[:, :, 1] += 1e-3  # every row has a successor
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(N, J))
    obs = [rng.integers(0, o, size=N) for o in n_obs]
    for i, o in enumerate(n_obs):
        obs[i][:o] = np.arange(o)  # every observation occurs
    mu = np.zeros(N)
    mu[0], mu[2] = 0.7, 0.3
    return mk.JointMDP.from_dense(P, R, obs, n_actions, mu, gamma, n_obs=n_obs)


def random_controller(mdp, nodes, seed, concentration=1.0):
    """Controller tables T[i][q, o, a, q'] with rows (over (a, q')) on the simplex."""
    rng = np.random.default_rng(seed)
    out = []
    for Q, n_o, A in zip(nodes, mdp.n_obs, mdp.n_actions, strict=True):
        rows = rng.dirichlet(np.full(A * Q, concentration), size=Q * n_o)
        out.append(rows.reshape(Q, n_o, A, Q))
    return out


def product_chain(mdp, ctrl):
    """The chain over (x, q_0..q_{n-1}) of a controller, from the dense model: (P_c, r_c, mu_c).

    Entries of ``ctrl`` are used as given (no renormalisation), so this is also the free-entry
    extension of SPEC §3 at k = 1."""
    P, R, gamma = mdp.to_dense(), mdp.rewards, mdp.gamma
    nodes = [t.shape[0] for t in ctrl]
    qs = list(itertools.product(*[range(q) for q in nodes]))
    nq, N = len(qs), mdp.n_states
    Pc = np.zeros((N * nq, N * nq))
    rc = np.zeros(N * nq)
    mu_c = np.zeros(N * nq)
    for x in range(N):
        mu_c[x * nq] = mdp.mu[x]  # node code 0: every agent in node 0
        for b, q in enumerate(qs):
            row = x * nq + b
            for acts in itertools.product(*[range(a) for a in mdp.n_actions]):
                j = int(np.ravel_multi_index(acts, mdp.n_actions))
                for bn, qn in enumerate(qs):
                    w = 1.0
                    for i, t in enumerate(ctrl):
                        w *= t[q[i], mdp.obs[i][x], acts[i], qn[i]]
                    if w == 0.0:
                        continue
                    rc[row] += w * R[x, j]
                    Pc[row, bn::nq] += w * P[x, j, :]
    return Pc, rc, mu_c, gamma


def chain_value(mdp, ctrl):
    Pc, rc, mu_c, gamma = product_chain(mdp, ctrl)
    V = np.linalg.solve(np.eye(rc.size) - gamma * Pc, rc)
    return float(mu_c @ V)


def augmented_policy(aug, ctrl):
    """The policy of the augmented model for controller tables, written out from the encoding of
    SPEC §10 (observation q O_i + o, action a Q_i + q') rather than through the module's reshape."""
    theta = []
    for T in ctrl:
        Q, n_o, A, _ = T.shape
        t = np.zeros((Q * n_o, A * Q))
        for q, o, a, qn in itertools.product(range(Q), range(n_o), range(A), range(Q)):
            t[q * n_o + o, a * Q + qn] = T[q, o, a, qn]
        theta.append(t)
    return mk.Policy.from_arrays(aug, theta)


def reachable_product(mdp, nodes):
    """Breadth-first search of the full product (x, q) under every (a, q''), from (supp mu, 0)."""
    P = mdp.to_dense()
    qs = list(itertools.product(*[range(q) for q in nodes]))
    seen = {(int(x), qs[0]) for x in np.flatnonzero(mdp.mu > 0)}
    frontier = list(seen)
    while frontier:
        nxt = []
        for x, _ in frontier:
            for xn in np.flatnonzero(P[x].sum(axis=0) > 0):
                for qn in qs:
                    if (int(xn), qn) not in seen:
                        seen.add((int(xn), qn))
                        nxt.append((int(xn), qn))
        frontier = nxt
    return seen


# ----------------------------------------------------------------------------- one node = memoryless
def one_node_models():
    models = [random_model(3, start_only=False), random_model(4, n_actions=(2, 3, 2), n_obs=(2, 1, 3), N=6,
                                                              start_only=False)]
    if DECTIGER.exists():
        models.append(mk.load_dpomdp(DECTIGER, gamma=0.9))
    return models


@pytest.mark.parametrize("mdp", one_node_models(), ids=lambda m: f"N{m.n_states}_n{m.n_agents}")
def test_one_node_is_the_memoryless_model_bit_for_bit(mdp):
    aug = mk.with_memory(mdp, nodes=1)
    assert isinstance(aug, mk.MemoryMDP) and aug.nodes == (1,) * mdp.n_agents
    assert aug.n_states == mdp.n_states  # all reachable in these models
    for name in ("indptr", "indices", "probs", "rewards", "mu"):
        assert np.array_equal(getattr(aug, name), getattr(mdp, name)), name
    assert all(np.array_equal(a, b) for a, b in zip(aug.obs, mdp.obs, strict=True))
    for k in (1, 2, 3):
        for seed in range(3):
            pol = mk.Policy.random(mdp, seed)
            J0, g0 = mk.ExactKStep(mdp, k).value_and_grad(pol)
            J1, g1 = mk.ExactKStep(aug, k).value_and_grad(mk.Policy.from_arrays(aug, [t.copy() for t in pol.theta]))
            assert J1 == J0
            assert all(np.array_equal(a, b) for a, b in zip(g0, g1, strict=True))


# ----------------------------------------------------------------------------- against the product chain
CHAIN_CASES = [(0, (2, 2)), (1, (2, 3)), (2, (3, 1))]


@pytest.mark.parametrize("seed,nodes", CHAIN_CASES)
def test_augmented_value_equals_the_product_chain(seed, nodes):
    mdp = random_model(seed)
    aug = mk.with_memory(mdp, list(nodes))
    for c in range(3):
        ctrl = random_controller(mdp, nodes, 100 * seed + c)
        pol = augmented_policy(aug, ctrl)
        ref = chain_value(mdp, ctrl)
        assert mk.value(aug, pol, k=1) == pytest.approx(ref, rel=1e-11, abs=1e-11)
        # at a deterministic controller J_k = J for every k (SPEC §3), here for k = 3
        det = [np.eye(t.shape[2] * t.shape[3])[np.argmax(t.reshape(t.shape[0], t.shape[1], -1), axis=2)]
               .reshape(t.shape) for t in ctrl]
        assert mk.value(aug, augmented_policy(aug, det), k=3) == pytest.approx(chain_value(mdp, det), rel=1e-10)


def test_three_agents_against_the_product_chain():
    mdp = random_model(7, n_actions=(2, 2, 2), n_obs=(2, 1, 2), N=4)
    nodes = (2, 1, 2)
    aug = mk.with_memory(mdp, nodes)
    ctrl = random_controller(mdp, nodes, 5)
    assert mk.value(aug, augmented_policy(aug, ctrl)) == pytest.approx(chain_value(mdp, ctrl), rel=1e-11)


@needs_dectiger
def test_dectiger_controllers_against_the_product_chain():
    mdp = mk.load_dpomdp(DECTIGER, gamma=0.9)
    aug = mk.with_memory(mdp, 2)
    for seed in range(2):
        ctrl = random_controller(mdp, (2, 2), seed)
        assert mk.value(aug, augmented_policy(aug, ctrl), k=1) == pytest.approx(chain_value(mdp, ctrl), rel=1e-10)
    # a hand-written controller: listen; after hearing left twice in a row, open right
    ctrl = []
    for _ in range(2):
        T = np.zeros((2, 3, 3, 2))  # observations hear-left, hear-right, start; actions listen, open-left, open-right
        names = mdp.obs_names[0]
        hl, hr, st = names.index("hear-left"), names.index("hear-right"), names.index("start")
        listen, open_left, open_right = (mdp.action_names[0].index(a) for a in ("listen", "open-left", "open-right"))
        T[0, st, listen, 0] = 1
        T[0, hl, listen, 1] = 1  # first hear-left: remember it
        T[0, hr, listen, 0] = 1
        T[1, hl, open_right, 0] = 1  # twice left: open right
        T[1, hr, listen, 0] = 1
        T[1, st, listen, 0] = 1  # never seen
        ctrl.append(T)
    pol = mk.Policy.from_arrays(aug, aug.augmented_tables(ctrl))
    J = mk.value(aug, pol)
    assert J == pytest.approx(chain_value(mdp, ctrl), rel=1e-10)
    text = aug.describe(pol)
    assert "q0, hear-left: listen -> q1" in text and "q1, hear-left: open-right -> q0" in text
    assert "q1, start" not in text  # never seen: left out


@pytest.mark.parametrize("seed", [0, 1])
def test_k1_gradient_equals_finite_differences_of_the_product_chain(seed):
    mdp = random_model(seed)
    nodes = (2, 2)
    aug = mk.with_memory(mdp, nodes)
    ctrl = random_controller(mdp, nodes, seed + 50, concentration=2.0)
    _, grad = mk.value_and_grad(aug, augmented_policy(aug, ctrl), k=1)
    rng = np.random.default_rng(seed)
    h = 1e-6
    for _ in range(6):
        i = int(rng.integers(2))
        q, o, a, qn = (int(rng.integers(s)) for s in ctrl[i].shape)
        plus = [t.copy() for t in ctrl]
        minus = [t.copy() for t in ctrl]
        plus[i][q, o, a, qn] += h
        minus[i][q, o, a, qn] -= h
        fd = (chain_value(mdp, plus) - chain_value(mdp, minus)) / (2 * h)
        g = grad[i][q * mdp.n_obs[i] + o, a * nodes[i] + qn]
        assert g == pytest.approx(fd, rel=1e-6, abs=1e-7)


# ----------------------------------------------------------------------------- structure and helpers
@pytest.mark.parametrize("seed,nodes", [(0, (2, 2)), (1, (3, 2)), (2, (1, 3))])
def test_reachable_states_are_those_of_a_search_of_the_full_product(seed, nodes):
    mdp = random_model(seed)
    aug = mk.with_memory(mdp, list(nodes))
    kept = {(int(x), tuple(int(v) for v in aug.node_of_state[:, s])) for s, x in enumerate(aug.base_state)}
    assert kept == reachable_product(mdp, nodes)
    assert (0, (0,) * 2) in kept and not any(x == 0 and q != (0, 0) for x, q in kept)  # state 0: start only
    sizes = mk.memory_sizes(mdp, list(nodes))
    assert sizes["states"] == aug.n_states and sizes["joint_actions"] == aug.n_joint_actions
    assert sizes["transitions"] == aug.probs.size
    assert aug.n_obs == tuple(q * o for q, o in zip(nodes, mdp.n_obs, strict=True))
    assert aug.n_actions == tuple(a * q for a, q in zip(mdp.n_actions, nodes, strict=True))
    # observation q O_i + o and the original state's observation
    for i in range(2):
        assert np.array_equal(aug.obs[i], aug.node_of_state[i] * mdp.n_obs[i] + mdp.obs[i][aug.base_state])


def test_controller_conversions_are_exact_and_lift_keeps_the_value():
    mdp = random_model(5)
    aug = mk.with_memory(mdp, [2, 3])
    pol = mk.Policy.random(aug, 1)
    ctrl = aug.controller(pol)
    assert [c.shape for c in ctrl] == [(2, 2, 2, 2), (3, 2, 2, 3)]
    back = aug.augmented_tables(ctrl)
    assert all(np.array_equal(a, b) for a, b in zip(back, pol.theta, strict=True))
    assert ctrl[1][2, 1, 1, 0] == pol.theta[1][aug.slot(1, 2, 1), aug.choice(1, 1, 0)]
    memoryless = mk.Policy.random(mdp, 2)
    lifted = mk.Policy.from_arrays(aug, aug.lift(memoryless))
    assert mk.value(aug, lifted, k=2) == pytest.approx(mk.value(mdp, memoryless, k=2), rel=1e-12)
    psi = [np.full((q, 2, 2), 0.5) for q in (2, 3)]
    eta = [np.full((q, 2, 2, q), 1.0 / q) for q in (2, 3)]
    fact = aug.factored_tables(psi, eta)
    assert all(np.allclose(t, 1.0 / t.shape[1]) for t in fact)


def test_pickle_and_replace_keep_the_layout():
    import dataclasses
    import pickle

    aug = mk.with_memory(random_model(0), 2)
    again = pickle.loads(pickle.dumps(aug))
    assert isinstance(again, mk.MemoryMDP) and again.nodes == aug.nodes
    assert np.array_equal(again.base_state, aug.base_state)
    other = dataclasses.replace(aug, gamma=0.5)
    assert isinstance(other, mk.MemoryMDP) and other.gamma == 0.5


# ----------------------------------------------------------------------------- bad input
def test_bad_nodes_are_named():
    mdp = random_model(0)
    for nodes, msg in ((0, "nodes\\[0\\] \\(agent 0\\) must be an integer >= 1"),
                       ([2], "one node count per agent \\(2\\)"),
                       ([2, 1.5], "nodes\\[1\\] \\(agent 1\\)"),
                       (True, "nodes must be an integer"),
                       ("2", "nodes must be a list")):
        with pytest.raises(ValueError, match=msg):
            mk.with_memory(mdp, nodes)
    with pytest.raises(ValueError, match="target must be a JointMDP or a PettingZoo ParallelEnv"):
        mk.with_memory("model", 2)


def test_sizes_are_checked_before_building(monkeypatch):
    mdp = random_model(0)

    def never(*args):
        raise AssertionError("built although the size check should have refused")

    monkeypatch.setattr(memory_module, "_build", never)
    with mk.configure(max_model_bytes=10_000):
        with pytest.raises(ValueError, match=r"with_memory\(nodes=\[3, 4\]\).*states.*joint actions.*GiB"):
            mk.with_memory(mdp, [3, 4])


# ----------------------------------------------------------------------------- sampled estimates
def centred(grad):
    return [g - g.mean(axis=1, keepdims=True) for g in grad]


def check_z(est, exact):
    assert abs(est.J_k - exact.J_k) <= Z_MAX * est.J_k_se, (est.J_k, exact.J_k, est.J_k_se)
    zs = []
    for g, c, se in zip(est.grad, centred(exact.grad), est.grad_se, strict=True):
        ok = se > 0
        np.testing.assert_allclose((g - c)[~ok], 0.0, atol=1e-9)  # never drawn: unreachable slot
        zs.append((g - c)[ok] / se[ok])
    z = np.concatenate(zs)
    assert z.size and np.abs(z).max() <= Z_MAX, np.abs(z).max()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sampled_fast_path_on_the_augmented_model(k):
    aug = mk.with_memory(random_model(1), [2, 2])
    pol = mk.Policy.random(aug, 10 + k, concentration=3.0)
    est = mk.SampledKStep(aug, k, episodes=20_000, seed=k)
    check_z(est.estimate(pol), mk.ExactKStep(aug, k).estimate(pol))


@pytest.mark.parametrize("k", [1, 2])
def test_env_path_with_the_wrapper_agrees_with_the_exact_augmented_model(k):
    mdp = random_model(2, gamma=0.7)
    nodes = [2, 2]
    aug = mk.with_memory(mdp, nodes)
    H = horizon_for(0.7, 1e-4)
    env = mk.with_memory(mdp_parallel_env(mdp, max_cycles=H), nodes)
    assert isinstance(env, mk.MemoryParallelEnv) and env.max_cycles == H
    pol = mk.Policy.random(aug, 20 + k, concentration=3.0)
    est = mk.SampledKStep(env, k, gamma=0.7, episodes=400, seed=k)
    assert est.path == "env" and est.n_obs == aug.n_obs and est.n_actions == aug.n_actions
    check_z(est.estimate(pol), mk.ExactKStep(aug, k).estimate(pol))


def test_the_wrapper_passes_the_pettingzoo_api_test_and_carries_nodes():
    mdp = random_model(3)
    env = mk.MemoryParallelEnv(mdp_parallel_env(mdp, max_cycles=20), [2, 3])
    parallel_api_test(env, num_cycles=30)
    obs, _ = env.reset(seed=0)
    assert env.node == {"agent_0": 0, "agent_1": 0}
    x = env.state[0]
    assert int(obs["agent_1"]) == mdp.obs[1][x]  # node 0
    obs, *_ = env.step({"agent_0": 1 * 2 + 1, "agent_1": 0 * 3 + 2})  # (a=1, q'=1), (a=0, q'=2)
    x = env.state[0]
    assert env.node == {"agent_0": 1, "agent_1": 2}
    assert int(obs["agent_0"]) == 1 * 2 + mdp.obs[0][x] and int(obs["agent_1"]) == 2 * 2 + mdp.obs[1][x]
    with pytest.raises(ValueError, match=r"actions\['agent_0'\] = 4 is not a choice of agent 0"):
        env.step({"agent_0": 4, "agent_1": 0})


# ----------------------------------------------------------------------------- searches on controllers
def all_deterministic_values(mdp, aug):
    """Value of every deterministic controller on the used slots of ``aug`` (product chain,
    batched), with the slot list: returns (values (B,), digits (B, n_slots), slots)."""
    used = aug.used_slots()
    slots = [(i, q, o) for i in range(mdp.n_agents) for q in range(aug.nodes[i]) for o in range(mdp.n_obs[i])
             if used[i][q, o]]
    radices = [aug.n_actions[i] for i, _, _ in slots]
    digits = np.array(list(itertools.product(*[range(r) for r in radices])))
    values = np.empty(len(digits))
    for b, d in enumerate(digits):
        ctrl = [np.zeros((Q, n_o, A, Q)) for Q, n_o, A in zip(aug.nodes, mdp.n_obs, mdp.n_actions, strict=True)]
        for i in range(mdp.n_agents):  # unused slots: choice 0 (never reached)
            ctrl[i][:, :, 0, 0] = 1.0
        for (i, q, o), c in zip(slots, d, strict=True):
            ctrl[i][q, o] = 0.0
            ctrl[i][q, o, c // aug.nodes[i], c % aug.nodes[i]] = 1.0
        values[b] = chain_value(mdp, ctrl)
    return values, digits, slots


def test_certify_and_best_deterministic_agree_with_brute_force_on_a_tiny_controller_problem():
    mdp = random_model(11, n_obs=(1, 2), N=3)
    aug = mk.with_memory(mdp, [2, 1])
    values, digits, slots = all_deterministic_values(mdp, aug)
    assert len(values) == mk.search.count_deterministic(aug)
    best_v, best_p = mk.best_deterministic(aug)
    assert best_v == pytest.approx(values.max(), rel=1e-10)
    rng = np.random.default_rng(0)
    for b in [int(np.argmax(values)), *rng.integers(0, len(values), size=3)]:
        base = digits[b]
        tables = [np.zeros(aug.n_obs[i], int) for i in range(mdp.n_agents)]
        for (i, q, o), c in zip(slots, base, strict=True):
            tables[i][aug.slot(i, q, o)] = c
        pol = mk.Policy.deterministic(aug, tables)
        cert = mk.certify(aug, pol, order=2, tol=1e-9)
        assert cert.J == pytest.approx(values[b], rel=1e-10)
        dist = (digits != base).sum(axis=1)
        thresh = 1e-9 * max(1.0, abs(values[b]))
        for m in (1, 2):
            brute_better = np.flatnonzero((dist >= 1) & (dist <= m) & (values > values[b] + thresh))
            assert cert.is_opt(m) == (brute_better.size == 0)
            assert sum(len(d.slots) <= m for d in cert.improving) == brute_better.size
        if cert.improving:
            assert cert.best.J == pytest.approx(values[(dist >= 1) & (dist <= 2)].max(), rel=1e-10)


def test_ascent_with_escapes_and_alternating_best_response_run_on_controllers():
    mdp = random_model(12)
    aug = mk.with_memory(mdp, 2)
    best_v, _ = mk.best_deterministic(aug)
    abr_v, abr_p, _ = mk.alternating_best_response(aug)
    assert abr_v <= best_v + 1e-9 and mk.value(aug, abr_p) == pytest.approx(abr_v, rel=1e-10)
    start = mk.Policy.random(aug, 0)
    res = mk.train(aug, k=2, init=start, iters=300, escape=True)
    assert res.final_J >= mk.value(aug, start) - 1e-9
    assert res.certificate is not None and res.certificate.J <= best_v + 1e-9
    if res.certificate.two_opt:  # a certified 2-opt controller is not beaten by any 2-slot change
        assert not any(len(d.slots) <= 2 for d in res.certificate.improving)


# ----------------------------------------------------------------------------- Moore controllers
def moore_chain_value(mdp, psi, eta):
    """Moore controllers evaluated directly: chain over (x, m) with a ~ psi(m), then after the
    next state x' the node m' ~ eta(m, a, phi(x')); every agent starts in Moore node 0."""
    P, R, g = mdp.to_dense(), mdp.rewards, mdp.gamma
    Ms = [p.shape[0] for p in psi]
    ms = list(itertools.product(*[range(M) for M in Ms]))
    nm, N = len(ms), mdp.n_states
    Pc = np.zeros((N * nm, N * nm))
    rc = np.zeros(N * nm)
    for x in range(N):
        for b, m in enumerate(ms):
            for acts in itertools.product(*[range(a) for a in mdp.n_actions]):
                w = np.prod([psi[i][m[i], acts[i]] for i in range(len(Ms))])
                if w == 0:
                    continue
                j = int(np.ravel_multi_index(acts, mdp.n_actions))
                rc[x * nm + b] += w * R[x, j]
                for xn in np.flatnonzero(P[x, j]):
                    for bn, mn in enumerate(ms):
                        u = np.prod([eta[i][m[i], acts[i], mdp.obs[i][xn], mn[i]] for i in range(len(Ms))])
                        Pc[x * nm + b, xn * nm + bn] += w * P[x, j, xn] * u
    V = np.linalg.solve(np.eye(N * nm) - g * Pc, rc)
    return float(mdp.mu @ V[::nm])


@needs_dectiger
def test_moore_controllers_are_mealy_controllers_with_nodes_times_actions():
    mdp = mk.load_dpomdp(DECTIGER, gamma=0.9)
    rng = np.random.default_rng(3)
    M, A, n_o = 2, 3, mdp.n_obs[0]
    aug = mk.with_memory(mdp, M * A)
    for _ in range(2):
        psi = [rng.dirichlet(np.ones(A), size=M) for _ in range(2)]
        eta = [rng.dirichlet(np.ones(M), size=(M, A, n_o)) for _ in range(2)]
        pol = mk.Policy.from_arrays(aug, aug.moore_tables(psi, eta))
        assert mk.value(aug, pol) == pytest.approx(moore_chain_value(mdp, psi, eta), rel=1e-10)
    with pytest.raises(ValueError, match=r"nodes\[0\] = 4 must be M \* A_0"):
        mk.with_memory(mdp, 4).moore_tables(psi, eta)


# ----------------------------------------------------------------------------- fuzzing the entry points
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import BAD, check  # noqa: E402  (the project's harness: success or a ValueError naming the argument)

FUZZ_MEMORY = settings(max_examples=60, deadline=None, derandomize=True)
FUZZ_MODEL = random_model(0)
FUZZ_AUG = mk.with_memory(FUZZ_MODEL, 2)


@FUZZ_MEMORY
@given(which=st.sampled_from(["target", "nodes", "env_nodes", "sizes", "controller", "augmented_tables",
                              "factored", "moore", "lift", "describe"]), value=BAD)
def test_fuzz_memory_entry_points(which, value):
    aug = FUZZ_AUG
    calls = {
        "target": (lambda: mk.with_memory(value, 2), ["target", "mdp"]),
        "nodes": (lambda: mk.with_memory(FUZZ_MODEL, value), ["nodes"]),
        "env_nodes": (lambda: mk.MemoryParallelEnv(mdp_parallel_env(FUZZ_MODEL), value), ["nodes"]),
        "sizes": (lambda: mk.memory_sizes(FUZZ_MODEL, value), ["nodes"]),
        "controller": (lambda: aug.controller(value), ["policy"]),
        "augmented_tables": (lambda: aug.augmented_tables(value), ["controller"]),
        "factored": (lambda: aug.factored_tables(value, value), ["psi", "eta"]),
        "moore": (lambda: aug.moore_tables(value, value, start_obs=[0, 0]), ["psi", "eta", "nodes"]),
        "lift": (lambda: aug.lift(value), ["policy"]),
        "describe": (lambda: aug.describe(value), ["policy"]),
    }
    call, names = calls[which]
    check(call, names)


def test_env_path_through_a_user_env_with_multidiscrete_observations():
    """The wrapper around a PettingZoo env written elsewhere (tests/test_sampled.py's RelayEnv, whose
    walker sees a MultiDiscrete observation), against the exact augmented model of its
    independently written JointMDP."""
    from test_sampled import RelayEnv, relay_model

    gamma, k = 0.8, 2
    H = horizon_for(gamma, 1e-4)
    env = mk.with_memory(RelayEnv(max_cycles=H), [2, 2])
    aug = mk.with_memory(relay_model(gamma), [2, 2])
    est = mk.SampledKStep(env, k, gamma=gamma, episodes=800, seed=3)
    assert est.n_obs == aug.n_obs == (4, 12) and est.n_actions == aug.n_actions == (4, 4)
    pol = mk.Policy.random(aug, 4, concentration=3.0)
    check_z(est.estimate(pol), mk.ExactKStep(aug, k).estimate(pol))
