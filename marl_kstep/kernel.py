r"""Exact k-step coupled values and policy gradients (SPEC §3), numba-compiled.

**k-coupled execution.** At times :math:`t = 0, k, 2k, \dots` every agent :math:`i` draws,
independently for each of its observations :math:`o`, one action
:math:`d_i(o) \sim \theta_i[o, \cdot]`, and plays :math:`a_{i,t} = d_i(\phi_i(s_t))`
for the rest of the window. With

.. math::

    W(s) = \mathbb E\Big[\sum_{t<k} \gamma^t r_t \,\Big|\, s_0 = s\Big], \qquad
    M(s, s') = \gamma^k \, \Pr(s_k = s' \mid s_0 = s),

the k-step value is :math:`V_k = (I - M)^{-1} W` and :math:`J_k = \mu^\top V_k`.

**Path enumeration.** From every start state the kernel walks all window paths of depth
:math:`k` with an explicit stack, carrying the memo of (agent, observation) slots already
drawn on the path. A path has weight :math:`p = T \prod f` (transition probabilities times
the entries :math:`\theta_i[o, a]` drawn at first visits) and return
:math:`G = \sum_{t<k} \gamma^t r_t + \gamma^k V_k(s_k)`.

1. Pass 1 accumulates :math:`W` and the sparse :math:`M`; then :math:`(I - M) V_k = W`
   (sparse LU for small systems, compiled BiCGSTAB to a relative residual of 1e-13 with a
   sparse-LU fallback for larger ones; the two systems of steps 1 and 2 run side by side).
2. :math:`\nu_k = \mu^\top (I - M)^{-1}` (the transposed system).
3. Pass 2: :math:`\partial J_k / \partial \theta_i[o, a] = \sum_s \nu_k(s) \sum_{\text{paths}
   \ni (i,o,a)} T \prod_{f \ne (i,o,a)} f \cdot G`.

Pass 2 does not visit every factor at every leaf: the walk accumulates, bottom-up, the
subtree sums :math:`H(\text{node}) = \sum_{\text{leaves below}} (\text{weight below}) \cdot G`,
and credits each factor once at the node that draws it with
``nu * (weight above) * (product of the node's other new factors) * H``. The other factors
are leave-one-out products (prefix times suffix), never divisions, so zero probabilities
are exact. Branches with :math:`\theta = 0` are walked too: their value is zero but their
partial derivatives are not.

The entries are free variables: off the simplex this is the path-formula extension of
SPEC §3 (for ``k = 1`` the usual direct-parameterisation extension).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit, prange
from scipy import sparse
from scipy.sparse.linalg import splu

from .model import JointMDP

__all__ = [
    "DEFAULT_MAX_PATH_STEPS",
    "count_path_steps",
    "estimate_path_steps",
    "value",
    "value_vector",
    "value_and_grad",
    "values_and_grad",
]

#: Default budget on enumerated path steps per pass; override per call with
#: ``max_path_steps=`` or globally with the environment variable ``MARL_KSTEP_MAX_PATH_STEPS``.
DEFAULT_MAX_PATH_STEPS = int(os.environ.get("MARL_KSTEP_MAX_PATH_STEPS", 300_000_000))

_MODE_VALUES, _MODE_GRAD, _MODE_COUNT = 0, 1, 2


# --------------------------------------------------------------------------- numba kernels
@njit(cache=True)
def _set_choice(d, s, J, strides, n_act, theta, toff, indptr, rewards,
                st_nfree, st_fagent, st_fobs, st_fact, st_base, st_phi, st_r, st_ptr,
                st_end, st_accc):
    """Install the current odometer choice of node ``d`` (joint action, factor, successors)."""
    j = st_base[d]
    phi = 1.0
    for f in range(st_nfree[d]):
        i = st_fagent[d, f]
        a = st_fact[d, f]
        j += a * strides[i]
        phi *= theta[toff[i] + st_fobs[d, f] * n_act[i] + a]
    st_phi[d] = phi
    st_r[d] = rewards[s, j]
    row = s * J + j
    st_ptr[d] = indptr[row]
    st_end[d] = indptr[row + 1]
    st_accc[d] = 0.0


@njit(cache=True)
def _enter_node(d, s, obs, strides, memo_obs, memo_act, memo_len,
                st_nfree, st_fagent, st_fobs, st_fact, st_fslot, st_base, st_accn):
    """Open node ``d`` in state ``s``: agents whose slot is in the memo play their drawn
    action; the others are free and get a fresh memo entry (action 0 to start)."""
    n = strides.shape[0]
    base = 0
    nf = 0
    for i in range(n):
        o = obs[i, s]
        found = -1
        for m in range(memo_len[i]):
            if memo_obs[i, m] == o:
                found = m
                break
        if found >= 0:
            base += memo_act[i, found] * strides[i]
        else:
            slot = memo_len[i]
            memo_obs[i, slot] = o
            memo_act[i, slot] = 0
            memo_len[i] = slot + 1
            st_fagent[d, nf] = i
            st_fobs[d, nf] = o
            st_fact[d, nf] = 0
            st_fslot[d, nf] = slot
            nf += 1
    st_nfree[d] = nf
    st_base[d] = base
    st_accn[d] = 0.0


@njit(cache=True)
def _k1_rows(lo, hi, mode, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
             rewards, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    r"""The passes for ``k = 1``, row by row (no stack, no memo: every agent is free).

    mode 0: :math:`W(s) = \sum_j \pi(j|s) r(s, j)` and
    :math:`M(s, s') = \gamma \sum_j \pi(j|s) P(s'|s, j)`;
    mode 1: :math:`\partial J / \partial\theta_i[\phi_i(s), a_i] \mathrel{+}= \nu(s)
    \prod_{l \ne i} \theta_l[\phi_l(s), a_l] \, (r(s, j) + \gamma \sum_{s'} P(s'|s,j) V(s'))`
    (leave-one-out products, no divisions); mode 2: count. Returns the path steps."""
    n = strides.shape[0]
    J = rewards.shape[1]
    N = rewards.shape[0]
    fidx = np.empty(n, np.int64)
    fbase = np.empty(n, np.int64)
    act = np.empty(n, np.int64)
    pre = np.empty(n + 1)
    suf = np.empty(n + 1)
    pos = np.full(N if mode == _MODE_VALUES else 0, -1, np.int64)
    steps = 0
    for s in range(lo, hi):
        if mode == _MODE_COUNT:
            steps += indptr[(s + 1) * J] - indptr[s * J]
            if steps > cap:
                return steps
            continue
        if mode == _MODE_GRAD and nu[s] == 0.0:
            continue
        if mode == _MODE_VALUES:
            for p in range(m_ptr[s], m_ptr[s + 1]):
                pos[m_idx[p]] = p
        for i in range(n):  # the odometer below walks j = 0..J-1 (agent n-1 fastest)
            act[i] = 0
            fbase[i] = toff[i] + obs[i, s] * n_act[i]
        for j in range(J):
            for i in range(n):
                fidx[i] = fbase[i] + act[i]
            pre[0] = 1.0
            for i in range(n):
                pre[i + 1] = pre[i] * theta[fidx[i]]
            row = s * J + j
            steps += indptr[row + 1] - indptr[row]
            if mode == _MODE_VALUES:
                pi = pre[n]
                W[s] += pi * rewards[s, j]
                gp = gamma * pi
                for p in range(indptr[row], indptr[row + 1]):
                    m_data[pos[indices[p]]] += gp * probs[p]
            else:
                q = 0.0
                for p in range(indptr[row], indptr[row + 1]):
                    q += probs[p] * Vk[indices[p]]
                q = nu[s] * (rewards[s, j] + gamma * q)
                suf[n] = 1.0
                for i in range(n - 1, -1, -1):
                    suf[i] = suf[i + 1] * theta[fidx[i]]
                for i in range(n):
                    grad[fidx[i]] += q * pre[i] * suf[i + 1]
            for i in range(n - 1, -1, -1):  # next joint action
                act[i] += 1
                if act[i] < n_act[i]:
                    break
                act[i] = 0
    return steps


@njit(cache=True)
def _walk(lo, hi, mode, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
          rewards, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """Enumerate the depth-k window paths of start states ``lo..hi-1``.

    mode 0: add to ``W`` and ``m_data`` (pattern ``m_ptr``/``m_idx``).
    mode 1: add the partial derivatives to ``grad`` (uses ``Vk`` and ``nu``).
    mode 2: only count path steps; stop once the count exceeds ``cap``.
    Returns the number of path steps walked.
    """
    if k == 1:
        return _k1_rows(lo, hi, mode, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
                        rewards, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap)
    n = strides.shape[0]
    J = rewards.shape[1]
    gk = gamma**k
    pos = np.full(rewards.shape[0] if mode == _MODE_VALUES else 0, -1, np.int64)
    gpow = np.empty(k)
    g = 1.0
    for t in range(k):
        gpow[t] = g
        g *= gamma
    st_state = np.empty(k + 1, np.int64)
    st_wpre = np.empty(k + 1)
    st_gpre = np.empty(k + 1)
    st_nfree = np.empty(k, np.int64)
    st_fagent = np.empty((k, n), np.int64)
    st_fobs = np.empty((k, n), np.int64)
    st_fact = np.empty((k, n), np.int64)
    st_fslot = np.empty((k, n), np.int64)
    st_base = np.empty(k, np.int64)
    st_phi = np.empty(k)
    st_r = np.empty(k)
    st_ptr = np.empty(k, np.int64)
    st_end = np.empty(k, np.int64)
    st_accc = np.empty(k)
    st_accn = np.empty(k)
    memo_obs = np.empty((n, k), np.int64)
    memo_act = np.empty((n, k), np.int64)
    memo_len = np.zeros(n, np.int64)
    fval = np.empty(n)
    pre = np.empty(n + 1)
    suf = np.empty(n + 1)
    steps = 0
    for s0 in range(lo, hi):
        if mode == _MODE_GRAD and nu[s0] == 0.0:
            continue
        if mode == _MODE_VALUES:  # column -> position in row s0 of the pattern of M
            for p in range(m_ptr[s0], m_ptr[s0 + 1]):
                pos[m_idx[p]] = p
        st_state[0] = s0
        st_wpre[0] = 1.0
        st_gpre[0] = 0.0
        _enter_node(0, s0, obs, strides, memo_obs, memo_act, memo_len,
                    st_nfree, st_fagent, st_fobs, st_fact, st_fslot, st_base, st_accn)
        _set_choice(0, s0, J, strides, n_act, theta, toff, indptr, rewards,
                    st_nfree, st_fagent, st_fobs, st_fact, st_base, st_phi, st_r, st_ptr,
                    st_end, st_accc)
        d = 0
        while True:
            if d == k:  # leaf: close the path
                s = st_state[k]
                val = 0.0
                if mode == _MODE_VALUES:
                    w = st_wpre[k]
                    W[s0] += w * st_gpre[k]
                    m_data[pos[s]] += gk * w
                elif mode == _MODE_GRAD:
                    val = st_gpre[k] + gk * Vk[s]
                d -= 1
                st_accc[d] += probs[st_ptr[d]] * val
                st_ptr[d] += 1
                continue
            if st_ptr[d] < st_end[d]:  # descend to the next successor
                t = st_ptr[d]
                c = d + 1
                s = indices[t]
                st_state[c] = s
                st_wpre[c] = st_wpre[d] * st_phi[d] * probs[t]
                st_gpre[c] = st_gpre[d] + gpow[d] * st_r[d]
                steps += 1
                if mode == _MODE_COUNT and steps > cap:
                    return steps
                if c < k:
                    _enter_node(c, s, obs, strides, memo_obs, memo_act, memo_len,
                                st_nfree, st_fagent, st_fobs, st_fact, st_fslot, st_base,
                                st_accn)
                    _set_choice(c, s, J, strides, n_act, theta, toff, indptr, rewards,
                                st_nfree, st_fagent, st_fobs, st_fact, st_base, st_phi,
                                st_r, st_ptr, st_end, st_accc)
                d = c
                continue
            # the current choice of node d is exhausted
            nf = st_nfree[d]
            if mode == _MODE_GRAD and nf > 0:
                base = nu[s0] * st_wpre[d] * st_accc[d]
                for f in range(nf):
                    i = st_fagent[d, f]
                    fval[f] = theta[toff[i] + st_fobs[d, f] * n_act[i] + st_fact[d, f]]
                pre[0] = 1.0
                for f in range(nf):
                    pre[f + 1] = pre[f] * fval[f]
                suf[nf] = 1.0
                for f in range(nf - 1, -1, -1):
                    suf[f] = suf[f + 1] * fval[f]
                for f in range(nf):
                    i = st_fagent[d, f]
                    grad[toff[i] + st_fobs[d, f] * n_act[i] + st_fact[d, f]] += (
                        base * pre[f] * suf[f + 1]
                    )
            st_accn[d] += st_phi[d] * st_accc[d]
            advanced = False
            for f in range(nf - 1, -1, -1):  # odometer over the free agents' actions
                i = st_fagent[d, f]
                if st_fact[d, f] + 1 < n_act[i]:
                    st_fact[d, f] += 1
                    memo_act[i, st_fslot[d, f]] = st_fact[d, f]
                    advanced = True
                    break
                st_fact[d, f] = 0
                memo_act[i, st_fslot[d, f]] = 0
            if advanced:
                _set_choice(d, st_state[d], J, strides, n_act, theta, toff, indptr, rewards,
                            st_nfree, st_fagent, st_fobs, st_fact, st_base, st_phi, st_r,
                            st_ptr, st_end, st_accc)
                continue
            for f in range(nf):  # node exhausted: forget its draws
                memo_len[st_fagent[d, f]] -= 1
            val = st_accn[d]
            if d == 0:
                break
            d -= 1
            st_accc[d] += probs[st_ptr[d]] * val
            st_ptr[d] += 1
    return steps


@njit(parallel=True, cache=True)
def _walk_all(mode, n_chunks, k, gamma, strides, n_act, obs, theta, toff, indptr, indices,
              probs, rewards, Vk, nu, W, m_ptr, m_idx, m_data, n_params):
    """Run :func:`_walk` over all start states in ``n_chunks`` parallel chunks.

    Each chunk owns its start states' entries of ``W`` and ``m_data`` and its own gradient
    row; the rows are summed at the end."""
    N = rewards.shape[0]
    grads = np.zeros((n_chunks, n_params))
    for c in prange(n_chunks):
        lo = c * N // n_chunks
        hi = (c + 1) * N // n_chunks
        _walk(lo, hi, mode, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
              rewards, Vk, nu, W, m_ptr, m_idx, m_data, grads[c], 0)
    return grads.sum(axis=0)


@njit(cache=True)
def _walk_serial(mode, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards, Vk, nu, W,
                 m_ptr, m_idx, m_data, n_params):
    """:func:`_walk` over all start states on the calling thread (small problems: no
    thread start-up cost)."""
    grad = np.zeros(n_params)
    _walk(0, rewards.shape[0], mode, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
          rewards, Vk, nu, W, m_ptr, m_idx, m_data, grad, 0)
    return grad


@njit(cache=True)
def _lu_inplace(A, piv):
    """LU factorisation with partial pivoting, in place (``P A = L U``, unit ``L``)."""
    N = A.shape[0]
    for c in range(N):
        p = c
        big = abs(A[c, c])
        for r in range(c + 1, N):
            if abs(A[r, c]) > big:
                big = abs(A[r, c])
                p = r
        piv[c] = p
        if p != c:
            for q in range(N):
                A[c, q], A[p, q] = A[p, q], A[c, q]
        d = A[c, c]
        if d == 0.0:
            return False
        for r in range(c + 1, N):
            lrc = A[r, c] / d
            A[r, c] = lrc
            if lrc != 0.0:
                for q in range(c + 1, N):
                    A[r, q] -= lrc * A[c, q]
    return True


@njit(cache=True)
def _lu_solve(LU, piv, b, trans):
    """Solve ``A x = b`` (``trans`` False) or ``A^T x = b`` with the factors of :func:`_lu_inplace`."""
    N = LU.shape[0]
    x = b.copy()
    if not trans:
        for c in range(N):
            p = piv[c]
            x[c], x[p] = x[p], x[c]
        for r in range(N):
            acc = x[r]
            for q in range(r):
                acc -= LU[r, q] * x[q]
            x[r] = acc
        for r in range(N - 1, -1, -1):
            acc = x[r]
            for q in range(r + 1, N):
                acc -= LU[r, q] * x[q]
            x[r] = acc / LU[r, r]
    else:  # A^T = U^T L^T P
        for c in range(N):
            x[c] /= LU[c, c]
            xc = x[c]
            for q in range(c + 1, N):
                x[q] -= LU[c, q] * xc
        for c in range(N - 1, -1, -1):
            xc = x[c]
            for q in range(c):
                x[q] -= LU[c, q] * xc
        for c in range(N - 1, -1, -1):
            p = piv[c]
            x[c], x[p] = x[p], x[c]
    return x


@njit(cache=True)
def _fused_small(want_grad, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards, mu,
                 m_ptr, m_idx):
    """Small problems in one call: pass 1, dense ``I - M``, LU, ``V_k``, ``nu``, pass 2.

    Returns ``(V_k, grad, ok)``; ``ok`` is False when ``I - M`` is singular (the caller then
    takes the general route, which reports it)."""
    N = rewards.shape[0]
    W = np.zeros(N)
    m_data = np.zeros(m_idx.size)
    grad = np.zeros(theta.size)
    _walk(0, N, _MODE_VALUES, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards,
          W, W, W, m_ptr, m_idx, m_data, grad, 0)
    A = np.zeros((N, N))
    for r in range(N):
        A[r, r] = 1.0
        for p in range(m_ptr[r], m_ptr[r + 1]):
            A[r, m_idx[p]] -= m_data[p]
    piv = np.empty(N, np.int64)
    if not _lu_inplace(A, piv):
        return W, grad, False
    Vk = _lu_solve(A, piv, W, False)
    if want_grad:
        nu = _lu_solve(A, piv, mu, True)
        _walk(0, N, _MODE_GRAD, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards,
              Vk, nu, W, m_ptr, m_idx, m_data, grad, 0)
    return Vk, grad, True


#: Systems with at most this many states (and serial passes) are done in one compiled call,
#: with a compiled dense LU (partial pivoting) in place of LAPACK.
FUSED_MAX_STATES = 64


#: Enumerations with fewer path steps than this run on one thread.
SERIAL_MAX_PATH_STEPS = 20_000


def _is_serial(mdp: JointMDP, k: int) -> bool:
    """Whether the passes for ``k`` run on one thread (fewer than ``SERIAL_MAX_PATH_STEPS``)."""
    key = ("serial", k, SERIAL_MAX_PATH_STEPS)
    if key not in mdp._cache:  # exact count, but never more than the threshold's worth of walking
        mdp._cache[key] = (estimate_path_steps(mdp, k) < SERIAL_MAX_PATH_STEPS
                           or count_path_steps(mdp, k, SERIAL_MAX_PATH_STEPS) < SERIAL_MAX_PATH_STEPS)
    return mdp._cache[key]


def _static(mdp: JointMDP):
    """The model's arrays in kernel argument order (cached on ``mdp``)."""
    st = mdp._cache.get("kernel_static")
    if st is None:
        st = (mdp.gamma, mdp.action_strides, np.asarray(mdp.n_actions, np.int64), mdp.obs_matrix,
              mdp.indptr, mdp.indices, mdp.probs, mdp.rewards)
        mdp._cache["kernel_static"] = st
    return st


