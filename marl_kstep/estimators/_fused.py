"""Small problems in one compiled call: pass 1, dense ``I - M``, LU, ``V_k``, ``nu_k``, pass 2.

Private to :mod:`marl_kstep.estimators`; used for models of at most
``Settings.fused_max_states`` (lumped) states whose passes run serially, where the cost of
separate calls (scipy's LU, numba dispatch) would dominate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._linalg import _lu_inplace, _lu_solve, pivot_ratio
from ._walk import _MODE_GRAD, _MODE_VALUES, _loops

__all__ = ["fused_small"]


@njit(cache=True)
def fused_small(kind, want_grad, k, sm, theta, toff, mu, m_ptr, m_idx):
    """Returns ``(V_k, grad, ratio)`` with ``ratio`` the smallest over largest LU pivot of
    ``I - M`` (0 when singular: then ``V_k`` and ``grad`` are not computed). ``kind`` is
    a tag of :func:`._walk.walk_kind`: one specialisation per kind of walk, compiled when
    first used."""
    N = sm[7].shape[0]
    W = np.zeros(N)
    m_data = np.zeros(m_idx.size)
    grad = np.zeros(theta.size)
    e = np.zeros(0)
    _loops(kind, 0, N, _MODE_VALUES, k, sm, theta, toff, e, e, W, m_ptr, m_idx, m_data, e, 0)
    A = np.zeros((N, N))
    for r in range(N):
        A[r, r] = 1.0
        for p in range(m_ptr[r], m_ptr[r + 1]):
            A[r, m_idx[p]] -= m_data[p]
    piv = np.empty(N, np.int64)
    if not _lu_inplace(A, piv):
        return W, grad, 0.0
    ratio = pivot_ratio(A)
    Vk = _lu_solve(A, piv, W, False)
    if want_grad:
        nu = _lu_solve(A, piv, mu, True)
        _loops(kind, 0, N, _MODE_GRAD, k, sm, theta, toff, Vk, nu, e, m_ptr[:0], m_ptr[:0], e, grad, 0)
    return Vk, grad, ratio
