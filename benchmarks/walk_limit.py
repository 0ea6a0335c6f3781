"""The general walk against its limit: a minimal hand-written loop for one fixed shape.

    python benchmarks/walk_limit.py [--repeats 9] [--only k3] [--out results/walk_limit.json]

The shapes: 2 agents, k = 2 (pass 1 and pass 2), and k = 3 with 2 and 3 agents (pass 1 and
pass 2: the dedicated loops and the general walk, which was the k = 3 pass 2 before
``_walk._k3_grad``). ``hand_values``, ``hand_grad``, ``hand_values3_n2``, ``hand_values3_n3``,
``hand_grad3_n2`` and ``hand_grad3_n3`` below do exactly what the library's pass 1 (``W``
and ``M`` on the plan's pattern) and pass 2 (the gradient from ``V_k`` and ``nu_k``) do, for
one shape only, written as plain nested loops: at depth 0 every agent draws; later an agent
draws again only if its observation is new on the path (else it repeats the action drawn for
it, the k-step coupling). The script checks they equal the library's results, then times
each pass serially (one thread), hand loop and library alternating, and reports path steps
per second and the ratio hand / library (library speed as a fraction of the hand loop's;
for k = 3 also with the medians of the thread's CPU time, less sensitive to a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)
import numba
import numpy as np
from numba import njit

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, number_matching
from marl_kstep.estimators._walk import (
    _KIND_GENERAL,
    _KIND_K3,
    _KIND_TAG,
    grad_kind,
    values_kind,
    walk_grad,
    walk_values,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_kernel import open_grid  # noqa: E402


@njit(cache=True)
def hand_values(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, m_ptr, m_idx, W, m_data):
    """Pass 1 for 2 agents, k = 2 (``th0``/``th1``: the agents' tables, shape ``(O_i, A_i)``)."""
    N = rewards.shape[0]
    J = A0 * A1
    g2 = gamma * gamma
    pos = np.full(N, -1, np.int64)
    for s0 in range(N):
        for p in range(m_ptr[s0], m_ptr[s0 + 1]):
            pos[m_idx[p]] = p
        o0, o1 = obs[0, s0], obs[1, s0]
        w_acc = 0.0
        for a0 in range(A0):
            for a1 in range(A1):
                j0 = a0 * A1 + a1
                f0 = th0[o0, a0] * th1[o1, a1]
                r0 = rewards[s0, j0]
                for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                    s1 = indices[e]
                    w1 = f0 * probs[e]
                    q0, q1 = obs[0, s1], obs[1, s1]
                    lo0, hi0 = (a0, a0 + 1) if q0 == o0 else (0, A0)
                    lo1, hi1 = (a1, a1 + 1) if q1 == o1 else (0, A1)
                    for b0 in range(lo0, hi0):
                        f10 = 1.0 if q0 == o0 else th0[q0, b0]
                        for b1 in range(lo1, hi1):
                            f1 = f10 * (1.0 if q1 == o1 else th1[q1, b1])
                            j1 = b0 * A1 + b1
                            ret = r0 + gamma * rewards[s1, j1]
                            w = w1 * f1
                            for u in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                wp = w * probs[u]
                                w_acc += wp * ret
                                m_data[pos[indices[u]]] += g2 * wp
        W[s0] += w_acc


@njit(cache=True)
def hand_grad(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, Vk, nu, g0, g1):
    """Pass 2 for 2 agents, k = 2: adds the partials to ``g0``/``g1`` (shapes of the tables)."""
    N = rewards.shape[0]
    J = A0 * A1
    g2 = gamma * gamma
    for s0 in range(N):
        n0 = nu[s0]
        if n0 == 0.0:
            continue
        o0, o1 = obs[0, s0], obs[1, s0]
        for a0 in range(A0):
            for a1 in range(A1):
                j0 = a0 * A1 + a1
                r0 = rewards[s0, j0]
                h0 = 0.0  # sum over the subtree of (a0, a1), without the depth-0 factors
                for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                    s1 = indices[e]
                    p1 = probs[e]
                    q0, q1 = obs[0, s1], obs[1, s1]
                    free0, free1 = q0 != o0, q1 != o1
                    lo0, hi0 = (0, A0) if free0 else (a0, a0 + 1)
                    lo1, hi1 = (0, A1) if free1 else (a1, a1 + 1)
                    h1 = 0.0
                    for b0 in range(lo0, hi0):
                        t0 = th0[q0, b0] if free0 else 1.0
                        for b1 in range(lo1, hi1):
                            t1 = th1[q1, b1] if free1 else 1.0
                            j1 = b0 * A1 + b1
                            ret = r0 + gamma * rewards[s1, j1]
                            h = 0.0
                            for u in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                h += probs[u] * (ret + g2 * Vk[indices[u]])
                            # depth-1 credits: weight above (nu, depth-0 factors, p1) times the other factor
                            c = n0 * th0[o0, a0] * th1[o1, a1] * p1 * h
                            if free0:
                                g0[q0, b0] += c * t1
                            if free1:
                                g1[q1, b1] += c * t0
                            h1 += t0 * t1 * h
                    h0 += p1 * h1
                g0[o0, a0] += n0 * th1[o1, a1] * h0
                g1[o1, a1] += n0 * th0[o0, a0] * h0


@njit(cache=True)
def hand_values3_n2(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, m_ptr, m_idx, W, m_data):
    """Pass 1 for 2 agents, k = 3: at depth 1 an agent draws when its observation differs
    from depth 0's, at depth 2 when it differs from both earlier ones (else it repeats the
    action it drew for that observation)."""
    N = rewards.shape[0]
    J = A0 * A1
    g2 = gamma * gamma
    g3 = g2 * gamma
    pos = np.full(N, -1, np.int64)
    for s0 in range(N):
        for p in range(m_ptr[s0], m_ptr[s0 + 1]):
            pos[m_idx[p]] = p
        o0, o1 = obs[0, s0], obs[1, s0]
        w_acc = 0.0
        for a0 in range(A0):
            for a1 in range(A1):
                j0 = a0 * A1 + a1
                f0 = th0[o0, a0] * th1[o1, a1]
                r0 = rewards[s0, j0]
                for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                    s1 = indices[e]
                    q0, q1 = obs[0, s1], obs[1, s1]
                    lo0, hi0 = (a0, a0 + 1) if q0 == o0 else (0, A0)
                    lo1, hi1 = (a1, a1 + 1) if q1 == o1 else (0, A1)
                    for b0 in range(lo0, hi0):
                        t0 = 1.0 if q0 == o0 else th0[q0, b0]
                        for b1 in range(lo1, hi1):
                            t1 = 1.0 if q1 == o1 else th1[q1, b1]
                            j1 = b0 * A1 + b1
                            ret1 = r0 + gamma * rewards[s1, j1]
                            w1 = f0 * probs[e] * t0 * t1
                            for e2 in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                s2 = indices[e2]
                                u0, u1 = obs[0, s2], obs[1, s2]
                                fix0 = a0 if u0 == o0 else (b0 if u0 == q0 else -1)
                                fix1 = a1 if u1 == o1 else (b1 if u1 == q1 else -1)
                                lc0, hc0 = (fix0, fix0 + 1) if fix0 >= 0 else (0, A0)
                                lc1, hc1 = (fix1, fix1 + 1) if fix1 >= 0 else (0, A1)
                                w2 = w1 * probs[e2]
                                for c0 in range(lc0, hc0):
                                    z0 = 1.0 if fix0 >= 0 else th0[u0, c0]
                                    for c1 in range(lc1, hc1):
                                        z1 = 1.0 if fix1 >= 0 else th1[u1, c1]
                                        j2 = c0 * A1 + c1
                                        ret2 = ret1 + g2 * rewards[s2, j2]
                                        w = w2 * z0 * z1
                                        for u in range(indptr[s2 * J + j2], indptr[s2 * J + j2 + 1]):
                                            wp = w * probs[u]
                                            w_acc += wp * ret2
                                            m_data[pos[indices[u]]] += g3 * wp
        W[s0] += w_acc


@njit(cache=True)
def hand_values3_n3(gamma, obs, indptr, indices, probs, rewards, A, th0, th1, th2, m_ptr, m_idx, W, m_data):
    """Pass 1 for 3 agents with ``A`` actions each, k = 3 (as :func:`hand_values3_n2`)."""
    N = rewards.shape[0]
    J = A * A * A
    g2 = gamma * gamma
    g3 = g2 * gamma
    pos = np.full(N, -1, np.int64)
    for s0 in range(N):
        for p in range(m_ptr[s0], m_ptr[s0 + 1]):
            pos[m_idx[p]] = p
        o0, o1, o2 = obs[0, s0], obs[1, s0], obs[2, s0]
        w_acc = 0.0
        for a0 in range(A):
            for a1 in range(A):
                for a2 in range(A):
                    j0 = (a0 * A + a1) * A + a2
                    f0 = th0[o0, a0] * th1[o1, a1] * th2[o2, a2]
                    r0 = rewards[s0, j0]
                    for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                        s1 = indices[e]
                        q0, q1, q2 = obs[0, s1], obs[1, s1], obs[2, s1]
                        lo0, hi0 = (a0, a0 + 1) if q0 == o0 else (0, A)
                        lo1, hi1 = (a1, a1 + 1) if q1 == o1 else (0, A)
                        lo2, hi2 = (a2, a2 + 1) if q2 == o2 else (0, A)
                        for b0 in range(lo0, hi0):
                            t0 = 1.0 if q0 == o0 else th0[q0, b0]
                            for b1 in range(lo1, hi1):
                                t1 = 1.0 if q1 == o1 else th1[q1, b1]
                                for b2 in range(lo2, hi2):
                                    t2 = 1.0 if q2 == o2 else th2[q2, b2]
                                    j1 = (b0 * A + b1) * A + b2
                                    ret1 = r0 + gamma * rewards[s1, j1]
                                    w1 = f0 * probs[e] * t0 * t1 * t2
                                    for e2 in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                        s2 = indices[e2]
                                        u0, u1, u2 = obs[0, s2], obs[1, s2], obs[2, s2]
                                        fix0 = a0 if u0 == o0 else (b0 if u0 == q0 else -1)
                                        fix1 = a1 if u1 == o1 else (b1 if u1 == q1 else -1)
                                        fix2 = a2 if u2 == o2 else (b2 if u2 == q2 else -1)
                                        lc0, hc0 = (fix0, fix0 + 1) if fix0 >= 0 else (0, A)
                                        lc1, hc1 = (fix1, fix1 + 1) if fix1 >= 0 else (0, A)
                                        lc2, hc2 = (fix2, fix2 + 1) if fix2 >= 0 else (0, A)
                                        w2 = w1 * probs[e2]
                                        for c0 in range(lc0, hc0):
                                            z0 = 1.0 if fix0 >= 0 else th0[u0, c0]
                                            for c1 in range(lc1, hc1):
                                                z1 = 1.0 if fix1 >= 0 else th1[u1, c1]
                                                for c2 in range(lc2, hc2):
                                                    z2 = 1.0 if fix2 >= 0 else th2[u2, c2]
                                                    j2 = (c0 * A + c1) * A + c2
                                                    ret2 = ret1 + g2 * rewards[s2, j2]
                                                    w = w2 * z0 * z1 * z2
                                                    for u in range(indptr[s2 * J + j2], indptr[s2 * J + j2 + 1]):
                                                        wp = w * probs[u]
                                                        w_acc += wp * ret2
                                                        m_data[pos[indices[u]]] += g3 * wp
        W[s0] += w_acc


@njit(cache=True)
def hand_grad3_n2(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, Vk, nu, g0, g1):
    """Pass 2 for 2 agents, k = 3: adds the partials to ``g0``/``g1`` (the loops of
    :func:`hand_values3_n2`, bottom-up: each factor credited at the choice that draws it with
    ``nu`` times the weight above times the other new factor times the subtree sum)."""
    N = rewards.shape[0]
    J = A0 * A1
    g2 = gamma * gamma
    g3 = g2 * gamma
    for s0 in range(N):
        n0 = nu[s0]
        if n0 == 0.0:
            continue
        o0, o1 = obs[0, s0], obs[1, s0]
        for a0 in range(A0):
            for a1 in range(A1):
                j0 = a0 * A1 + a1
                r0 = rewards[s0, j0]
                f00, f01 = th0[o0, a0], th1[o1, a1]
                h0 = 0.0
                for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                    s1 = indices[e]
                    p1 = probs[e]
                    q0, q1 = obs[0, s1], obs[1, s1]
                    free0, free1 = q0 != o0, q1 != o1
                    lo0, hi0 = (0, A0) if free0 else (a0, a0 + 1)
                    lo1, hi1 = (0, A1) if free1 else (a1, a1 + 1)
                    h1 = 0.0
                    for b0 in range(lo0, hi0):
                        t0 = th0[q0, b0] if free0 else 1.0
                        for b1 in range(lo1, hi1):
                            t1 = th1[q1, b1] if free1 else 1.0
                            j1 = b0 * A1 + b1
                            ret1 = r0 + gamma * rewards[s1, j1]
                            hc1 = 0.0
                            for e2 in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                s2 = indices[e2]
                                p2 = probs[e2]
                                u0, u1 = obs[0, s2], obs[1, s2]
                                fix0 = a0 if u0 == o0 else (b0 if u0 == q0 else -1)
                                fix1 = a1 if u1 == o1 else (b1 if u1 == q1 else -1)
                                lc0, hc0 = (fix0, fix0 + 1) if fix0 >= 0 else (0, A0)
                                lc1, hc1_ = (fix1, fix1 + 1) if fix1 >= 0 else (0, A1)
                                w2 = n0 * f00 * f01 * p1 * t0 * t1 * p2
                                h2 = 0.0
                                for c0 in range(lc0, hc0):
                                    z0 = 1.0 if fix0 >= 0 else th0[u0, c0]
                                    for c1 in range(lc1, hc1_):
                                        z1 = 1.0 if fix1 >= 0 else th1[u1, c1]
                                        j2 = c0 * A1 + c1
                                        ret2 = ret1 + g2 * rewards[s2, j2]
                                        h = 0.0
                                        for u in range(indptr[s2 * J + j2], indptr[s2 * J + j2 + 1]):
                                            h += probs[u] * (ret2 + g3 * Vk[indices[u]])
                                        c = w2 * h
                                        if fix0 < 0:
                                            g0[u0, c0] += c * z1
                                        if fix1 < 0:
                                            g1[u1, c1] += c * z0
                                        h2 += z0 * z1 * h
                                hc1 += p2 * h2
                            c = n0 * f00 * f01 * p1 * hc1  # depth-1 credits
                            if free0:
                                g0[q0, b0] += c * t1
                            if free1:
                                g1[q1, b1] += c * t0
                            h1 += t0 * t1 * hc1
                    h0 += p1 * h1
                g0[o0, a0] += n0 * f01 * h0
                g1[o1, a1] += n0 * f00 * h0


@njit(cache=True)
def hand_grad3_n3(gamma, obs, indptr, indices, probs, rewards, A, th0, th1, th2, Vk, nu, g0, g1, g2_):
    """Pass 2 for 3 agents with ``A`` actions each, k = 3 (as :func:`hand_grad3_n2`)."""
    N = rewards.shape[0]
    J = A * A * A
    g2 = gamma * gamma
    g3 = g2 * gamma
    for s0 in range(N):
        n0 = nu[s0]
        if n0 == 0.0:
            continue
        o0, o1, o2 = obs[0, s0], obs[1, s0], obs[2, s0]
        for a0 in range(A):
            for a1 in range(A):
                for a2 in range(A):
                    j0 = (a0 * A + a1) * A + a2
                    r0 = rewards[s0, j0]
                    f00, f01, f02 = th0[o0, a0], th1[o1, a1], th2[o2, a2]
                    h0 = 0.0
                    for e in range(indptr[s0 * J + j0], indptr[s0 * J + j0 + 1]):
                        s1 = indices[e]
                        p1 = probs[e]
                        q0, q1, q2 = obs[0, s1], obs[1, s1], obs[2, s1]
                        free0, free1, free2 = q0 != o0, q1 != o1, q2 != o2
                        lo0, hi0 = (0, A) if free0 else (a0, a0 + 1)
                        lo1, hi1 = (0, A) if free1 else (a1, a1 + 1)
                        lo2, hi2 = (0, A) if free2 else (a2, a2 + 1)
                        h1 = 0.0
                        for b0 in range(lo0, hi0):
                            t0 = th0[q0, b0] if free0 else 1.0
                            for b1 in range(lo1, hi1):
                                t1 = th1[q1, b1] if free1 else 1.0
                                for b2 in range(lo2, hi2):
                                    t2 = th2[q2, b2] if free2 else 1.0
                                    j1 = (b0 * A + b1) * A + b2
                                    ret1 = r0 + gamma * rewards[s1, j1]
                                    hc1 = 0.0
                                    for e2 in range(indptr[s1 * J + j1], indptr[s1 * J + j1 + 1]):
                                        s2 = indices[e2]
                                        p2 = probs[e2]
                                        u0, u1, u2 = obs[0, s2], obs[1, s2], obs[2, s2]
                                        fix0 = a0 if u0 == o0 else (b0 if u0 == q0 else -1)
                                        fix1 = a1 if u1 == o1 else (b1 if u1 == q1 else -1)
                                        fix2 = a2 if u2 == o2 else (b2 if u2 == q2 else -1)
                                        lc0, hc0 = (fix0, fix0 + 1) if fix0 >= 0 else (0, A)
                                        lc1, hc1_ = (fix1, fix1 + 1) if fix1 >= 0 else (0, A)
                                        lc2, hc2 = (fix2, fix2 + 1) if fix2 >= 0 else (0, A)
                                        w2 = n0 * f00 * f01 * f02 * p1 * t0 * t1 * t2 * p2
                                        h2 = 0.0
                                        for c0 in range(lc0, hc0):
                                            z0 = 1.0 if fix0 >= 0 else th0[u0, c0]
                                            for c1 in range(lc1, hc1_):
                                                z1 = 1.0 if fix1 >= 0 else th1[u1, c1]
                                                for c2 in range(lc2, hc2):
                                                    z2 = 1.0 if fix2 >= 0 else th2[u2, c2]
                                                    j2 = (c0 * A + c1) * A + c2
                                                    ret2 = ret1 + g2 * rewards[s2, j2]
                                                    h = 0.0
                                                    for u in range(indptr[s2 * J + j2], indptr[s2 * J + j2 + 1]):
                                                        h += probs[u] * (ret2 + g3 * Vk[indices[u]])
                                                    c = w2 * h
                                                    if fix0 < 0:
                                                        g0[u0, c0] += c * z1 * z2
                                                    if fix1 < 0:
                                                        g1[u1, c1] += c * z0 * z2
                                                    if fix2 < 0:
                                                        g2_[u2, c2] += c * z0 * z1
                                                    h2 += z0 * z1 * z2 * h
                                        hc1 += p2 * h2
                                    c = n0 * f00 * f01 * f02 * p1 * hc1  # depth-1 credits
                                    if free0:
                                        g0[q0, b0] += c * t1 * t2
                                    if free1:
                                        g1[q1, b1] += c * t0 * t2
                                    if free2:
                                        g2_[q2, b2] += c * t0 * t1
                                    h1 += t0 * t1 * t2 * hc1
                        h0 += p1 * h1
                    g0[o0, a0] += n0 * f01 * f02 * h0
                    g1[o1, a1] += n0 * f00 * f02 * h0
                    g2_[o2, a2] += n0 * f00 * f01 * h0


def models():
    rng = np.random.default_rng(0)
    N, A = 400, 3
    P = np.zeros((N, A * A, N))
    for s in range(N):
        for j in range(A * A):
            P[s, j, rng.choice(N, 3, replace=False)] = rng.dirichlet(np.ones(3))
    obs = [rng.integers(0, 6, N), rng.integers(0, 6, N)]
    rand = mk.JointMDP.from_dense(P, rng.normal(size=(N, A * A)), obs, (A, A), np.full(N, 1 / N), 0.9,
                                  n_obs=(6, 6))
    return [
        ("grid 6x6, 2 agents, walls", grid_coordination.build_mdp(layout=open_grid(6), observation="walls",
                                                                  starts=[None, None])),
        ("grid 6x6, 2 agents, position", grid_coordination.build_mdp(layout=open_grid(6), observation="position",
                                                                     starts=[None, None])),
        ("number matching n=2, m=40, own", number_matching.build_mdp(n_agents=2, n_numbers=40, observation="own")),
        ("random, 400 states, 3 actions each, 3 successors", rand),
    ]


def measure(name, mdp, repeats):
    est = mk.ExactKStep(mdp, 2, lump=False)
    p = est.plan
    pol = mk.Policy.random(mdp, seed=1)
    theta = pol.flat(mdp)
    th0, th1 = (np.ascontiguousarray(t, dtype=np.float64) for t in pol.theta)
    gamma, obs, indptr, indices, probs, rewards = mdp.gamma, mdp.obs_matrix, mdp.indptr, mdp.indices, mdp.probs, \
        mdp.rewards
    A0, A1 = mdp.n_actions
    N = mdp.n_states
    Vk, nu = np.random.default_rng(2).random(N), np.random.default_rng(3).random(N)

    def lib1():
        W, m = np.zeros(N), np.zeros(p.m_idx.size)
        walk_values(0, N, 2, p.sm, theta, p.toff, p.m_ptr, p.m_idx, W, m)
        return W, m

    def hand1():
        W, m = np.zeros(N), np.zeros(p.m_idx.size)
        hand_values(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, p.m_ptr, p.m_idx, W, m)
        return W, m

    def lib2():
        g = np.zeros(theta.size)
        walk_grad(0, N, 2, p.sm, theta, p.toff, Vk, nu, g)
        return g

    def hand2():
        g0, g1 = np.zeros_like(th0), np.zeros_like(th1)
        hand_grad(gamma, obs, indptr, indices, probs, rewards, A0, A1, th0, th1, Vk, nu, g0, g1)
        return np.concatenate([g0.ravel(), g1.ravel()])

    (W1, m1), (W2, m2) = lib1(), hand1()
    g1, g2 = lib2(), hand2()
    err = max(float(np.max(np.abs(W1 - W2)) / max(1e-300, np.max(np.abs(W2)))),
              float(np.max(np.abs(m1 - m2)) / np.max(np.abs(m2))),
              float(np.max(np.abs(g1 - g2)) / np.max(np.abs(g2))))
    assert err < 1e-12, (name, err)
    times = {key: [] for key in ("lib1", "hand1", "lib2", "hand2")}
    fns = dict(lib1=lib1, hand1=hand1, lib2=lib2, hand2=hand2)
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}
    steps = mk.count_path_steps(mdp, 2)
    return dict(name=name, states=N, path_steps=steps, max_rel_diff=err, seconds=med,
                msteps=dict((key, steps / v / 1e6) for key, v in med.items()),
                ratio_pass1=med["hand1"] / med["lib1"], ratio_pass2=med["hand2"] / med["lib2"])