def _run_walk(mdp: JointMDP, k: int, mode: int, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data):
    """Dispatch one enumeration pass to the serial or the parallel kernel."""
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = _static(mdp)
    args = (mode, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards, Vk, nu, W,
            m_ptr, m_idx, m_data, theta.size)
    if _is_serial(mdp, k):
        return _walk_serial(*args)
    return _walk_all(args[0], _n_chunks(mdp.n_states), *args[1:])


# --------------------------------------------------------------------------- python side
def _offsets(mdp: JointMDP) -> np.ndarray:
    """Offset of every agent's table in the flat parameter vector (cached)."""
    toff = mdp._cache.get("theta_offsets")
    if toff is None:
        sizes = [o * a for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)]
        toff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        mdp._cache["theta_offsets"] = toff
    return toff


def _theta_flat(mdp: JointMDP, thetas) -> tuple[np.ndarray, np.ndarray]:
    flat = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in thetas])
    return flat, _offsets(mdp)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer >= 1; got k={k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got k={k}")
    return int(k)


def _edge_counts(mdp: JointMDP) -> sparse.csr_matrix:
    """``C[s, s']``: the number of joint actions that can lead from ``s`` to ``s'`` (cached)."""
    if "edge_counts" not in mdp._cache:
        N, J = mdp.n_states, mdp.n_joint_actions
        agg = sparse.csr_matrix(
            (np.ones(N * J), (np.repeat(np.arange(N), J), np.arange(N * J))), shape=(N, N * J)
        )
        mdp._cache["edge_counts"] = (agg @ (mdp.transition_matrix() != 0).astype(np.float64)).tocsr()
    return mdp._cache["edge_counts"]


def _m_pattern(mdp: JointMDP, k: int):
    """Structural pattern of M: states reachable in exactly k steps (superset of M's support)."""
    key = ("m_pattern", k)
    if key not in mdp._cache:
        N = mdp.n_states
        A = _edge_counts(mdp).copy()
        A.data[:] = 1.0
        R = sparse.identity(N, format="csr")
        for _ in range(k):
            R = (R @ A).tocsr()
            R.data[:] = 1.0
        R.sort_indices()
        mdp._cache[key] = (R.indptr.astype(np.int64), R.indices.astype(np.int64))
    return mdp._cache[key]


def estimate_path_steps(mdp: JointMDP, k: int, *, max_path_steps: int | None = None) -> int:
    r"""Number of path steps one enumeration pass walks for window length ``k``.

    First a cheap upper bound that ignores the memo: with ``C[s, s']`` the number of joint
    actions leading from ``s`` to ``s'``, the walk takes at most
    :math:`\sum_{t=1}^{k} \mathbf 1^\top C^t \mathbf 1` steps. If that bound exceeds the
    budget, the steps are counted exactly (the structure does not depend on ``theta``),
    stopping as soon as the count passes the budget. Results are cached on ``mdp``.

    Returns
    -------
    int
        The bound when it is within budget, else the exact count (or budget + 1 when
        the count was stopped).
    """
    k = _check_k(k)
    budget = DEFAULT_MAX_PATH_STEPS if max_path_steps is None else int(max_path_steps)
    key = ("path_steps", k)
    cached = mdp._cache.get(key)
    if cached is not None and (cached[1] or cached[0] <= budget):
        return cached[0]
    N = mdp.n_states
    C = _edge_counts(mdp)
    x = np.ones(N)
    bound = 0.0
    for _ in range(k):
        x = C @ x
        bound += float(x.sum())
    if bound <= budget:
        mdp._cache[key] = (int(bound), False)
        return int(bound)
    steps = count_path_steps(mdp, k, budget)
    exact = steps <= budget
    mdp._cache[key] = (int(steps), exact)
    return int(steps)


def count_path_steps(mdp: JointMDP, k: int, cap: int = 10**12) -> int:
    """Exact number of path steps one enumeration pass walks (stops counting above ``cap``)."""
    k = _check_k(k)
    N = mdp.n_states
    theta, toff = _theta_flat(mdp, [np.ones((o, a)) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = _static(mdp)
    return int(_walk(0, N, _MODE_COUNT, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs, rewards,
                     np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(N + 1, np.int64), np.zeros(0, np.int64),
                     np.zeros(0), np.zeros(theta.size), int(cap)))


def _check_budget(mdp: JointMDP, k: int, max_path_steps: int | None) -> None:
    budget = DEFAULT_MAX_PATH_STEPS if max_path_steps is None else int(max_path_steps)
    steps = estimate_path_steps(mdp, k, max_path_steps=budget)
    if steps > budget:
        raise ValueError(
            f"k={k} path enumeration on {mdp.n_states} states needs more than {steps:,} path "
            f"steps per pass, over the budget max_path_steps={budget:,}; lower k, or raise the "
            f"budget with max_path_steps=... (or the MARL_KSTEP_MAX_PATH_STEPS environment "
            f"variable) if you can afford roughly {steps / 5e7:.0f} s per pass"
        )


def _n_chunks(n_states: int) -> int:
    import numba

    return max(1, min(n_states, 8 * numba.get_num_threads()))


#: Systems with at most this many states are solved by sparse LU (SuperLU); larger ones by a
#: compiled BiCGSTAB (``I - M`` is well conditioned: cond <= (1 + gamma^k)/(1 - gamma^k) on the
#: simplex), the value and the occupancy systems side by side on two threads, falling back to
#: sparse LU for a system whose true relative residual does not reach ``_ITER_RTOL``. (Measured:
#: BiCGSTAB beats dense LAPACK LU from about 80 states on, and a multithreaded BLAS that keeps
#: spinning after a factorisation slows the parallel passes and solves that follow it.)
#: Small serial problems never get here: they take the one-call path (``FUSED_MAX_STATES``).
DIRECT_SOLVE_MAX_STATES = 64
_ITER_RTOL = 1e-13


@njit(cache=True)
def _i_minus_m(ptr, idx, dat, x, y, w):
    """``y = (I - M) x`` for ``M`` in CSR; returns ``(w . y, y . y, y . x)`` (fused dots)."""
    wy = 0.0
    yy = 0.0
    yx = 0.0
    for r in range(ptr.shape[0] - 1):
        acc = x[r]
        for p in range(ptr[r], ptr[r + 1]):
            acc -= dat[p] * x[idx[p]]
        y[r] = acc
        wy += w[r] * acc
        yy += acc * acc
        yx += acc * x[r]
    return wy, yy, yx


@njit(cache=True)
def _bicgstab(ptr, idx, dat, b, rtol, maxit):
    """BiCGSTAB (van der Vorst 1992) for ``(I - M) x = b``, started at ``x = b``.

    Stops when the true residual satisfies ``||b - (I - M) x|| <= rtol ||b||``; restarts
    from the true residual on a breakdown or when the recursive residual drifts. The
    inner products are fused into the mat-vecs and the updates. Returns ``(x, converged)``."""
    n = b.shape[0]
    x = b.copy()
    bn = np.sqrt(np.dot(b, b))
    if bn == 0.0:
        return np.zeros(n), True
    tol2 = (rtol * bn) ** 2
    r = np.empty(n)
    rh = np.empty(n)
    p = np.zeros(n)
    v = np.zeros(n)
    s = np.empty(n)
    t = np.empty(n)
    it = 0
    while it < maxit:
        _i_minus_m(ptr, idx, dat, x, t, t)  # (re)start from the true residual
        rr = 0.0
        for i in range(n):
            r[i] = b[i] - t[i]
            rh[i] = r[i]
            p[i] = 0.0
            v[i] = 0.0
            rr += r[i] * r[i]
        if rr <= tol2:
            return x, True
        rho1 = rr  # rh . r
        rho = alpha = om = 1.0
        while it < maxit:
            it += 1
            if rho1 == 0.0 or om == 0.0:
                break
            beta = (rho1 / rho) * (alpha / om)
            for i in range(n):
                p[i] = r[i] + beta * (p[i] - om * v[i])
            d = _i_minus_m(ptr, idx, dat, p, v, rh)[0]
            if d == 0.0:
                break
            alpha = rho1 / d
            for i in range(n):
                s[i] = r[i] - alpha * v[i]
            _, tt, ts = _i_minus_m(ptr, idx, dat, s, t, s)
            om = ts / tt if tt > 0.0 else 0.0
            rho = rho1
            rr = 0.0
            rho1 = 0.0
            for i in range(n):
                x[i] += alpha * p[i] + om * s[i]
                ri = s[i] - om * t[i]
                r[i] = ri
                rr += ri * ri
                rho1 += rh[i] * ri
            if rr <= tol2:
                break
    _i_minus_m(ptr, idx, dat, x, t, t)
    res = 0.0
    for i in range(n):
        res += (b[i] - t[i]) ** 2
    return x, res <= tol2


@njit(cache=True)
def _csr_transpose(ptr, idx, dat, n):
    """CSR of ``M^T`` (counting sort; columns come out sorted)."""
    tptr = np.zeros(n + 1, np.int64)
    for p in range(idx.shape[0]):
        tptr[idx[p] + 1] += 1
    for c in range(n):
        tptr[c + 1] += tptr[c]
    fill = tptr[:-1].copy()
    tidx = np.empty(idx.shape[0], np.int64)
    tdat = np.empty(idx.shape[0])
    for r in range(n):
        for p in range(ptr[r], ptr[r + 1]):
            q = fill[idx[p]]
            tidx[q] = r
            tdat[q] = dat[p]
            fill[idx[p]] = q + 1
    return tptr, tidx, tdat


@njit(parallel=True, cache=True)
def _bicgstab_pair(ptr, idx, dat, b, c, both, rtol, maxit):
    """Solve ``(I - M) x = b`` and, if ``both``, ``(I - M)^T y = c``, one system per thread.

    Returns ``(out, ok)``: ``out[0] = x``, ``out[1] = y``; ``ok[t]`` whether system ``t``
    reached the tolerance."""
    n = b.shape[0]
    if both:
        tptr, tidx, tdat = _csr_transpose(ptr, idx, dat, n)
    else:
        tptr, tidx, tdat = ptr, idx, dat
    out = np.zeros((2, n))
    ok = np.ones(2, np.bool_)
    n_tasks = 2 if both else 1
    for task in prange(n_tasks):
        if task == 0:
            xs, conv = _bicgstab(ptr, idx, dat, b, rtol, maxit)
        else:
            xs, conv = _bicgstab(tptr, tidx, tdat, c, rtol, maxit)
        out[task, :] = xs
        ok[task] = conv
    return out, ok


class _Solver:
    """Solves ``(I - M) x = b`` and ``(I - M)^T y = c``; ``M`` given by its CSR arrays."""

    def __init__(self, m_ptr, m_idx, m_data):
        self.csr = (m_ptr, m_idx, m_data)
        self.lu = splu(self._matrix().tocsc()) if m_ptr.size - 1 <= DIRECT_SOLVE_MAX_STATES else None

    def _matrix(self) -> sparse.csr_matrix:
        m_ptr, m_idx, m_data = self.csr
        N = m_ptr.size - 1
        return (sparse.identity(N, format="csr") - sparse.csr_matrix((m_data, m_idx, m_ptr), shape=(N, N))).tocsr()

    def _direct(self, b: np.ndarray, trans: str) -> np.ndarray:
        if self.lu is None:
            self.lu = splu(self._matrix().tocsc())
        return self.lu.solve(b, trans=trans)

    def solve(self, b: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``x`` with ``(I - M) x = b`` and, unless ``c`` is None, ``y`` with ``(I - M)^T y = c``."""
        b = np.ascontiguousarray(b, dtype=np.float64)
        if self.lu is not None:
            return self._direct(b, "N"), (None if c is None else self._direct(c, "T"))
        both = c is not None
        c = np.ascontiguousarray(b if c is None else c, dtype=np.float64)
        out, ok = _bicgstab_pair(*self.csr, b, c, both, _ITER_RTOL, 10 * b.size)
        x = out[0] if ok[0] else self._direct(b, "N")
        y = None if not both else (out[1] if ok[1] else self._direct(c, "T"))
        return x, y


def _pass1(mdp: JointMDP, theta: np.ndarray, toff: np.ndarray, k: int, want_nu: bool):
    """Pass 1 and the solves: returns ``(V_k, nu_k or None)``."""
    N = mdp.n_states
    m_ptr, m_idx = _m_pattern(mdp, k)
    W = np.zeros(N)
    m_data = np.zeros(m_idx.size)
    _run_walk(mdp, k, _MODE_VALUES, theta, toff, W, W, W, m_ptr, m_idx, m_data)
    solver = _Solver(m_ptr, m_idx, m_data)
    return solver.solve(W, np.asarray(mdp.mu, dtype=np.float64) if want_nu else None)


def _compute(mdp: JointMDP, theta: np.ndarray, toff: np.ndarray, k: int, want_grad: bool):
    """``(V_k, flat gradient or None)`` on ``mdp``: one compiled call for small serial
    problems, else pass 1, the solves and pass 2 as separate steps."""
    if mdp.n_states <= FUSED_MAX_STATES and _is_serial(mdp, k):
        gamma, strides, n_act, obs, indptr, indices, probs, rewards = _static(mdp)
        m_ptr, m_idx = _m_pattern(mdp, k)
        Vk, grad, ok = _fused_small(want_grad, k, gamma, strides, n_act, obs, theta, toff, indptr, indices, probs,
                                    rewards, mdp.mu, m_ptr, m_idx)
        if ok:
            return Vk, (grad if want_grad else None)
    Vk, nu = _pass1(mdp, theta, toff, k, want_grad)
    if not want_grad:
        return Vk, None
    m_ptr, m_idx = _m_pattern(mdp, k)
    grad = _run_walk(mdp, k, _MODE_GRAD, theta, toff, Vk, nu, np.zeros(mdp.n_states), m_ptr, m_idx, np.zeros(0))
    return Vk, grad


def _split(mdp: JointMDP, flat: np.ndarray) -> list[np.ndarray]:
    out, pos = [], 0
    for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True):
        out.append(flat[pos : pos + o * a].reshape(o, a).copy())
        pos += o * a
    return out


def _prepare(mdp: JointMDP, policy, k, max_path_steps, lump):
    """Check the inputs; return (model to walk, k, flat theta, offsets, block map or None)."""
    from .policy import Policy

    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    if not isinstance(policy, Policy):
        raise ValueError(
            f"policy must be a marl_kstep.Policy (see Policy.from_arrays); got {type(policy).__name__}"
        )
    policy.check_compatible(mdp)
    k = _check_k(k)
    theta, toff = _theta_flat(mdp, policy.theta)
    block = None
    if lump:
        lumping = mdp.lumped()
        if not lumping.is_trivial:
            mdp, block = lumping.quotient, lumping.block
    _check_budget(mdp, k, max_path_steps)
    return mdp, k, theta, toff, block


def value_vector(
    mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None, lump: bool = True
) -> np.ndarray:
    r"""The k-step value :math:`V_k = (I - M)^{-1} W`, shape ``(N,)`` (SPEC §3).

    For ``k = 1`` (or a deterministic policy) this is the ordinary value
    :math:`V = (I - \gamma P_\pi)^{-1} r_\pi`. With ``lump=True`` (default) the work is
    done on the exact bisimulation quotient :meth:`JointMDP.lumped` and expanded back.
    """
    work, k, theta, toff, block = _prepare(mdp, policy, k, max_path_steps, lump)
    Vk = _compute(work, theta, toff, k, False)[0]
    return Vk if block is None else Vk[block]


def value(mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None, lump: bool = True) -> float:
    r"""The k-step objective :math:`J_k(\theta) = \mu^\top V_k` (SPEC §3)."""
    work, k, theta, toff, _ = _prepare(mdp, policy, k, max_path_steps, lump)
    return float(work.mu @ _compute(work, theta, toff, k, False)[0])


def value_and_grad(
    mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None, lump: bool = True
) -> tuple[float, list[np.ndarray]]:
    r"""The k-step objective and its exact gradient (SPEC §3).

    Returns
    -------
    J_k : float
        :math:`\mu^\top V_k`.
    grad : list of ndarray
        ``grad[i][o, a]`` = :math:`\partial J_k / \partial \theta_i[o, a]`, the partial
        derivative with respect to every entry (rows not renormalised).

    Raises
    ------
    ValueError
        On a policy that does not fit ``mdp``, ``k < 1``, or an enumeration over the
        ``max_path_steps`` budget (default :data:`DEFAULT_MAX_PATH_STEPS`).

    Notes
    -----
    With ``lump=True`` (default) the passes run on the bisimulation quotient
    (:meth:`JointMDP.lumped`): states that no restricted policy can tell apart are merged,
    which changes neither :math:`J_k` nor any partial derivative (only rounding), and
    the path budget applies to the quotient. ``lump=False`` walks the full model.
    """
    J_k, grad, _ = values_and_grad(mdp, policy, k, max_path_steps=max_path_steps, lump=lump)
    return J_k, grad


def values_and_grad(
    mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None, lump: bool = True
) -> tuple[float, list[np.ndarray], np.ndarray]:
    """Like :func:`value_and_grad` but also returns the value vector ``V_k`` (shape ``(N,)``)."""
    mdp, k, theta, toff, block = _prepare(mdp, policy, k, max_path_steps, lump)
    Vk, grad = _compute(mdp, theta, toff, k, True)
    return float(mdp.mu @ Vk), _split(mdp, grad), (Vk if block is None else Vk[block])
