r"""Linear algebra for :math:`(I - M) V_k = W` and :math:`(I - M)^\top \nu_k = \mu` (SPEC §3).

Private to :mod:`marl_kstep.estimators`. Small systems: a compiled dense LU with partial
pivoting (:func:`_lu_inplace`, :func:`_lu_solve`) or SuperLU; larger ones: a compiled BiCGSTAB
(:func:`_bicgstab_pair`, the value and occupancy systems side by side on two threads) with
SuperLU as the fallback. :class:`Solver` chooses and checks: on the simplex
:math:`\operatorname{cond}(I - M) \le (1 + \gamma^k)/(1 - \gamma^k)`, but off it (free
entries) :math:`I - M` can be singular, and then a :class:`ValueError` says so rather than
returning a huge number.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from scipy import sparse
from scipy.sparse.linalg import splu

__all__ = ["Solver", "SingularSystemError", "pivot_ratio", "singular_message"]


class SingularSystemError(ValueError):
    r"""``I - M`` is singular or nearly singular at the given parameters: off the simplex at any
    discount, on it only when :math:`\gamma^k` is within about ``Settings.singular_rtol`` of 1."""


def singular_message(ratio: float, rtol: float) -> str:
    return (f"I - M is singular or nearly singular at this policy (smallest / largest LU pivot = {ratio:.1e}, "
            f"below Settings.singular_rtol={rtol:g}): V_k = (I - M)^-1 W is not defined or not accurate. Off the "
            "simplex (a policy built with check_simplex=False whose rows do not sum to 1) this can happen at any "
            "gamma; on the simplex only when gamma^k is so close to 1 that 1 - gamma^k is about "
            "Settings.singular_rtol or less (cond(I - M) <= (1 + gamma^k) / (1 - gamma^k)): use a smaller gamma")


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
def pivot_ratio(LU):
    """Smallest over largest absolute diagonal entry of an LU factor (0 for a zero pivot)."""
    lo = np.inf
    hi = 0.0
    for i in range(LU.shape[0]):
        d = abs(LU[i, i])
        lo = min(lo, d)
        hi = max(hi, d)
    return lo / hi if hi > 0.0 else 0.0


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
def _i_minus_mt(ptr, idx, dat, x, y, w):
    """``y = (I - M^T) x`` from the CSR of ``M`` (rows scattered into ``y``, no transposed
    copy); returns ``(w . y, y . y, y . x)``."""
    n = ptr.shape[0] - 1
    for r in range(n):
        y[r] = x[r]
    for r in range(n):
        xr = x[r]
        if xr != 0.0:
            for p in range(ptr[r], ptr[r + 1]):
                y[idx[p]] -= dat[p] * xr
    wy = 0.0
    yy = 0.0
    yx = 0.0
    for r in range(n):
        acc = y[r]
        wy += w[r] * acc
        yy += acc * acc
        yx += acc * x[r]
    return wy, yy, yx


@njit(cache=True)
def _matvec(trans, ptr, idx, dat, x, y, w):
    if trans:
        return _i_minus_mt(ptr, idx, dat, x, y, w)
    return _i_minus_m(ptr, idx, dat, x, y, w)


@njit(cache=True)
def _bicgstab(ptr, idx, dat, b, rtol, maxit, trans=False):
    """BiCGSTAB (van der Vorst 1992) for ``(I - M) x = b`` (``(I - M^T) x = b`` if ``trans``),
    started at ``x = b``.

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
        _matvec(trans, ptr, idx, dat, x, t, t)  # (re)start from the true residual
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
            d = _matvec(trans, ptr, idx, dat, p, v, rh)[0]
            if d == 0.0:
                break
            alpha = rho1 / d
            for i in range(n):
                s[i] = r[i] - alpha * v[i]
            _, tt, ts = _matvec(trans, ptr, idx, dat, s, t, s)
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
    _matvec(trans, ptr, idx, dat, x, t, t)
    res = 0.0
    for i in range(n):
        res += (b[i] - t[i]) ** 2
    return x, res <= tol2


@njit(parallel=True, cache=True)
def _bicgstab_pair(ptr, idx, dat, b, c, both, rtol, maxit):
    """Solve ``(I - M) x = b`` and, if ``both``, ``(I - M)^T y = c``, one system per thread
    (both read the same CSR of ``M``: the transposed products scatter its rows, so no
    transposed copy is made).

    Returns ``(out, ok)``: ``out[0] = x``, ``out[1] = y``; ``ok[t]`` whether system ``t``
    reached the tolerance."""
    n = b.shape[0]
    out = np.zeros((2, n))
    ok = np.ones(2, np.bool_)
    n_tasks = 2 if both else 1
    for task in prange(n_tasks):
        if task == 0:
            xs, conv = _bicgstab(ptr, idx, dat, b, rtol, maxit)
        else:
            xs, conv = _bicgstab(ptr, idx, dat, c, rtol, maxit, True)
        out[task, :] = xs
        ok[task] = conv
    return out, ok


