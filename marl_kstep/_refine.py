r"""Coarsest stable refinement (probabilistic bisimulation / ordinary lumpability) in O(m log n).

A joint MDP with ``N`` states and ``J`` joint actions is given by a sparse transition
matrix in CSR form over the rows :math:`r = sJ + j`: ``indptr`` (length ``N*J + 1``),
``indices`` (successor states, sorted and distinct within a row) and ``probs`` (> 0).
For a set of states :math:`C` write :math:`P(C \mid s, j) = \sum_{t \in C} P(t \mid s, j)`.
A partition is *stable* when any two states of one block have, for every joint action
:math:`j` and every block :math:`C`, the same :math:`P(C \mid s, j)`. :func:`refine_lumping`
returns the coarsest stable partition that refines a given initial partition.

Algorithm
---------
Hopcroft's "process the smaller half" refinement, as adapted to Markov chain lumping by
Derisavi, Hermanns and Sanders (2003) and by Valmari and Franceschinis, "Simple O(m log n)
Time Markov Chain Lumping" (TACAS 2010):

1. The reverse adjacency (for every target ``t``, the ``(row, p)`` entries into ``t``) is
   built once by a counting sort.
2. The partition is a *refinable partition*: an array ``elems`` in which every block is a
   contiguous segment ``[start[b], end[b])``, the position ``loc[s]`` of every state in
   ``elems`` and the block ``blk[s]`` of every state. Marking a state swaps it to the front of
   its block's segment, so the marked (touched) part of a block is found without scanning
   the block.
3. A queue of splitters initially holds every block of the initial partition (all of them:
   rows need not sum to one, so no block may be left out).
4. Processing a splitter ``B``: the entries ``(row, p)`` into the states of ``B`` are gathered
   and sorted by ``(row, p)``; the contributions of every row are then summed in increasing
   order of ``p``, so that equal multisets of probabilities give bitwise-equal sums
   :math:`w(row) = P(B \mid s, j)` whatever order the states of ``B`` were visited in. The
   signature of a touched state ``s`` is the list of ``(j, w)`` over its touched rows,
   ordered by ``j`` (an untouched state has the empty signature). Every touched block ``X``
   is split by signature: its touched states are sorted by a hash of their signature and
   grouped by exact equality of the signatures (joint actions and float64 bit patterns),
   which handles hash collisions. The untouched rest of ``X`` is one more piece. The largest
   piece keeps the id of ``X``; every other piece gets a new id and is put in the queue
   (Hopcroft's "all but the largest": if ``X`` is still queued it stays queued).
5. When the queue is empty the partition is stable.

Costs: processing ``B`` takes :math:`O(k \log k)` for the ``k`` entries into ``B`` (a
counting sort by row, :math:`O(k + NJ)`, when :math:`8k \ge NJ`); splitting a block costs
the number of its touched states (times a log for the sort) plus the size of the pieces
that are not the largest (the only states relabelled); a large block is never scanned just
because a few of its states were touched. A state is in a newly queued block at most
:math:`\log_2 n` times after the initial round, which gives :math:`O(m \log n \log m)`
overall (:math:`O(m \log n)` up to the sorting).

Floating point
--------------
Sums are compared bitwise, on their int64 view, as in the signature refinement this
replaces. Stability with respect to the largest pieces, which are never processed as
splitters, holds in exact arithmetic because
:math:`P(X_{big}) = P(X) - \sum P(X_{small})`; in floating point it holds only up to
rounding. With probabilities whose block sums are exact (dyadic rationals, one
successor per block, ...) the result is exactly stable; in general use :func:`check_stable`
on the result (it recomputes every :math:`P(C \mid s, j)` over the final blocks) and reject
the lumping when its deviation is above a tolerance.

Floating-point addition is not associative, so bitwise equality of block sums is not
preserved under taking unions of blocks, and "the coarsest stable partition" is then only
defined up to rounding: when block sums are inexact, this algorithm (which compares sums
over splitters) and the full-signature refinement (which compares sums over the current,
coarser-then-finer blocks) can end one or two blocks apart, both stable to within a few ulp.
With exact block sums both give the same partition, and it is the exact-arithmetic one.
All sums here are taken strictly left to right over the sorted probabilities (note that
``np.add.reduceat`` does not add left to right, so it may differ in the last bit).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["refine_lumping", "check_stable"]

_SMALL = 24  # insertion sort up to this many items


# --------------------------------------------------------------------------- helpers


@njit(cache=True)
def _reverse(indptr, indices, probs, n_states):
    """Reverse adjacency by counting sort: for every target ``t`` the entries
    ``rrow[rptr[t]:rptr[t+1]]`` (rows, increasing) and ``rp`` (their probabilities)."""
    m = indices.size
    rptr = np.zeros(n_states + 1, np.int64)
    for k in range(m):
        rptr[indices[k] + 1] += 1
    for t in range(n_states):
        rptr[t + 1] += rptr[t]
    fill = rptr[:-1].copy()
    rrow = np.empty(m, np.int64)
    rp = np.empty(m, np.float64)
    for r in range(indptr.size - 1):
        for k in range(indptr[r], indptr[r + 1]):
            t = indices[k]
            q = fill[t]
            rrow[q] = r
            rp[q] = probs[k]
            fill[t] = q + 1
    return rptr, rrow, rp


@njit(cache=True)
def _argsort(keys, n, idx, tmp):
    """Stable argsort of ``keys[:n]`` into ``idx[:n]`` (``tmp``: int64 scratch of size >= n).

    Merge sort on (key, index) pairs: insertion sort of runs of ``_SMALL`` items, then
    bottom-up merges, O(n log n); much quicker to compile than ``np.argsort``.
    """
    if n <= _SMALL:
        for i in range(n):
            x = keys[i]
            k = i - 1
            while k >= 0 and keys[idx[k]] > x:
                idx[k + 1] = idx[k]
                k -= 1
            idx[k + 1] = i
        return
    ka = keys[:n].copy()
    kb = np.empty_like(ka)
    for i in range(n):
        idx[i] = i
    for lo in range(0, n, _SMALL):
        hi = min(lo + _SMALL, n)
        for i in range(lo + 1, hi):
            x = ka[i]
            y = idx[i]
            k = i - 1
            while k >= lo and ka[k] > x:
                ka[k + 1] = ka[k]
                idx[k + 1] = idx[k]
                k -= 1
            ka[k + 1] = x
            idx[k + 1] = y
    src_k, dst_k, src_i, dst_i = ka, kb, idx, tmp
    flips = 0
    width = _SMALL
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if src_k[j] < src_k[i]:
                    dst_k[k] = src_k[j]
                    dst_i[k] = src_i[j]
                    j += 1
                else:
                    dst_k[k] = src_k[i]
                    dst_i[k] = src_i[i]
                    i += 1
                k += 1
            while i < mid:
                dst_k[k] = src_k[i]
                dst_i[k] = src_i[i]
                i += 1
                k += 1
            while j < hi:
                dst_k[k] = src_k[j]
                dst_i[k] = src_i[j]
                j += 1
                k += 1
        src_k, dst_k, src_i, dst_i = dst_k, src_k, dst_i, src_i
        flips += 1
        width *= 2
    if flips % 2 == 1:
        idx[:n] = tmp[:n]


@njit(cache=True)
def _sorted_sum(buf, n, idx, tmp):
    """Sum of ``buf[:n]`` in increasing order, left to right (``idx, tmp``: scratch)."""
    if n <= _SMALL:
        for i in range(1, n):
            x = buf[i]
            k = i - 1
            while k >= 0 and buf[k] > x:
                buf[k + 1] = buf[k]
                k -= 1
            buf[k + 1] = x
        w = buf[0]
        for i in range(1, n):
            w += buf[i]
        return w
    _argsort(buf, n, idx, tmp)
    w = buf[idx[0]]
    for i in range(1, n):
        w += buf[idx[i]]
    return w


@njit(cache=True)
def _mix(h, x):
    """One step of the signature hash (uint64 arithmetic, splitmix64 finaliser)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (h ^ z) * np.uint64(0x100000001B3) + np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _same_signature(s1, s2, sig_lo, sig_hi, urow, ubits, n_joint):
    """Exact equality of the signatures of two touched states (joint actions and float bits)."""
    lo1 = sig_lo[s1]
    lo2 = sig_lo[s2]
    n = sig_hi[s1] - lo1
    if sig_hi[s2] - lo2 != n:
        return False
    off1 = s1 * n_joint
    off2 = s2 * n_joint
    for k in range(n):
        if urow[lo1 + k] - off1 != urow[lo2 + k] - off2:
            return False
        if ubits[lo1 + k] != ubits[lo2 + k]:
            return False
    return True


