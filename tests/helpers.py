"""Independent reference computations for the tests (plain numpy, no kernel code)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

import marl_kstep as mk


def joint_pi(mdp, thetas):
    """pi[s, j] = prod_i theta_i[phi_i(s), a_i(j)] (works off the simplex too)."""
    acts = mdp.joint_actions()
    pi = np.ones((mdp.n_states, mdp.n_joint_actions))
    for i in range(mdp.n_agents):
        pi *= thetas[i][mdp.obs[i]][:, acts[:, i]]
    return pi


def ordinary(mdp, thetas):
    """Dense SPEC §2: (J, V, grad) by matrix inversion."""
    P = mdp.to_dense()
    R = mdp.rewards
    N = mdp.n_states
    g = mdp.gamma
    pi = joint_pi(mdp, thetas)
    Ppi = np.einsum("sj,sjt->st", pi, P)
    rpi = (pi * R).sum(axis=1)
    A = np.eye(N) - g * Ppi
    V = np.linalg.solve(A, rpi)
    nu = np.linalg.solve(A.T, mdp.mu)
    Q = R + g * P @ V
    acts = mdp.joint_actions()
    grads = []
    for i in range(mdp.n_agents):
        gi = np.zeros_like(thetas[i], dtype=float)
        others = np.ones((N, mdp.n_joint_actions))
        for other in range(mdp.n_agents):
            if other != i:
                others *= thetas[other][mdp.obs[other]][:, acts[:, other]]
        contrib = nu[:, None] * others * Q  # (N, J)
        for s in range(N):
            for j in range(mdp.n_joint_actions):
                gi[mdp.obs[i][s], acts[j, i]] += contrib[s, j]
        grads.append(gi)
    return float(mdp.mu @ V), V, grads


def path_formula(mdp, thetas, k):
    """SPEC §3 by plain recursion: V_k with first-visit factors, entries as free variables."""
    N = mdp.n_states
    P = mdp.to_dense()
    g = mdp.gamma
    W = np.zeros(N)
    M = np.zeros((N, N))

    def rec(s0, s, depth, weight, ret, memo):
        if depth == k:
            W[s0] += weight * ret
            M[s0, s] += weight * g**k
            return
        free = [i for i in range(mdp.n_agents) if (i, mdp.obs[i][s]) not in memo]
        fixed = {i: memo[(i, mdp.obs[i][s])] for i in range(mdp.n_agents) if i not in free}
        for choice in itertools.product(*[range(mdp.n_actions[i]) for i in free]):
            acts = dict(fixed)
            new = dict(memo)
            f = 1.0
            for i, a in zip(free, choice, strict=True):
                acts[i] = a
                new[(i, mdp.obs[i][s])] = a
                f *= thetas[i][mdp.obs[i][s], a]
            j = mdp.joint_index([acts[i] for i in range(mdp.n_agents)])
            for t in np.flatnonzero(P[s, j]):
                rec(s0, t, depth + 1, weight * f * P[s, j, t], ret + g**depth * mdp.rewards[s, j], new)

    for s0 in range(N):
        rec(s0, s0, 0, 1.0, 0.0, {})
    V = np.linalg.solve(np.eye(N) - M, W)
    return float(mdp.mu @ V), V


@st.composite
def small_mdps(draw, max_agents=3, max_states=5, max_joint=8, max_succ=2):
    """Random joint MDPs: 1-3 agents, stochastic sparse transitions, several observations."""
    n = draw(st.integers(1, max_agents))
    n_actions = []
    for _ in range(n):
        cap = max(1, max_joint // max(1, int(np.prod(n_actions)) if n_actions else 1))
        n_actions.append(draw(st.integers(1, min(3, cap))))
    N = draw(st.integers(1, max_states))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    J = int(np.prod(n_actions))
    P = np.zeros((N, J, N))
    for s in range(N):
        for j in range(J):
            m = int(rng.integers(1, min(max_succ, N) + 1))
            succ = rng.choice(N, size=m, replace=False)
            P[s, j, succ] = rng.dirichlet(np.ones(m))
    R = rng.normal(size=(N, J))
    n_obs = [draw(st.integers(1, 3)) for _ in range(n)]
    obs = [rng.integers(0, o, size=N) for o in n_obs]
    mu = rng.dirichlet(np.ones(N))
    gamma = draw(st.sampled_from([0.0, 0.5, 0.9]))
    return mk.JointMDP.from_dense(P, R, obs, n_actions, mu, gamma, n_obs=n_obs)


def random_thetas(mdp, seed, interior=True):
    rng = np.random.default_rng(seed)
    out = []
    for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True):
        t = rng.dirichlet(np.ones(a), size=o)
        if interior:
            t = 0.8 * t + 0.2 / a
        out.append(t)
    return out


def split_dense(rng, P, max_copies=3):
    """Split every state of a dense ``P`` (N, J, N) into 1..max_copies twins: outgoing rows
    copied, incoming probability shared out over the twins in powers of two (so sums are exact).
    Returns (split P, twin_of, copies)."""
    N, J, _ = P.shape
    copies = rng.integers(1, max_copies + 1, size=N)
    twin_of = np.repeat(np.arange(N), copies)
    first = np.concatenate([[0], np.cumsum(copies)[:-1]])
    shares = {1: [1.0], 2: [0.5, 0.5], 3: [0.5, 0.25, 0.25]}
    M = twin_of.size
    Q = np.zeros((M, J, M))
    for t in range(M):
        for j in range(J):
            for s2 in np.flatnonzero(P[twin_of[t], j]):
                q = rng.permutation(shares[int(copies[s2])])
                Q[t, j, first[s2] : first[s2] + copies[s2]] = P[twin_of[t], j, s2] * q
    return Q, twin_of, copies


@st.composite
def split_mdps(draw, max_copies=3):
    """A small MDP and a copy of it where every state is split into 1..max_copies twins.

    Twins share observations and rewards; the probability of a successor is shared out over
    its twins in powers of two (1, 1/2 + 1/2, 1/2 + 1/4 + 1/4), so the block sums are
    exact and the split model is exactly lumpable back onto the base model. Returns
    ``(base, split, twin_of)`` with ``twin_of[t]`` the base state of split state ``t``.
    """
    base = draw(small_mdps(max_states=4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    N = base.n_states
    P, twin_of, copies = split_dense(rng, base.to_dense(), max_copies)
    first = np.concatenate([[0], np.cumsum(copies)[:-1]])
    M = twin_of.size
    mu = np.zeros(M)
    for s in range(N):
        w = rng.dirichlet(np.ones(copies[s]))
        mu[first[s] : first[s] + copies[s]] = base.mu[s] * w
    mu /= mu.sum()
    split = mk.JointMDP.from_dense(P, base.rewards[twin_of], [o[twin_of] for o in base.obs], base.n_actions,
                                   mu, base.gamma, n_obs=base.n_obs)
    return base, split, twin_of


def naive_lumping(mdp):
    """Coarsest lumping by plain pair-wise refinement on the dense model (a reference for
    ``JointMDP.lumped``): blocks as frozensets, block probabilities summed in sorted order."""
    N, J = mdp.n_states, mdp.n_joint_actions
    P = mdp.to_dense()
    key = {s: (tuple(int(o[s]) for o in mdp.obs), tuple(mdp.rewards[s].tolist())) for s in range(N)}
    blocks = {}
    for s in range(N):
        blocks.setdefault(key[s], []).append(s)
    part = list(blocks.values())
    while True:
        where = {s: b for b, members in enumerate(part) for s in members}
        new = []
        for members in part:
            groups = {}
            for s in members:
                sig = tuple(
                    tuple(sum(sorted(P[s, j, t] for t in part_b if P[s, j, t] > 0)) for part_b in part)
                    for j in range(J)
                )
                groups.setdefault(sig, []).append(s)
            new.extend(groups.values())
        if len(new) == len(part):
            return sorted(sorted(b) for b in new), where
        part = new


#: The public .dpomdp files beside the repository (``../shared/benchmarks/dpomdp``; the package ships
#: 13 of them, not the syntax example): tests that need the originals skip when it is absent.
SHARED_DPOMDP = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "dpomdp"


def error_lines(err: str) -> list[str]:
    """The lines of a command's stderr, less the one-time notice that kernels are being compiled (a cold
    numba cache prints it once per machine)."""
    return [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("marl_kstep: compiling kernels")]