def iteration_cap(csr, rtol: float) -> int:
    r"""Most BiCGSTAB iterations allowed for ``(I - M)``: with :math:`q = \|M\|_\infty`
    (largest absolute row sum; :math:`\le \gamma^k` on the simplex) the Neumann series
    reaches ``rtol`` after :math:`t = \lceil \log(\text{rtol}(1 - q)) / \log q \rceil`
    terms; the cap is :math:`\max(100, 2t)`, and ``10 N`` when :math:`q \ge 1` (off the
    simplex), never more than ``10 N``."""
    m_ptr, _, m_data = csr
    N = m_ptr.size - 1
    if N == 0 or m_data.size == 0:
        return 100
    sums = np.add.reduceat(np.abs(m_data), m_ptr[:-1][np.diff(m_ptr) > 0])
    q = float(sums.max())
    if not q < 1.0:
        return 10 * N
    t = 1 if q == 0.0 else int(np.ceil(np.log(max(rtol, 1e-300) * (1.0 - q)) / np.log(q)))
    return int(min(10 * N, max(100, 2 * t)))


@njit(cache=True)
def _bicgstab_pair_serial(ptr, idx, dat, b, c, both, rtol, maxit):
    """:func:`_bicgstab_pair` on the calling thread (no parallel region: for small systems a
    region's wake-ups cost more than the second thread saves, most of all on a busy machine)."""
    n = b.shape[0]
    out = np.zeros((2, n))
    ok = np.ones(2, np.bool_)
    out[0, :], ok[0] = _bicgstab(ptr, idx, dat, b, rtol, maxit)
    if both:
        out[1, :], ok[1] = _bicgstab(ptr, idx, dat, c, rtol, maxit, True)
    return out, ok


class Solver:
    r"""Solves ``(I - M) x = b`` and ``(I - M)^T y = c``; ``M`` given by its CSR arrays.

    Parameters
    ----------
    m_ptr, m_idx, m_data : ndarray
        CSR of ``M`` (shape ``(N, N)``).
    direct_max_states : int
        Sparse LU up to this many states, compiled BiCGSTAB above it.
    iter_rtol : float
        Relative residual BiCGSTAB must reach (else the system is solved by sparse LU).
    singular_rtol : float
        Pivot ratio below which the system is refused as singular.
    parallel : bool
        Solve the two systems side by side on two threads (else one after the other).
    fallback_max_states : int
        Largest system the sparse LU fallback may factor; a larger system that BiCGSTAB does
        not solve is refused with a ``ValueError`` instead of a factorisation of unbounded cost.

    All work is bounded: BiCGSTAB stops after :func:`iteration_cap` iterations (from the
    contraction :math:`q = \|M\|_\infty \le \gamma^k` on the simplex: the iterations Neumann's
    series would need, twice, at least 100), the fallback after one factorisation.
    """

    def __init__(self, m_ptr, m_idx, m_data, *, direct_max_states: int, iter_rtol: float, singular_rtol: float,
                 fallback_max_states: int = 50_000, parallel: bool = True):
        self.csr = (m_ptr, m_idx, m_data)
        self.parallel = parallel
        self.iter_rtol = iter_rtol
        self.singular_rtol = singular_rtol
        self.fallback_max_states = fallback_max_states
        self.lu = None
        if m_ptr.size - 1 <= direct_max_states:
            self._factor()

    def _factor(self):
        m_ptr, m_idx, m_data = self.csr
        N = m_ptr.size - 1
        if N > self.fallback_max_states:
            raise ValueError(f"the iterative solve of the {N:,}-state system I - M did not reach the relative residual "
                             f"{self.iter_rtol:g} within {iteration_cap(self.csr, self.iter_rtol):,} iterations, and "
                             f"the system is larger than Settings.direct_fallback_max_states="
                             f"{self.fallback_max_states:,} for a sparse LU; on the simplex this should not happen "
                             "(please report it); raise that setting to allow the factorisation")
        A = (sparse.identity(N, format="csr") - sparse.csr_matrix((m_data, m_idx, m_ptr), shape=(N, N))).tocsc()
        try:
            self.lu = splu(A)
        except RuntimeError:  # "Factor is exactly singular"
            raise SingularSystemError(singular_message(0.0, self.singular_rtol)) from None
        d = np.abs(self.lu.U.diagonal())
        ratio = float(d.min() / d.max()) if d.size and d.max() > 0 else 0.0
        if not ratio >= self.singular_rtol:
            raise SingularSystemError(singular_message(ratio, self.singular_rtol))

    def _direct(self, b: np.ndarray, trans: str) -> np.ndarray:
        if self.lu is None:
            self._factor()
        return self.lu.solve(b, trans=trans)

    def solve(self, b: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``x`` with ``(I - M) x = b`` and, unless ``c`` is None, ``y`` with ``(I - M)^T y = c``."""
        b = np.ascontiguousarray(b, dtype=np.float64)
        if self.lu is not None:
            return self._direct(b, "N"), (None if c is None else self._direct(c, "T"))
        both = c is not None
        c = np.ascontiguousarray(b if c is None else c, dtype=np.float64)
        pair = _bicgstab_pair if self.parallel else _bicgstab_pair_serial
        out, ok = pair(*self.csr, b, c, both, self.iter_rtol, iteration_cap(self.csr, self.iter_rtol))
        # a converged answer far larger than the right-hand side can only come from a nearly
        # singular system (off the simplex): let the LU check decide
        for t, rhs in ((0, b), (1, c)):
            if ok[t] and np.abs(out[t]).max() * self.singular_rtol > max(np.abs(rhs).max(), 1e-300):
                ok[t] = False
        x = out[0] if ok[0] else self._direct(b, "N")
        y = None if not both else (out[1] if ok[1] else self._direct(c, "T"))
        return x, y