# --------------------------------------------------------------------------- refinement


@njit(cache=True)
def _refine_kernel(indptr, indices, probs, n_states, n_joint, init_label, n_init):
    N = n_states
    J = n_joint
    m = indices.size
    rptr, rrow, rp = _reverse(indptr, indices, probs, N)
    maxdeg = 1
    for r in range(indptr.size - 1):
        maxdeg = max(maxdeg, indptr[r + 1] - indptr[r])

    # refinable partition, blocks = initial labels (counting sort)
    elems = np.empty(N, np.int64)
    loc = np.empty(N, np.int64)
    blk = init_label.copy()
    bstart = np.zeros(N + 1, np.int64)
    bend = np.zeros(N + 1, np.int64)
    bmark = np.zeros(N + 1, np.int64)
    for s in range(N):
        bend[init_label[s]] += 1
    acc = 0
    for b in range(n_init):
        bstart[b] = acc
        acc += bend[b]
        bend[b] = bstart[b]
    for s in range(N):
        b = init_label[s]
        elems[bend[b]] = s
        loc[s] = bend[b]
        bend[b] += 1
    nb = n_init

    # splitter queue; every block id enters it at most once, so N slots suffice
    queue = np.empty(N + 1, np.int64)
    head = 0
    tail = 0
    for b in range(n_init):
        queue[tail] = b
        tail += 1

    # work buffers
    n_rows = indptr.size - 1
    rcnt = np.zeros(n_rows + 1, np.int64)
    order = np.empty(m, np.int64)
    otmp = np.empty(m, np.int64)
    crow = np.empty(m, np.int64)  # gathered contributions
    cp = np.empty(m, np.float64)
    urow = np.empty(m, np.int64)  # touched rows (increasing) and their sums
    uw = np.empty(m, np.float64)
    ubits = uw.view(np.int64)
    pbuf = np.empty(maxdeg, np.float64)
    pidx = np.empty(maxdeg, np.int64)
    ptmp = np.empty(maxdeg, np.int64)
    sig_lo = np.empty(N, np.int64)
    sig_hi = np.empty(N, np.int64)
    hsh = np.empty(N, np.uint64)
    tblocks = np.empty(N, np.int64)
    gid = np.empty(N, np.int64)
    ts = np.empty(N, np.int64)  # touched states of one block, their hashes, sort order
    hs = np.empty(N, np.uint64)
    o = np.empty(N, np.int64)
    gsize = np.empty(N, np.int64)
    grep = np.empty(N, np.int64)
    gfill = np.empty(N, np.int64)

    while head < tail:
        B = queue[head]
        head += 1

        # 1. gather the entries into B and sum them row by row in sorted order
        k = 0
        for pos in range(bstart[B], bend[B]):
            t = elems[pos]
            for e in range(rptr[t], rptr[t + 1]):
                crow[k] = rrow[e]
                cp[k] = rp[e]
                k += 1
        if k == 0:
            continue
        if 8 * k >= n_rows:
            # large splitter: counting sort by row, O(k + N*J)
            rcnt[:] = 0
            for i in range(k):
                rcnt[crow[i] + 1] += 1
            for r in range(n_rows):
                rcnt[r + 1] += rcnt[r]
            for i in range(k):
                r = crow[i]
                order[rcnt[r]] = i
                rcnt[r] += 1
        else:
            _argsort(crow, k, order, otmp)
        nu = 0
        i = 0
        while i < k:
            r = crow[order[i]]
            n = 0
            while i < k and crow[order[i]] == r:
                pbuf[n] = cp[order[i]]
                n += 1
                i += 1
            urow[nu] = r
            uw[nu] = _sorted_sum(pbuf, n, pidx, ptmp)
            nu += 1

        # 2. signatures of the touched states; mark them (move to the front of their block)
        ntb = 0
        i = 0
        while i < nu:
            s = urow[i] // J
            lo = i
            h = np.uint64(0x84222325CBF29CE4)
            while i < nu and urow[i] // J == s:
                h = _mix(h, np.uint64(urow[i] - s * J))
                h = _mix(h, np.uint64(ubits[i]))
                i += 1
            sig_lo[s] = lo
            sig_hi[s] = i
            hsh[s] = h
            X = blk[s]
            if bmark[X] == 0:
                tblocks[ntb] = X
                ntb += 1
            pos = bstart[X] + bmark[X]
            p0 = loc[s]
            s2 = elems[pos]
            elems[pos] = s
            loc[s] = pos
            elems[p0] = s2
            loc[s2] = p0
            bmark[X] += 1

        # 3. split every touched block by signature
        for q in range(ntb):
            X = tblocks[q]
            a = bstart[X]
            c = bmark[X]
            e = bend[X]
            bmark[X] = 0
            if e - a == 1:
                continue
            u = e - a - c
            for i in range(c):
                s = elems[a + i]
                ts[i] = s
                hs[i] = hsh[s]
            _argsort(hs, c, o, otmp)
            ng = 0
            i = 0
            while i < c:
                h = hs[o[i]]
                g0 = ng
                while i < c and hs[o[i]] == h:
                    s = ts[o[i]]
                    found = -1
                    for g in range(g0, ng):
                        if _same_signature(s, grep[g], sig_lo, sig_hi, urow, ubits, J):
                            found = g
                            break
                    if found < 0:
                        found = ng
                        grep[ng] = s
                        gsize[ng] = 0
                        ng += 1
                    gid[i] = found
                    gsize[found] += 1
                    i += 1
            if ng == 1 and u == 0:
                continue  # every state of X has the same signature
            # lay the groups out contiguously at the front of X's segment
            big = 0
            acc = a
            for g in range(ng):
                gfill[g] = acc
                acc += gsize[g]
                if gsize[g] > gsize[big]:
                    big = g
            for i in range(c):
                s = ts[o[i]]
                g = gid[i]
                pos = gfill[g]
                elems[pos] = s
                loc[s] = pos
                gfill[g] = pos + 1
            # gfill[g] is now the end of group g; the largest piece keeps the id X
            keep = -1 if u >= gsize[big] else big
            if keep < 0:
                bstart[X] = a + c
            else:
                bstart[X] = gfill[keep] - gsize[keep]
                bend[X] = gfill[keep]
                # the untouched rest (smaller than the kept group) becomes a new block
                if u > 0:
                    bstart[nb] = a + c
                    bend[nb] = e
                    for pos in range(a + c, e):
                        blk[elems[pos]] = nb
                    queue[tail] = nb
                    tail += 1
                    nb += 1
            for g in range(ng):
                if g == keep:
                    continue
                bstart[nb] = gfill[g] - gsize[g]
                bend[nb] = gfill[g]
                for pos in range(bstart[nb], bend[nb]):
                    blk[elems[pos]] = nb
                queue[tail] = nb
                tail += 1
                nb += 1

    # labels by first occurrence
    new = np.full(nb, -1, np.int64)
    out = np.empty(N, np.int64)
    cnt = 0
    for s in range(N):
        b = blk[s]
        if new[b] < 0:
            new[b] = cnt
            cnt += 1
        out[s] = new[b]
    return out