def models_k3():
    rng = np.random.default_rng(0)
    N, A = 150, 3
    P = np.zeros((N, A * A, N))
    for s in range(N):
        for j in range(A * A):
            P[s, j, rng.choice(N, 3, replace=False)] = rng.dirichlet(np.ones(3))
    obs = [rng.integers(0, 6, N), rng.integers(0, 6, N)]
    rand = mk.JointMDP.from_dense(P, rng.normal(size=(N, A * A)), obs, (A, A), np.full(N, 1 / N), 0.9,
                                  n_obs=(6, 6))
    N3, A3 = 60, 2
    P3 = np.zeros((N3, A3**3, N3))
    for s in range(N3):
        for j in range(A3**3):
            P3[s, j, rng.choice(N3, 3, replace=False)] = rng.dirichlet(np.ones(3))
    obs3 = [rng.integers(0, 4, N3) for _ in range(3)]
    rand3 = mk.JointMDP.from_dense(P3, rng.normal(size=(N3, A3**3)), obs3, (A3,) * 3, np.full(N3, 1 / N3), 0.9,
                                   n_obs=(4,) * 3)
    return [
        ("grid 6x6, 2 agents, position", grid_coordination.build_mdp(layout=open_grid(6), observation="position",
                                                                     starts=[None, None])),
        ("random, 60 states, 3 agents, 2 actions each, 3 successors", rand3),
        ("number matching n=2, m=40, own", number_matching.build_mdp(n_agents=2, n_numbers=40, observation="own")),
        ("random, 150 states, 3 actions each, 3 successors", rand),
        ("number matching n=3, m=8, own", number_matching.build_mdp(n_agents=3, n_numbers=8, observation="own")),
        ("number matching n=3, m=8, match", number_matching.build_mdp(n_agents=3, n_numbers=8, observation="match")),
    ]


