r"""Numba path walks over the depth-k window paths (SPEC §3): the enumeration passes.

Private to :mod:`marl_kstep.estimators`. Every kernel takes the model's static arrays as one
tuple ``sm = (gamma, strides, n_act, obs, indptr, indices, probs, rewards)`` (see
:func:`static_arrays`), the flat parameter vector ``theta`` with the per-agent offsets
``toff``, and writes into caller-allocated outputs; no kernel re-checks its inputs.

* :func:`_k1_rows`, :func:`_k2_rows` -- the passes for ``k = 1`` and ``k = 2`` as fixed
  nested loops (the common windows; about 4x the general walk's speed at k = 2), and
  :func:`_k3_values` and :func:`_k3_grad`, the passes for ``k = 3``; :func:`walk_kind`
  picks the loops, and each (kind, pass) is compiled only when first used;
* :func:`walk_values` -- pass 1: :math:`W(s)` and the sparse :math:`M(s, \cdot)` on a
  given pattern;
* :func:`walk_grad` -- pass 2: :math:`\partial J_k / \partial \theta_i[o, a]` given
  :math:`V_k` and :math:`\nu_k`;
* :func:`count_steps` -- the exact number of path steps one pass walks (stops above a cap);
* :func:`walk_values_parallel`, :func:`walk_grad_parallel` -- the same over chunks of start
  states in parallel (each chunk owns its rows of ``W``/``M`` and its own gradient row).

A path has weight :math:`p = T \prod f` (transition probabilities times the entries drawn at
first visits) and return :math:`G = \sum_{t<k} \gamma^t r_t + \gamma^k V_k(s_k)`. Pass 2
accumulates bottom-up the subtree sums :math:`H(\text{node})` and credits each factor once at
the node that draws it with ``nu * (weight above) * (product of the node's other new factors)
* H``, using leave-one-out products (never divisions), so zero probabilities are exact.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

__all__ = ["static_arrays", "walk_kind", "values_kind", "grad_kind", "walk_values", "walk_grad", "count_steps",
           "walk_values_parallel", "walk_grad_parallel"]

_MODE_VALUES, _MODE_GRAD, _MODE_COUNT = 0, 1, 2  # the three passes (compile-time constants of _walk_kind)
_KIND_GENERAL, _KIND_K1, _KIND_K2, _KIND_K3 = 0, 1, 2, 3  # which loops walk (see walk_kind)
#: The kind travels as the *type* of an argument: a numpy integer scalar of its own width, so
#: every kind is its own compiled specialisation, cached like any other, and chosen at typing
#: time (a ``numba.literally`` argument would instead be retyped on every call from Python).
_KIND_TAG = {_KIND_K1: np.int8(_KIND_K1), _KIND_K2: np.int16(_KIND_K2), _KIND_K3: np.int32(_KIND_K3),
             _KIND_GENERAL: np.int64(_KIND_GENERAL)}
_KIND_OF_BITWIDTH = {8: _KIND_K1, 16: _KIND_K2, 32: _KIND_K3, 64: _KIND_GENERAL}


def static_arrays(mdp) -> tuple:
    """The model's arrays in kernel order: ``(gamma, strides, n_act, obs, indptr, indices, probs, rewards)``."""
    return (float(mdp.gamma), mdp.action_strides, np.asarray(mdp.n_actions, np.int64), mdp.obs_matrix,
            mdp.indptr, mdp.indices, mdp.probs, mdp.rewards)


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
def _k1_rows(lo, hi, mode, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    r"""The passes for ``k = 1``, row by row (no stack, no memo: every agent is free).

    mode 0: :math:`W(s) = \sum_j \pi(j|s) r(s, j)` and
    :math:`M(s, s') = \gamma \sum_j \pi(j|s) P(s'|s, j)`;
    mode 1: :math:`\partial J / \partial\theta_i[\phi_i(s), a_i] \mathrel{+}= \nu(s)
    \prod_{l \ne i} \theta_l[\phi_l(s), a_l] \, (r(s, j) + \gamma \sum_{s'} P(s'|s,j) V(s'))`
    (leave-one-out products, no divisions); mode 2: count. Returns the path steps."""
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = sm
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
def _k2_rows(lo, hi, mode, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad):
    r"""The passes for ``k = 2`` (modes 0 and 1 of :func:`_walk`), as fixed nested loops.

    Depth 0: every agent draws (odometer over the joint actions ``j0``, agent ``n-1``
    fastest). Depth 1, in successor ``s1``: agent ``i`` repeats its depth-0 action when
    :math:`\phi_i(s_1) = \phi_i(s_0)` and draws again otherwise (odometer over the agents that
    draw). Mode 1 credits each factor once, with leave-one-out products: a depth-1 factor
    gets :math:`\nu(s_0) f_0 p_1 \prod_{\text{other new}} \theta \cdot H_1`, a depth-0 factor
    :math:`\nu(s_0) \prod_{l \ne i} \theta_l \cdot H_0`, where :math:`H` are the subtree sums.
    Same values as the general walk; no stack, no memo search, no per-node calls. Returns
    the path steps."""
    numba.literally(mode)
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = sm
    n = strides.shape[0]
    J = rewards.shape[1]
    N = rewards.shape[0]
    g2 = gamma * gamma
    a0 = np.empty(n, np.int64)
    base0 = np.empty(n, np.int64)
    v0 = np.empty(n)
    pre = np.empty(n + 1)
    suf = np.empty(n + 1)
    free = np.empty(n, np.int64)
    base1 = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    v1 = np.empty(n)
    cj = np.empty(J if mode == _MODE_VALUES else 0, np.int64)  # depth-1 choice table (pass 1)
    cf = np.empty(J if mode == _MODE_VALUES else 0)
    pos = np.full(N if mode == _MODE_VALUES else 0, -1, np.int64)
    steps = 0
    for s0 in range(lo, hi):
        if mode == _MODE_GRAD and nu[s0] == 0.0:
            continue
        if mode == _MODE_VALUES:
            for p in range(m_ptr[s0], m_ptr[s0 + 1]):
                pos[m_idx[p]] = p
        for i in range(n):
            a0[i] = 0
            base0[i] = toff[i] + obs[i, s0] * n_act[i]
        wacc = 0.0
        for j0 in range(J):
            f0 = 1.0
            for i in range(n):
                v0[i] = theta[base0[i] + a0[i]]
                f0 *= v0[i]
            r0 = rewards[s0, j0]
            row0 = s0 * J + j0
            h0 = 0.0
            for e in range(indptr[row0], indptr[row0 + 1]):
                s1 = indices[e]
                p1 = probs[e]
                steps += 1
                nf = 0
                jfix = 0
                for i in range(n):
                    o = obs[i, s1]
                    if o == obs[i, s0]:
                        jfix += a0[i] * strides[i]
                    else:
                        free[nf] = i
                        base1[nf] = toff[i] + o * n_act[i]
                        b[nf] = 0
                        nf += 1
                w1 = f0 * p1
                h1 = 0.0
                if mode == _MODE_VALUES:
                    # the depth-1 choices as a table (joint action, product of new factors),
                    # built by expanding one drawing agent at a time (the last one fastest)
                    nc = 1
                    cj[0] = jfix
                    cf[0] = 1.0
                    for f in range(nf):
                        i = free[f]
                        A = n_act[i]
                        st = strides[i]
                        bs = base1[f]
                        for c in range(nc - 1, -1, -1):
                            jc = cj[c]
                            fc = cf[c]
                            for a in range(A - 1, -1, -1):
                                cj[c * A + a] = jc + a * st
                                cf[c * A + a] = fc * theta[bs + a]
                        nc *= A
                    for c in range(nc):
                        j1 = cj[c]
                        ret = r0 + gamma * rewards[s1, j1]
                        row1 = s1 * J + j1
                        steps += indptr[row1 + 1] - indptr[row1]
                        w = w1 * cf[c]
                        for u in range(indptr[row1], indptr[row1 + 1]):
                            wp = w * probs[u]
                            wacc += wp * ret
                            m_data[pos[indices[u]]] += g2 * wp
                    continue
                while True:
                    j1 = jfix
                    f1 = 1.0
                    for f in range(nf):
                        v1[f] = theta[base1[f] + b[f]]
                        f1 *= v1[f]
                        j1 += b[f] * strides[free[f]]
                    ret = r0 + gamma * rewards[s1, j1]
                    row1 = s1 * J + j1
                    steps += indptr[row1 + 1] - indptr[row1]
                    h = 0.0
                    for u in range(indptr[row1], indptr[row1 + 1]):
                        h += probs[u] * (ret + g2 * Vk[indices[u]])
                    c = nu[s0] * w1 * h
                    if nf == 1:
                        grad[base1[0] + b[0]] += c
                    elif nf == 2:
                        grad[base1[0] + b[0]] += c * v1[1]
                        grad[base1[1] + b[1]] += c * v1[0]
                    elif nf > 2:
                        pre[0] = 1.0
                        for f in range(nf):
                            pre[f + 1] = pre[f] * v1[f]
                        suf[nf] = 1.0
                        for f in range(nf - 1, -1, -1):
                            suf[f] = suf[f + 1] * v1[f]
                        for f in range(nf):
                            grad[base1[f] + b[f]] += c * pre[f] * suf[f + 1]
                    h1 += f1 * h
                    f = nf - 1  # next choice of the agents that draw at depth 1
                    while f >= 0:
                        b[f] += 1
                        if b[f] < n_act[free[f]]:
                            break
                        b[f] = 0
                        f -= 1
                    if f < 0:
                        break
                h0 += p1 * h1
            if mode == _MODE_GRAD:
                pre[0] = 1.0
                for i in range(n):
                    pre[i + 1] = pre[i] * v0[i]
                suf[n] = 1.0
                for i in range(n - 1, -1, -1):
                    suf[i] = suf[i + 1] * v0[i]
                c = nu[s0] * h0
                for i in range(n):
                    grad[base0[i] + a0[i]] += c * pre[i] * suf[i + 1]
            for i in range(n - 1, -1, -1):  # next joint action at depth 0
                a0[i] += 1
                if a0[i] < n_act[i]:
                    break
                a0[i] = 0
        if mode == _MODE_VALUES:
            W[s0] += wacc
    return steps


@njit(cache=True)
def _k3_values(lo, hi, sm, theta, toff, W, m_ptr, m_idx, m_data):
    r"""Pass 1 for ``k = 3`` (:math:`W` and :math:`M`) as fixed nested loops.

    Depth 0: every agent draws (odometer over ``j0``). Depth 1, in ``s1``: agent ``i``
    repeats its depth-0 action when :math:`\phi_i(s_1) = \phi_i(s_0)`, else draws (odometer
    over the agents that draw; ``act1`` holds every agent's depth-1 action). Depth 2, in
    ``s2``: agent ``i`` plays its depth-0 action when :math:`\phi_i(s_2) = \phi_i(s_0)`, its
    depth-1 action when :math:`\phi_i(s_2) = \phi_i(s_1)`, and draws otherwise; then one flat
    leaf loop over ``s3``. Same values as the general walk (to rounding); no stack, no memo
    search, no per-node calls. Returns the path steps. Pass 2 at ``k = 3``: :func:`_k3_grad`."""
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = sm
    n = strides.shape[0]
    J = rewards.shape[1]
    N = rewards.shape[0]
    g2 = gamma * gamma
    g3 = g2 * gamma
    a0 = np.zeros(n, np.int64)
    base0 = np.empty(n, np.int64)
    act1 = np.empty(n, np.int64)
    free1 = np.empty(n, np.int64)
    base1 = np.empty(n, np.int64)
    b1 = np.zeros(n, np.int64)
    free2 = np.empty(n, np.int64)
    base2 = np.empty(n, np.int64)
    b2 = np.zeros(n, np.int64)
    pos = np.full(N, -1, np.int64)
    steps = 0
    for s0 in range(lo, hi):
        for p in range(m_ptr[s0], m_ptr[s0 + 1]):
            pos[m_idx[p]] = p
        for i in range(n):
            a0[i] = 0
            base0[i] = toff[i] + obs[i, s0] * n_act[i]
        wacc = 0.0
        for j0 in range(J):
            f0 = 1.0
            for i in range(n):
                f0 *= theta[base0[i] + a0[i]]
            r0 = rewards[s0, j0]
            row0 = s0 * J + j0
            for e1 in range(indptr[row0], indptr[row0 + 1]):
                s1 = indices[e1]
                steps += 1
                nf1 = 0
                for i in range(n):
                    o = obs[i, s1]
                    act1[i] = a0[i]
                    if o != obs[i, s0]:
                        free1[nf1] = i
                        base1[nf1] = toff[i] + o * n_act[i]
                        b1[nf1] = 0
                        nf1 += 1
                w1 = f0 * probs[e1]
                while True:  # the depth-1 choices
                    f1 = 1.0
                    for f in range(nf1):
                        act1[free1[f]] = b1[f]
                        f1 *= theta[base1[f] + b1[f]]
                    j1 = 0
                    for i in range(n):
                        j1 += act1[i] * strides[i]
                    ret1 = r0 + gamma * rewards[s1, j1]
                    row1 = s1 * J + j1
                    w1c = w1 * f1
                    for e2 in range(indptr[row1], indptr[row1 + 1]):
                        s2 = indices[e2]
                        steps += 1
                        nf2 = 0
                        jfix2 = 0
                        for i in range(n):
                            o = obs[i, s2]
                            if o == obs[i, s0]:
                                jfix2 += a0[i] * strides[i]
                            elif o == obs[i, s1]:
                                jfix2 += act1[i] * strides[i]
                            else:
                                free2[nf2] = i
                                base2[nf2] = toff[i] + o * n_act[i]
                                b2[nf2] = 0
                                nf2 += 1
                        w2 = w1c * probs[e2]
                        while True:  # the depth-2 choices, then the leaves
                            j2 = jfix2
                            w = w2
                            for f in range(nf2):
                                w *= theta[base2[f] + b2[f]]
                                j2 += b2[f] * strides[free2[f]]
                            ret2 = ret1 + g2 * rewards[s2, j2]
                            row2 = s2 * J + j2
                            steps += indptr[row2 + 1] - indptr[row2]
                            for u in range(indptr[row2], indptr[row2 + 1]):
                                wp = w * probs[u]
                                wacc += wp * ret2
                                m_data[pos[indices[u]]] += g3 * wp
                            f = nf2 - 1
                            while f >= 0:
                                b2[f] += 1
                                if b2[f] < n_act[free2[f]]:
                                    break
                                b2[f] = 0
                                f -= 1
                            if f < 0:
                                break
                    f = nf1 - 1
                    while f >= 0:
                        b1[f] += 1
                        if b1[f] < n_act[free1[f]]:
                            break
                        b1[f] = 0
                        f -= 1
                    if f < 0:
                        break
            for i in range(n - 1, -1, -1):  # next joint action at depth 0
                a0[i] += 1
                if a0[i] < n_act[i]:
                    break
                a0[i] = 0
        W[s0] += wacc
    return steps


@njit(cache=True)
def _k3_grad(lo, hi, sm, theta, toff, Vk, nu, grad):
    r"""Pass 2 for ``k = 3`` (:math:`\partial J_3 / \partial \theta`) as fixed nested loops.

    The loops of :func:`_k3_values`, bottom-up: for a depth-2 choice
    :math:`H_2 = \sum_{s_3} P(s_3|s_2, j_2) (r_0 + \gamma r_1 + \gamma^2 r_2 + \gamma^3 V_3(s_3))`,
    for a depth-1 choice :math:`H_1 = \sum_{s_2} P(s_2|s_1, j_1) \sum_{\text{depth-2 choices}} f_2 H_2`,
    for a joint action :math:`H_0 = \sum_{s_1} P(s_1|s_0, j_0) \sum_{\text{depth-1 choices}} f_1 H_1`
    (:math:`f_d`: the product of the factors drawn at depth ``d``). Each factor is credited
    once, at the choice that draws it, with :math:`\nu(s_0)` times the weight above
    (:math:`1`, :math:`f_0 p_1`, :math:`f_0 p_1 f_1 p_2`) times the product of the choice's
    other new factors times its :math:`H` (leave-one-out products, no divisions). Same values
    as the general walk (to rounding); 2.2-3.3x its speed (``benchmarks/k3_pass2_calls.py``).

    The credits are written out at each depth on purpose: the same loops calling one small
    compiled helper for them (arrays as arguments, once per credited choice) ran 3.2-7.3x
    slower than this (``inline="always"`` too), slower than the general walk; the stores
    themselves cost little (without the depth-2 credits: 0.82-1.0x). Returns the path steps."""
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = sm
    n = strides.shape[0]
    J = rewards.shape[1]
    g2 = gamma * gamma
    g3 = g2 * gamma
    a0 = np.zeros(n, np.int64)
    base0 = np.empty(n, np.int64)
    idx0 = np.empty(n, np.int64)
    v0 = np.empty(n)
    act1 = np.empty(n, np.int64)
    free1 = np.empty(n, np.int64)
    base1 = np.empty(n, np.int64)
    b1 = np.zeros(n, np.int64)
    idx1 = np.empty(n, np.int64)
    v1 = np.empty(n)
    free2 = np.empty(n, np.int64)
    base2 = np.empty(n, np.int64)
    b2 = np.zeros(n, np.int64)
    idx2 = np.empty(n, np.int64)
    v2 = np.empty(n)
    pre = np.empty(n + 1)
    suf = np.empty(n + 1)
    steps = 0
    for s0 in range(lo, hi):
        n0 = nu[s0]
        if n0 == 0.0:
            continue
        for i in range(n):
            a0[i] = 0
            base0[i] = toff[i] + obs[i, s0] * n_act[i]
        for j0 in range(J):
            f0 = 1.0
            for i in range(n):
                idx0[i] = base0[i] + a0[i]
                v0[i] = theta[idx0[i]]
                f0 *= v0[i]
            r0 = rewards[s0, j0]
            row0 = s0 * J + j0
            h0 = 0.0
            for e1 in range(indptr[row0], indptr[row0 + 1]):
                s1 = indices[e1]
                p1 = probs[e1]
                steps += 1
                nf1 = 0
                for i in range(n):
                    o = obs[i, s1]
                    act1[i] = a0[i]
                    if o != obs[i, s0]:
                        free1[nf1] = i
                        base1[nf1] = toff[i] + o * n_act[i]
                        b1[nf1] = 0
                        nf1 += 1
                w1 = f0 * p1
                h1 = 0.0
                while True:  # the depth-1 choices
                    f1 = 1.0
                    for f in range(nf1):
                        act1[free1[f]] = b1[f]
                        idx1[f] = base1[f] + b1[f]
                        v1[f] = theta[idx1[f]]
                        f1 *= v1[f]
                    j1 = 0
                    for i in range(n):
                        j1 += act1[i] * strides[i]
                    ret1 = r0 + gamma * rewards[s1, j1]
                    row1 = s1 * J + j1
                    w1c = w1 * f1
                    hc1 = 0.0
                    for e2 in range(indptr[row1], indptr[row1 + 1]):
                        s2 = indices[e2]
                        p2 = probs[e2]
                        steps += 1
                        nf2 = 0
                        jfix2 = 0
                        for i in range(n):
                            o = obs[i, s2]
                            if o == obs[i, s0]:
                                jfix2 += a0[i] * strides[i]
                            elif o == obs[i, s1]:
                                jfix2 += act1[i] * strides[i]
                            else:
                                free2[nf2] = i
                                base2[nf2] = toff[i] + o * n_act[i]
                                b2[nf2] = 0
                                nf2 += 1
                        c2 = n0 * w1c * p2
                        h2 = 0.0
                        while True:  # the depth-2 choices, then the leaves
                            j2 = jfix2
                            f2 = 1.0
                            for f in range(nf2):
                                idx2[f] = base2[f] + b2[f]
                                v2[f] = theta[idx2[f]]
                                f2 *= v2[f]
                                j2 += b2[f] * strides[free2[f]]
                            ret2 = ret1 + g2 * rewards[s2, j2]
                            row2 = s2 * J + j2
                            steps += indptr[row2 + 1] - indptr[row2]
                            h = 0.0
                            for u in range(indptr[row2], indptr[row2 + 1]):
                                h += probs[u] * (ret2 + g3 * Vk[indices[u]])
                            c = c2 * h
                            if nf2 == 1:
                                grad[idx2[0]] += c
                            elif nf2 == 2:
                                grad[idx2[0]] += c * v2[1]
                                grad[idx2[1]] += c * v2[0]
                            elif nf2 > 2:
                                pre[0] = 1.0
                                for f in range(nf2):
                                    pre[f + 1] = pre[f] * v2[f]
                                suf[nf2] = 1.0
                                for f in range(nf2 - 1, -1, -1):
                                    suf[f] = suf[f + 1] * v2[f]
                                for f in range(nf2):
                                    grad[idx2[f]] += c * pre[f] * suf[f + 1]
                            h2 += f2 * h
                            f = nf2 - 1
                            while f >= 0:
                                b2[f] += 1
                                if b2[f] < n_act[free2[f]]:
                                    break
                                b2[f] = 0
                                f -= 1
                            if f < 0:
                                break
                        hc1 += p2 * h2
                    c = n0 * w1 * hc1
                    if nf1 == 1:
                        grad[idx1[0]] += c
                    elif nf1 == 2:
                        grad[idx1[0]] += c * v1[1]
                        grad[idx1[1]] += c * v1[0]
                    elif nf1 > 2:
                        pre[0] = 1.0
                        for f in range(nf1):
                            pre[f + 1] = pre[f] * v1[f]
                        suf[nf1] = 1.0
                        for f in range(nf1 - 1, -1, -1):
                            suf[f] = suf[f + 1] * v1[f]
                        for f in range(nf1):
                            grad[idx1[f]] += c * pre[f] * suf[f + 1]
                    h1 += f1 * hc1
                    f = nf1 - 1
                    while f >= 0:
                        b1[f] += 1
                        if b1[f] < n_act[free1[f]]:
                            break
                        b1[f] = 0
                        f -= 1
                    if f < 0:
                        break
                h0 += p1 * h1
            c = n0 * h0
            if n == 1:
                grad[idx0[0]] += c
            elif n == 2:
                grad[idx0[0]] += c * v0[1]
                grad[idx0[1]] += c * v0[0]
            elif n > 2:
                pre[0] = 1.0
                for f in range(n):
                    pre[f + 1] = pre[f] * v0[f]
                suf[n] = 1.0
                for f in range(n - 1, -1, -1):
                    suf[f] = suf[f + 1] * v0[f]
                for f in range(n):
                    grad[idx0[f]] += c * pre[f] * suf[f + 1]
            for i in range(n - 1, -1, -1):  # next joint action at depth 0
                a0[i] += 1
                if a0[i] < n_act[i]:
                    break
                a0[i] = 0
    return steps


@njit(cache=True)
def _walk_kind(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """Enumerate the depth-k window paths of start states ``lo..hi-1``.

    mode 0: add to ``W`` and ``m_data`` (pattern ``m_ptr``/``m_idx``).
    mode 1: add the partial derivatives to ``grad`` (uses ``Vk`` and ``nu``).
    mode 2: only count path steps; stop once the count exceeds ``cap``.
    ``kind`` (a tag of :data:`_KIND_TAG`, from :func:`walk_kind`) picks the dedicated loops
    of ``k = 1``, ``2`` or ``3`` or the general walk; ``mode`` is a compile-time constant
    (``numba.literally``). Each (mode, kind) is its own compiled specialisation, with no mode
    test left in the loops and nothing compiled for the passes it does not use (a ``k = 1``
    call compiles neither the ``k = 2`` or ``k = 3`` loops nor the general walk). Returns the
    number of path steps walked.
    """
    numba.literally(mode)
    return _loops(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap)


def _loops(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """Typing-time choice of the loops for a literal ``kind`` (see :func:`_ol_loops`)."""
    raise NotImplementedError("only callable from compiled code")


@overload(_loops, prefer_literal=True, jit_options=dict(cache=True))
def _ol_loops(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """The implementation of :func:`_loops` for the kind that the type of ``kind`` carries
    (:data:`_KIND_TAG`), chosen when the caller is typed, so only the chosen loops are compiled
    (numba would compile every branch of a runtime test)."""
    if not isinstance(kind, types.Integer):
        return None
    kind = _KIND_OF_BITWIDTH[kind.bitwidth]
    if kind == _KIND_K1:
        def impl(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
            return _k1_rows(lo, hi, mode, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap)
    elif kind == _KIND_K2:
        def impl(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
            return _k2_rows(lo, hi, mode, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad)
    elif kind == _KIND_K3 and getattr(mode, "literal_value", None) == _MODE_VALUES:
        def impl(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
            return _k3_values(lo, hi, sm, theta, toff, W, m_ptr, m_idx, m_data)
    elif kind == _KIND_K3 and getattr(mode, "literal_value", None) == _MODE_GRAD:
        def impl(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
            return _k3_grad(lo, hi, sm, theta, toff, Vk, nu, grad)
    else:
        def impl(kind, lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
            return _general_walk(lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap)
    return impl


@njit(cache=True)
def _general_walk(lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """The general walk (any ``k``; an explicit stack with the memo of drawn slots), for
    :func:`_walk_kind`."""
    numba.literally(mode)
    gamma, strides, n_act, obs, indptr, indices, probs, rewards = sm
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


def walk_kind(k: int, mode: int = _MODE_VALUES):
    """The tag of the loops that walk window ``k`` in ``mode`` (:data:`_KIND_TAG`): the
    dedicated ``k = 1``, ``k = 2`` and ``k = 3`` passes, or the general walk (``k >= 4``,
    counting at ``k >= 2``)."""
    if k == 1:
        return _KIND_TAG[_KIND_K1]
    if k == 2 and mode != _MODE_COUNT:
        return _KIND_TAG[_KIND_K2]
    if k == 3 and mode != _MODE_COUNT:
        return _KIND_TAG[_KIND_K3]
    return _KIND_TAG[_KIND_GENERAL]


def _walk(lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data, grad, cap):
    """:func:`_walk_kind` with the loops chosen for ``k`` (the entry point of the tests)."""
    return _walk_kind(walk_kind(k, mode), lo, hi, mode, k, sm, theta, toff, Vk, nu, W, m_ptr, m_idx, m_data,
                      grad, cap)


@njit(cache=True)
def values_kind(kind, lo, hi, k, sm, theta, toff, m_ptr, m_idx, W, m_data):
    """Pass 1 over start states ``lo..hi-1`` with the loops ``kind``: add to ``W`` and to
    ``m_data`` (pattern ``m_ptr``/``m_idx``)."""
    e = np.zeros(0)
    _loops(kind, lo, hi, _MODE_VALUES, k, sm, theta, toff, e, e, W, m_ptr, m_idx, m_data, e, 0)


@njit(cache=True)
def grad_kind(kind, lo, hi, k, sm, theta, toff, Vk, nu, grad):
    """Pass 2 over start states ``lo..hi-1`` with the loops ``kind``: add the partial
    derivatives to ``grad``."""
    e = np.zeros(0)
    ei = np.zeros(0, np.int64)
    _loops(kind, lo, hi, _MODE_GRAD, k, sm, theta, toff, Vk, nu, e, ei, ei, e, grad, 0)


@njit(cache=True)
def _count_kind(kind, k, sm, theta, toff, cap):
    N = sm[7].shape[0]
    e = np.zeros(0)
    ei = np.zeros(0, np.int64)
    return _loops(kind, 0, N, _MODE_COUNT, k, sm, theta, toff, e, e, e, ei, ei, e, e, cap)


@njit(parallel=True, cache=True)
def _values_parallel_kind(kind, n_chunks, k, sm, theta, toff, m_ptr, m_idx, W, m_data):
    N = sm[7].shape[0]
    for c in prange(n_chunks):
        values_kind(kind, c * N // n_chunks, (c + 1) * N // n_chunks, k, sm, theta, toff, m_ptr, m_idx, W, m_data)


@njit(parallel=True, cache=True)
def _grad_parallel_kind(kind, n_chunks, k, sm, theta, toff, Vk, nu, n_params):
    N = sm[7].shape[0]
    grads = np.zeros((n_chunks, n_params))
    for c in prange(n_chunks):
        grad_kind(kind, c * N // n_chunks, (c + 1) * N // n_chunks, k, sm, theta, toff, Vk, nu, grads[c])
    return grads.sum(axis=0)


def walk_values(lo, hi, k, sm, theta, toff, m_ptr, m_idx, W, m_data):
    """Pass 1 over start states ``lo..hi-1``: add to ``W`` and to ``m_data`` (pattern ``m_ptr``/``m_idx``)."""
    values_kind(walk_kind(k), lo, hi, k, sm, theta, toff, m_ptr, m_idx, W, m_data)


def walk_grad(lo, hi, k, sm, theta, toff, Vk, nu, grad):
    """Pass 2 over start states ``lo..hi-1``: add the partial derivatives to ``grad``."""
    grad_kind(walk_kind(k, _MODE_GRAD), lo, hi, k, sm, theta, toff, Vk, nu, grad)


def count_steps(k, sm, theta, toff, cap):
    """Exact path steps of one pass over all start states (counting stops once above ``cap``).

    ``theta`` only sizes the walk (any values, e.g. ones): the paths do not depend on it."""
    return _count_kind(walk_kind(k, _MODE_COUNT), k, sm, theta, toff, cap)


def walk_values_parallel(n_chunks, k, sm, theta, toff, m_ptr, m_idx, W, m_data):
    """:func:`walk_values` over all start states in ``n_chunks`` parallel chunks."""
    _values_parallel_kind(walk_kind(k), n_chunks, k, sm, theta, toff, m_ptr, m_idx, W, m_data)


def walk_grad_parallel(n_chunks, k, sm, theta, toff, Vk, nu, n_params):
    """:func:`walk_grad` over all start states in ``n_chunks`` parallel chunks (one gradient row each)."""
    return _grad_parallel_kind(walk_kind(k, _MODE_GRAD), n_chunks, k, sm, theta, toff, Vk, nu, n_params)