def _as_model(indptr, indices, probs, n_states, n_joint):
    N, J = int(n_states), int(n_joint)
    if N < 0 or J < 1:
        raise ValueError(f"need n_states >= 0 and n_joint >= 1; got {N}, {J}")
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    if indptr.shape != (N * J + 1,):
        raise ValueError(f"indptr must have shape ({N * J + 1},); got {indptr.shape}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size or indices.shape != probs.shape:
        raise ValueError("inconsistent CSR arrays (indptr, indices, probs)")
    if indices.size and (indices.min() < 0 or indices.max() >= N):
        raise ValueError("successor index out of range")
    if np.any(~(probs > 0)) or not np.all(np.isfinite(probs)):
        raise ValueError("probabilities must be finite and > 0")
    return indptr, indices, probs, N, J


def _dense_labels(labels, N):
    labels = np.asarray(labels)
    if labels.shape != (N,):
        raise ValueError(f"labels must have shape ({N},); got {labels.shape}")
    uniq, inv = np.unique(labels, return_inverse=True)
    return np.ascontiguousarray(inv.ravel(), dtype=np.int64), int(uniq.size)


def refine_lumping(indptr, indices, probs, n_states, n_joint, init_label) -> np.ndarray:
    """Coarsest stable refinement of an initial partition (Hopcroft-style splitter refinement).

    Parameters
    ----------
    indptr : array_like of int, shape (n_states * n_joint + 1,)
        CSR row pointers over the rows ``r = s * n_joint + j``.
    indices : array_like of int, shape (nnz,)
        Successor states, sorted and without duplicates within a row.
    probs : array_like of float, shape (nnz,)
        Transition probabilities, all > 0 (rows need not sum to one).
    n_states, n_joint : int
        Number of states ``N`` and of joint actions ``J``.
    init_label : array_like of int, shape (n_states,)
        Initial partition; states with different labels are never merged. Any integer
        labels are accepted (they are compressed first).

    Returns
    -------
    numpy.ndarray of int64, shape (n_states,)
        Labels of the coarsest partition that refines ``init_label`` and is stable (for
        every two states ``s, s'`` of one block, every joint action ``j`` and every block
        ``C``: ``P(C|s,j) == P(C|s',j)``), numbered ``0..B-1`` by first occurrence (the
        block of state 0 is 0, the next new block met scanning ``s = 0, 1, ...`` is 1, ...).

    Notes
    -----
    See the module docstring for the algorithm (Valmari & Franceschinis 2010; Derisavi,
    Hermanns & Sanders 2003): :math:`O(m \\log n)` splitter work up to sorting, against
    :math:`O(n \\cdot m)` for the repeated full-signature refinement. Sums over splitters are
    taken in increasing order of the probabilities and compared bitwise, so equal multisets
    give equal sums. Stability with respect to blocks never used as splitters holds only
    up to rounding when block sums are inexact; verify with :func:`check_stable`.
    """
    indptr, indices, probs, N, J = _as_model(indptr, indices, probs, n_states, n_joint)
    label, n_init = _dense_labels(init_label, N)
    if N == 0:
        return np.zeros(0, np.int64)
    return _refine_kernel(indptr, indices, probs, N, J, label, n_init)


# --------------------------------------------------------------------------- stability check


@njit(cache=True)
def _sort_pairs(kb, kp, n):
    """Sort ``(kb[:n], kp[:n])`` in place by ``(kb, kp)``."""
    if n <= _SMALL:
        for i in range(1, n):
            b = kb[i]
            p = kp[i]
            k = i - 1
            while k >= 0 and (kb[k] > b or (kb[k] == b and kp[k] > p)):
                kb[k + 1] = kb[k]
                kp[k + 1] = kp[k]
                k -= 1
            kb[k + 1] = b
            kp[k + 1] = p
    else:  # by p, then stably by block
        idx = np.empty(n, np.int64)
        tmp = np.empty(n, np.int64)
        _argsort(kp, n, idx, tmp)
        b1 = kb[:n][idx]
        p1 = kp[:n][idx]
        _argsort(b1, n, idx, tmp)
        kb[:n] = b1[idx]
        kp[:n] = p1[idx]


@njit(cache=True)
def _check_kernel(indptr, indices, probs, n_states, n_joint, labels, n_blocks, atol):
    N = n_states
    J = n_joint
    R = N * J
    m = indices.size
    maxdeg = 1
    for r in range(R):
        maxdeg = max(maxdeg, indptr[r + 1] - indptr[r])
    kb = np.empty(maxdeg, np.int64)
    kp = np.empty(maxdeg, np.float64)
    ob = np.empty(m, np.int64)
    ow = np.empty(m, np.float64)
    optr = np.empty(R + 1, np.int64)
    # P(C | row) for every row and block C it reaches: sorted by C, summed in sorted order
    nout = 0
    for r in range(R):
        optr[r] = nout
        lo = indptr[r]
        d = indptr[r + 1] - lo
        for q in range(d):
            kb[q] = labels[indices[lo + q]]
            kp[q] = probs[lo + q]
        _sort_pairs(kb, kp, d)
        q = 0
        while q < d:
            b = kb[q]
            w = kp[q]
            q += 1
            while q < d and kb[q] == b:
                w += kp[q]
                q += 1
            ob[nout] = b
            ow[nout] = w
            nout += 1
    optr[R] = nout
    rep = np.full(n_blocks, -1, np.int64)
    for s in range(N):
        if rep[labels[s]] < 0:
            rep[labels[s]] = s
    dev = 0.0
    for s in range(N):
        s0 = rep[labels[s]]
        if s0 == s:
            continue
        for j in range(J):
            i1 = optr[s * J + j]
            e1 = optr[s * J + j + 1]
            i2 = optr[s0 * J + j]
            e2 = optr[s0 * J + j + 1]
            while i1 < e1 or i2 < e2:
                if i2 >= e2 or (i1 < e1 and ob[i1] < ob[i2]):
                    diff = abs(ow[i1])
                    i1 += 1
                elif i1 >= e1 or ob[i2] < ob[i1]:
                    diff = abs(ow[i2])
                    i2 += 1
                else:
                    diff = abs(ow[i1] - ow[i2])
                    i1 += 1
                    i2 += 1
                if diff > dev:
                    dev = diff
                    if dev > atol:
                        return dev
    return dev


def check_stable(indptr, indices, probs, n_states, n_joint, labels, atol=np.inf) -> float:
    """Largest deviation from stability of a partition.

    Parameters
    ----------
    indptr, indices, probs, n_states, n_joint
        The model, as in :func:`refine_lumping`.
    labels : array_like of int, shape (n_states,)
        Block of every state (any integer labels).
    atol : float, optional
        Early exit: as soon as a deviation larger than ``atol`` is found it is returned (so
        the result is ``> atol`` exactly when the true maximum is). The default ``inf``
        always scans everything and returns the exact maximum.

    Returns
    -------
    float
        :math:`\\max_{s, j, C} |P(C \\mid s, j) - P(C \\mid rep(s), j)|`, with ``rep(s)`` the
        first state of the block of ``s`` and ``C`` ranging over the blocks; ``0.0`` for an
        exactly stable partition. Every :math:`P(C \\mid s, j)` is summed over the final
        blocks in increasing order of the probabilities, in one :math:`O(m \\log m)` pass.
    """
    indptr, indices, probs, N, J = _as_model(indptr, indices, probs, n_states, n_joint)
    label, n_blocks = _dense_labels(labels, N)
    if N == 0:
        return 0.0
    return float(_check_kernel(indptr, indices, probs, N, J, label, n_blocks, float(atol)))