def measure_k3(name, mdp, repeats):
    """k = 3: the dedicated passes (pass 1 ``_k3_values``, pass 2 ``_k3_grad``) and the general
    walk's, against the hand loops; all checked equal first, then timed alternating."""
    p = mk.ExactKStep(mdp, 3, lump=False).plan
    pol = mk.Policy.random(mdp, seed=1)
    theta = pol.flat(mdp)
    ths = [np.ascontiguousarray(t, dtype=np.float64) for t in pol.theta]
    N = mdp.n_states
    Vk, nu = np.random.default_rng(2).random(N), np.random.default_rng(3).random(N)
    args = (mdp.gamma, mdp.obs_matrix, mdp.indptr, mdp.indices, mdp.probs, mdp.rewards)

    def pass1(kind):
        def run():
            W, m = np.zeros(N), np.zeros(p.m_idx.size)
            values_kind(kind, 0, N, 3, p.sm, theta, p.toff, p.m_ptr, p.m_idx, W, m)
            return W, m
        return run

    def pass2(kind):
        def run():
            g = np.zeros(theta.size)
            grad_kind(kind, 0, N, 3, p.sm, theta, p.toff, Vk, nu, g)
            return g
        return run

    def hand1():
        W, m = np.zeros(N), np.zeros(p.m_idx.size)
        if mdp.n_agents == 2:
            hand_values3_n2(*args, *mdp.n_actions, *ths, p.m_ptr, p.m_idx, W, m)
        else:
            hand_values3_n3(*args, mdp.n_actions[0], *ths, p.m_ptr, p.m_idx, W, m)
        return W, m

    def hand2():
        gs = [np.zeros_like(t) for t in ths]
        if mdp.n_agents == 2:
            hand_grad3_n2(*args, *mdp.n_actions, *ths, Vk, nu, *gs)
        else:
            hand_grad3_n3(*args, mdp.n_actions[0], *ths, Vk, nu, *gs)
        return np.concatenate([g.ravel() for g in gs])

    k3, gen = _KIND_TAG[_KIND_K3], _KIND_TAG[_KIND_GENERAL]
    fns = dict(hand1=hand1, lib1=pass1(k3), gen1=pass1(gen), hand2=hand2, lib2=pass2(k3), gen2=pass2(gen))
    (Wh, mh), (Wl, ml), (Wg, _) = hand1(), fns["lib1"](), fns["gen1"]()
    gh, gl, gg = hand2(), fns["lib2"](), fns["gen2"]()
    scale = np.max(np.abs(gh))
    err = max(float(np.max(np.abs(Wl - Wh)) / np.max(np.abs(Wh))), float(np.max(np.abs(ml - mh)) / np.max(mh)),
              float(np.max(np.abs(Wg - Wh)) / np.max(np.abs(Wh))),
              float(np.max(np.abs(gl - gh)) / scale), float(np.max(np.abs(gg - gh)) / scale))
    assert err < 1e-12, (name, err)
    times = {key: [] for key in fns}
    cpu = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[key].append(time.thread_time() - c)
            times[key].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}
    med_cpu = {key: statistics.median(v) for key, v in cpu.items()}
    steps = mk.count_path_steps(mdp, 3)

    def ratios(m):
        return dict(pass1=m["hand1"] / m["lib1"], pass1_general=m["hand1"] / m["gen1"],
                    pass2=m["hand2"] / m["lib2"], pass2_general=m["hand2"] / m["gen2"],
                    whole=(m["hand1"] + m["hand2"]) / (m["lib1"] + m["lib2"]),
                    whole_before=(m["hand1"] + m["hand2"]) / (m["lib1"] + m["gen2"]),
                    pass2_speedup=m["gen2"] / m["lib2"])

    return dict(name=name, k=3, agents=mdp.n_agents, states=N, path_steps=steps, max_rel_diff=err, seconds=med,
                cpu_seconds=med_cpu, msteps={key: steps / v / 1e6 for key, v in med.items()},
                ratios=ratios(med), ratios_cpu=ratios(med_cpu),
                ratio_pass1=med["hand1"] / med["lib1"], ratio_pass1_general=med["hand1"] / med["gen1"],
                pass2_over_pass1=med["lib2"] / med["lib1"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--only", choices=("k2", "k3"), help="only the k = 2 or only the k = 3 shapes")
    ap.add_argument("--out", default=str(ROOT / "results" / "walk_limit.json"))
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    load0 = os.getloadavg()
    rows = [measure(name, mdp, args.repeats) for name, mdp in models()] if args.only != "k3" else []
    load1 = os.getloadavg()
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f}; one thread; medians of {args.repeats}")
    print("| model | states | path steps / pass | pass 1: hand | library | library / hand | pass 2: hand | library "
          "| library / hand |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["msteps"]
        print(f"| {r['name']} | {r['states']:,} | {r['path_steps']:,} | {m['hand1']:.0f} M/s | {m['lib1']:.0f} M/s | "
              f"{r['ratio_pass1']:.2f} | {m['hand2']:.0f} M/s | {m['lib2']:.0f} M/s | {r['ratio_pass2']:.2f} |")
    load2 = os.getloadavg()
    rows3 = [measure_k3(name, mdp, args.repeats) for name, mdp in models_k3()] if args.only != "k2" else []
    load3 = os.getloadavg()
    print(f"\nk = 3: load average {load2[0]:.2f} -> {load3[0]:.2f}; one thread; medians of {args.repeats} "
          "(wall clock; in brackets: of the thread's CPU time)")
    print("| model | agents | path steps / pass | pass 1: hand | k = 3 pass | / hand | general walk | / hand "
          "| pass 2: hand | k = 3 pass | / hand | general walk (before) | / hand | whole call / hand | before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows3:
        m, q, c = r["msteps"], r["ratios"], r["ratios_cpu"]
        print(f"| {r['name']} | {r['agents']} | {r['path_steps']:,} | {m['hand1']:.0f} M/s | {m['lib1']:.0f} M/s | "
              f"{q['pass1']:.2f} [{c['pass1']:.2f}] | {m['gen1']:.0f} M/s | {q['pass1_general']:.2f} | "
              f"{m['hand2']:.0f} M/s | {m['lib2']:.0f} M/s | {q['pass2']:.2f} [{c['pass2']:.2f}] | "
              f"{m['gen2']:.0f} M/s | "
              f"{q['pass2_general']:.2f} [{c['pass2_general']:.2f}] | {q['whole']:.2f} [{c['whole']:.2f}] | "
              f"{q['whole_before']:.2f} [{c['whole_before']:.2f}] |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(rows=rows, load=[load0, load1], rows_k3=rows3, load_k3=[load2, load3]), indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
