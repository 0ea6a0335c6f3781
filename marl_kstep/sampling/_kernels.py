r"""Numba kernels of the sampled k-step estimator (SPEC §8).

Two jobs, both private and pure (arrays in, caller-allocated outputs written):

* :func:`finish_episode` turns one k-coupled episode -- its discounted rewards
  :math:`\gamma^t r_t` and its first-visit draws :math:`(t, \text{entry}, \theta)` -- into
  the episode's row-centred score vector and adds it (and its square) to the accumulators.
  Both the environment path (a Python episode loop) and the fast path call it, so the
  estimator's arithmetic exists once.
* :func:`simulate_chunks` is the fast path on a :class:`~marl_kstep.model.JointMDP`: a batched
  simulator of k-coupled execution that calls :func:`finish_episode` after every episode, all
  in one compiled pass. Episodes are split into a fixed number of chunks, each with its own
  random stream (SplitMix64), so the result does not depend on the number of threads.

The entries of all agents' tables are flattened: entry ``row_first[row] + a`` is
:math:`\theta_i[o, a]` for ``row = row_offset[i] + o``.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2^-53


@numba.njit(cache=True, inline="always")
def _uniform(state):
    """SplitMix64 (Steele, Lea & Flood 2014): advance ``state[0]``, return a double in [0, 1)."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _TO_UNIT


@numba.njit(cache=True, inline="always")
def _draw(theta, first, length, u):
    """Index ``a`` with ``sum(theta[first:first+a]) <= u < sum(theta[first:first+a+1])``;
    never an action of probability 0 (rounding falls back to the last positive one)."""
    acc = 0.0
    last = -1
    for a in range(length):
        p = theta[first + a]
        if p > 0.0:
            last = a
            acc += p
            if u < acc:
                return a
    return last


@numba.njit(cache=True)
def finish_episode(T, rd, d_t, d_entry, d_prob, D, entry_row, row_first, row_len,
                   bsum, bcount, G, v, rows, row_mark, acc_sum, acc_sq, jstats):
    r"""Add one episode to the accumulators (SPEC §8).

    ``rd[t]`` = :math:`\gamma^t r_t` for ``t < T``; draw ``d`` happened at time ``d_t[d]`` for
    entry ``d_entry[d]`` with probability ``d_prob[d]``. With
    :math:`G_{\ge t} = \sum_{t' \ge t} \gamma^{t'} r_{t'}` and the per-time baseline
    :math:`b_t` = mean of :math:`G_{\ge t}` over the earlier episodes of this stream
    (``bsum[t] / bcount[0]``; 0 for the first), the episode vector is
    :math:`v[e] = \sum_{d: e_d = e} (G_{\ge t_d} - b_{t_d}) / \theta_d`; each row of ``v`` is
    centred and the result added to ``acc_sum`` and its square to ``acc_sq``.
    ``jstats`` accumulates ``(sum G, sum G^2, episodes)``. ``G``, ``v``, ``rows`` and
    ``row_mark`` are scratch (``v`` and ``row_mark`` must be zero / False on entry and are
    left so).
    """
    G[T] = 0.0
    for t in range(T - 1, -1, -1):
        G[t] = G[t + 1] + rd[t]
    nb = bcount[0]
    inv = 1.0 / nb if nb > 0 else 0.0
    n_rows = 0
    for d in range(D):
        t = d_t[d]
        e = d_entry[d]
        v[e] += (G[t] - bsum[t] * inv) / d_prob[d]
        r = entry_row[e]
        if not row_mark[r]:
            row_mark[r] = True
            rows[n_rows] = r
            n_rows += 1
    for q in range(n_rows):
        r = rows[q]
        f = row_first[r]
        A = row_len[r]
        m = 0.0
        for a in range(A):
            m += v[f + a]
        m /= A
        for a in range(A):
            c = v[f + a] - m
            acc_sum[f + a] += c
            acc_sq[f + a] += c * c
            v[f + a] = 0.0
        row_mark[r] = False
    for t in range(T):
        bsum[t] += G[t]
    bcount[0] += 1
    jstats[0] += G[0]
    jstats[1] += G[0] * G[0]
    jstats[2] += 1.0


