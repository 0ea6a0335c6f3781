r"""Planning an exact enumeration once per (model, k): lumping, budget, pattern, threads.

Private to :mod:`marl_kstep.estimators`. :func:`make_plan` does everything that does not
depend on :math:`\theta`:

1. lumping (the bisimulation quotient, :func:`marl_kstep.model.lump`), when asked;
2. the path budget: with ``C[s, s']`` the number of joint actions leading from ``s`` to
   ``s'``, a pass walks at most :math:`\sum_{t=1}^{k} \mathbf 1^\top C^t \mathbf 1` steps;
   when that bound passes the budget the steps are counted exactly (the paths do not depend
   on :math:`\theta`), stopping as soon as the count passes the budget, and a plan over
   budget is refused with a :class:`ValueError`;
3. the structural pattern of :math:`M` (states reachable in exactly ``k`` steps, by
   repeated squaring: :math:`O(\log k)` sparse products);
4. serial or parallel passes, and whether the one-call small path applies.

The plan is immutable and belongs to the estimator that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import sparse

from ..model import JointMDP, Lumping, lump
from ..settings import Settings
from ._walk import count_steps, static_arrays

__all__ = ["Plan", "make_plan", "edge_counts", "kernel_args", "path_step_bound", "path_steps", "theta_offsets"]

#: Above this k the path bound (k sparse products) is skipped for the exact, capped count.
_BOUND_MAX_K = 64
#: Largest walk stack (k levels of per-agent arrays) a plan may ask for.
_MAX_STACK_BYTES = 256 * 2**20


def theta_offsets(n_obs, n_actions) -> np.ndarray:
    """Offset of every agent's table in the flat parameter vector."""
    sizes = [o * a for o, a in zip(n_obs, n_actions, strict=True)]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def edge_counts(mdp: JointMDP) -> sparse.csr_matrix:
    """``C[s, s']``: the number of joint actions that can lead from ``s`` to ``s'``."""
    N, J = mdp.n_states, mdp.n_joint_actions
    rows = np.repeat(np.arange(N * J) // J, np.diff(mdp.indptr))
    return sparse.csr_matrix((np.ones(rows.size), (rows, mdp.indices)), shape=(N, N))


def path_step_bound(C: sparse.csr_matrix, k: int, stop_above: float) -> float:
    r""":math:`\sum_{t=1}^{k} \mathbf 1^\top C^t \mathbf 1` (stops summing once above ``stop_above``)."""
    x = np.ones(C.shape[0])
    bound = 0.0
    for _ in range(k):
        x = C @ x
        bound += float(x.sum())
        if bound > stop_above:
            break
    return bound


def _boolean_power(A: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Pattern of ``A^k`` by repeated squaring."""
    def norm(X):
        X = X.tocsr()
        X.data[:] = 1.0
        return X

    A = norm(A.copy())
    R = None
    while k:
        if k & 1:
            R = A if R is None else norm(R @ A)
        k >>= 1
        if k:
            A = norm(A @ A)
    R.sort_indices()
    return R


def kernel_args(mdp: JointMDP) -> tuple[tuple, np.ndarray, np.ndarray]:
    """``(sm, toff, ones)``: the kernel arrays, the per-agent offsets and a parameter vector of
    ones (the paths, hence their count, do not depend on the parameter values)."""
    n_params = int(sum(o * a for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)))
    return static_arrays(mdp), theta_offsets(mdp.n_obs, mdp.n_actions), np.ones(n_params)


def path_steps(mdp: JointMDP, k: int, budget: int, *, C=None, args=None) -> int:
    r"""Path steps of one pass for window ``k``: the bound :math:`\sum_t \mathbf 1^\top C^t \mathbf 1`
    when it is within ``budget``, else the exact count (stopped just above the budget).

    Refuses windows whose walk stack alone would be too large, and answers ``N k`` (a floor:
    every start state has a path of depth ``k``) without walking when that is over the budget.
    Long windows skip the bound (``k`` sparse products) for the capped count."""
    stack_bytes = (k + 1) * 8 * (4 * mdp.n_agents + 12)
    if stack_bytes > _MAX_STACK_BYTES:
        raise ValueError(f"k={k} needs a {stack_bytes / 2**20:,.0f} MiB walk stack (more than "
                         f"{_MAX_STACK_BYTES / 2**20:,.0f} MiB); windows this long are beyond exact enumeration")
    floor = mdp.n_states * k
    if floor > budget:
        return floor
    if k <= _BOUND_MAX_K:
        bound = path_step_bound(edge_counts(mdp) if C is None else C, k, budget)
        if bound <= budget:
            return int(bound)
    sm, toff, ones = kernel_args(mdp) if args is None else args
    return int(count_steps(k, sm, ones, toff, budget))


@dataclass(frozen=True, eq=False)
class Plan:
    """What an exact estimator decided once for one model and window length.

    Attributes
    ----------
    model : JointMDP
        The model the passes walk: the quotient when lumping merged states, else the model.
    k : int
    lumping : Lumping or None
        The lumping found (``None`` when ``lump=False``); ``lumping.skipped`` says why it was
        skipped, if it was.
    block : ndarray or None
        Block of every original state when the passes walk a quotient, else ``None``.
    sm, toff : tuple, ndarray
        Kernel arrays of ``model`` and the per-agent offsets in the flat parameter vector.
    m_ptr, m_idx : ndarray
        Structural pattern of ``M``.
    path_steps : int
        Path steps of one pass: the bound of the module docstring when it is within budget,
        else the exact count.
    serial, fused : bool
        Passes on the calling thread; the whole computation in one compiled call.
    parallel_solve : bool
        The two linear systems solved side by side on two threads (parallel passes, or at
        least ``Settings.parallel_solve_min_nnz`` nonzeros in ``M``).
    n_chunks : int
        Parallel chunks of start states.
    settings : Settings
        The settings in force when the plan was made.
    """

    model: JointMDP
    k: int
    lumping: Lumping | None
    block: np.ndarray | None
    sm: tuple
    toff: np.ndarray
    m_ptr: np.ndarray
    m_idx: np.ndarray
    path_steps: int
    serial: bool
    fused: bool
    n_chunks: int
    parallel_solve: bool
    settings: Settings


def make_plan(mdp: JointMDP, k: int, *, lump_model: bool, max_path_steps: int, settings: Settings,
              lumping: Lumping | None = None) -> Plan:
    """Plan the exact enumeration of ``mdp`` for window ``k`` (see the module docstring).

    ``lumping`` may pass a lumping already computed for ``mdp`` (it depends on nothing else)."""
    work, block = mdp, None
    if lump_model:
        if lumping is None:
            lumping = lump(mdp)
        if not lumping.is_trivial:
            work, block = lumping.quotient, lumping.block
    else:
        lumping = None
    sm, toff, ones = kernel_args(work)
    C = edge_counts(work)
    budget = int(max_path_steps)
    steps = path_steps(work, k, budget, C=C, args=(sm, toff, ones))
    if steps > budget:
        lumped = "" if block is None else f" (lumped from {mdp.n_states})"
        raise ValueError(
            f"k={k} path enumeration on {work.n_states} states{lumped} needs more than {budget:,} path steps per "
            f"pass, over the budget max_path_steps={budget:,}; lower k, or raise the budget with max_path_steps=... "
            f"(or mk.configure(max_path_steps=...), or the MARL_KSTEP_MAX_PATH_STEPS environment variable) if you "
            f"can afford it"
        )
    threshold = settings.serial_max_path_steps
    serial = steps < threshold or count_steps(k, sm, ones, toff, threshold) < threshold
    R = _boolean_power(C, k)
    fused = serial and work.n_states <= settings.fused_max_states
    # (asking numba for its thread count starts the thread pool: only parallel plans do)
    n_chunks = 1 if serial else max(1, min(work.n_states, 8 * numba.get_num_threads()))
    return Plan(model=work, k=k, lumping=lumping, block=block, sm=sm, toff=toff,
                m_ptr=R.indptr.astype(np.int64), m_idx=R.indices.astype(np.int64), path_steps=steps,
                serial=serial, fused=fused, n_chunks=n_chunks,
                parallel_solve=not fused and (not serial or R.indices.size >= settings.parallel_solve_min_nnz),
                settings=settings)