@numba.njit(cache=True)
def _chunk(c, n_ep, seed, use_baseline, k, H, gamma, theta, row_offset, row_first, row_len, entry_row, obs, n_act,
           mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats):
    """Simulate ``n_ep`` k-coupled episodes with stream ``seed`` into row ``c`` of the outputs."""
    n = obs.shape[0]
    n_rows = row_first.shape[0]
    P = theta.shape[0]
    state = np.empty(1, dtype=np.uint64)
    state[0] = seed
    stamp = np.full(n_rows, -1, dtype=np.int64)
    drawn = np.zeros(n_rows, dtype=np.int64)
    rd = np.zeros(H + 1)
    G = np.zeros(H + 1)
    bsum = np.zeros(H + 1)
    bcount = np.zeros(1, dtype=np.int64)
    max_d = H * n
    d_t = np.empty(max_d, dtype=np.int64)
    d_entry = np.empty(max_d, dtype=np.int64)
    d_prob = np.empty(max_d)
    v = np.zeros(P)
    rows = np.empty(min(max_d, n_rows), dtype=np.int64)
    row_mark = np.zeros(n_rows, dtype=np.bool_)
    window = 0
    S = mu_cdf.shape[0]
    for _ep in range(n_ep):
        # initial state by inversion of mu's cdf
        u = _uniform(state)
        s = np.searchsorted(mu_cdf, u, side="right")
        if s >= S:
            s = S - 1
        D = 0
        disc = 1.0
        for t in range(H):
            if t % k == 0:
                window += 1
            j = 0
            for i in range(n):
                row = row_offset[i] + obs[i, s]
                if stamp[row] != window:
                    f = row_first[row]
                    a = _draw(theta, f, row_len[row], _uniform(state))
                    drawn[row] = a
                    stamp[row] = window
                    d_t[D] = t
                    d_entry[D] = f + a
                    d_prob[D] = theta[f + a]
                    D += 1
                j = j * n_act[i] + drawn[row]
            rd[t] = disc * rewards[s, j]
            disc *= gamma
            q = s * rewards.shape[1] + j
            lo = indptr[q]
            hi = indptr[q + 1]
            if hi - lo == 1:
                s = indices[lo]
            else:
                u = _uniform(state)
                acc = 0.0
                nxt = indices[hi - 1]
                for z in range(lo, hi):
                    acc += probs[z]
                    if u < acc:
                        nxt = indices[z]
                        break
                s = nxt
        finish_episode(H, rd, d_t, d_entry, d_prob, D, entry_row, row_first, row_len,
                       bsum, bcount, G, v, rows, row_mark, acc_sum[c], acc_sq[c], jstats[c])
        if not use_baseline:
            bcount[0] = 0


@numba.njit(cache=True)
def _serial(per_chunk, seeds, use_baseline, k, H, gamma, theta, row_offset, row_first, row_len, entry_row, obs, n_act,
            mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats):
    for c in range(seeds.shape[0]):
        _chunk(c, per_chunk[c], seeds[c], use_baseline, k, H, gamma, theta, row_offset, row_first, row_len,
               entry_row, obs, n_act, mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats)


@numba.njit(cache=True, parallel=True)
def _parallel(per_chunk, seeds, use_baseline, k, H, gamma, theta, row_offset, row_first, row_len, entry_row, obs, n_act,
              mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats):
    for c in numba.prange(seeds.shape[0]):
        _chunk(c, per_chunk[c], seeds[c], use_baseline, k, H, gamma, theta, row_offset, row_first, row_len,
               entry_row, obs, n_act, mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats)


def simulate_chunks(parallel, per_chunk, seeds, use_baseline, k, H, gamma, theta, layout, mdp_arrays,
                    acc_sum, acc_sq, jstats):
    """Run every chunk (``prange`` over chunks when ``parallel``); outputs have one row per chunk."""
    row_offset, row_first, row_len, entry_row = layout
    obs, n_act, mu_cdf, indptr, indices, probs, rewards = mdp_arrays
    fn = _parallel if parallel else _serial
    fn(per_chunk, seeds, use_baseline, k, H, gamma, theta, row_offset, row_first, row_len, entry_row, obs, n_act,
       mu_cdf, indptr, indices, probs, rewards, acc_sum, acc_sq, jstats)


@numba.njit(cache=True)
def finish_batch(B, H, rd, d_t, d_entry, d_prob, D, use_baseline, entry_row, row_first, row_len,
                 bsum, bcount, G, v, rows, row_mark, acc_sum, acc_sq, jstats):
    """:func:`finish_episode` for the ``B`` episodes of a batch (rows of ``rd``, ``d_*``), in order."""
    for b in range(B):
        finish_episode(H, rd[b], d_t[b], d_entry[b], d_prob[b], D[b], entry_row, row_first, row_len,
                       bsum, bcount, G, v, rows, row_mark, acc_sum, acc_sq, jstats)
        if not use_baseline:
            bcount[0] = 0
