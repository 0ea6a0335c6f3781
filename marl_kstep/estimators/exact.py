r"""The exact k-step estimator (SPEC §3): :math:`J_k` and its gradient by path enumeration.

**k-coupled execution.** At times :math:`t = 0, k, 2k, \dots` every agent :math:`i` draws,
independently for each of its observations :math:`o`, one action
:math:`d_i(o) \sim \theta_i[o, \cdot]`, and plays :math:`a_{i,t} = d_i(\phi_i(s_t))` for the
rest of the window. With

.. math::

    W(s) = \mathbb E\Big[\sum_{t<k} \gamma^t r_t \,\Big|\, s_0 = s\Big], \qquad
    M(s, s') = \gamma^k \, \Pr(s_k = s' \mid s_0 = s),

the k-step value is :math:`V_k = (I - M)^{-1} W` and :math:`J_k = \mu^\top V_k`.

**Computation.** From every start state the kernel walks all window paths of depth
:math:`k`, carrying the memo of (agent, observation) slots already drawn on the path
(:mod:`._walk`). A path has weight :math:`p = T \prod f` (transition probabilities times the
entries :math:`\theta_i[o, a]` drawn at first visits) and return
:math:`G = \sum_{t<k} \gamma^t r_t + \gamma^k V_k(s_k)`.

1. Pass 1 accumulates :math:`W` and the sparse :math:`M`; then :math:`(I - M) V_k = W` (:mod:`._linalg`).
2. :math:`\nu_k = \mu^\top (I - M)^{-1}` (the transposed system).
3. Pass 2: :math:`\partial J_k / \partial \theta_i[o, a] = \sum_s \nu_k(s) \sum_{\text{paths}
   \ni (i,o,a)} T \prod_{f \ne (i,o,a)} f \cdot G`.

The entries are free variables: off the simplex this is the path-formula extension of
SPEC §3 (for ``k = 1`` the usual direct-parameterisation extension); there :math:`I - M` can
be singular, which raises :class:`~marl_kstep.estimators._linalg.SingularSystemError` (a
``ValueError``).

:class:`ExactKStep` validates, lumps and plans once (:mod:`._plan`), then answers many calls.
:func:`value`, :func:`value_vector`, :func:`value_and_grad` and :func:`values_and_grad` are
thin wrappers that reuse one estimator per (model, k, options, settings), held in a cache
keyed weakly by the model object (models are immutable, so a reused plan is never stale).
"""

from __future__ import annotations

import threading
import weakref
from contextlib import nullcontext

import numpy as np

from ..model import JointMDP, lump
from ..policy import Policy
from ..settings import current
from ..threads import parallel_section
from ..validation import check_int, check_k
from ._fused import fused_small
from ._linalg import SingularSystemError, Solver, singular_message
from ._plan import Plan, kernel_args, make_plan, path_steps
from ._walk import count_steps, walk_grad, walk_grad_parallel, walk_kind, walk_values, walk_values_parallel
from .base import Estimate

__all__ = ["ExactKStep", "value", "value_vector", "value_and_grad", "values_and_grad", "estimate_path_steps",
           "count_path_steps", "SingularSystemError"]


class ExactKStep:
    r"""Exact :math:`J_k` and :math:`\nabla J_k` on a :class:`JointMDP` (SPEC §3).

    Parameters
    ----------
    mdp : JointMDP
    k : int
        Window length (``k = 1``: ordinary execution and the ordinary policy gradient).
    lump : bool, optional
        Walk the exact bisimulation quotient (default ``Settings.lump``, True): the value and
        every partial derivative are unchanged; the path budget applies to the quotient.
    max_path_steps : int, optional
        Budget on path steps per pass (default ``Settings.max_path_steps``); a plan over it
        is refused with a ``ValueError`` on construction.

    Attributes
    ----------
    plan : Plan
        What was decided once: the model walked, lumping, path steps, threads.
    """

    def __init__(self, mdp: JointMDP, k: int = 1, *, lump: bool | None = None, max_path_steps: int | None = None):
        self._plan = _make(mdp, check_k(k), lump, max_path_steps)
        self._mdp = mdp

    @classmethod
    def _from_plan(cls, mdp: JointMDP, plan: Plan) -> ExactKStep:
        self = cls.__new__(cls)
        self._plan, self._mdp = plan, mdp
        return self

    # ----------------------------------------------------------- protocol
    #: Exact answers (no standard errors); the protocol's ``exact``.
    exact = True
    #: Exact gradients see every partial: no floor is needed.
    floor = 0.0

    @property
    def gamma(self) -> float:
        """The model's discount."""
        return self._mdp.gamma

    @property
    def mdp(self) -> JointMDP:
        """The model (not the quotient) the estimator answers for."""
        return self._mdp

    @property
    def k(self) -> int:
        return self._plan.k

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def n_agents(self) -> int:
        return self._mdp.n_agents

    @property
    def n_obs(self) -> tuple[int, ...]:
        return self._mdp.n_obs

    @property
    def n_actions(self) -> tuple[int, ...]:
        return self._mdp.n_actions

    def __repr__(self) -> str:
        p = self._plan
        lumped = "" if p.block is None else f", lumped to {p.model.n_states} states"
        return f"ExactKStep(k={p.k}, {self._mdp!r}{lumped}, path_steps={p.path_steps:,})"

    # ------------------------------------------------------------ answers
    def _theta(self, policy) -> np.ndarray:
        if not isinstance(policy, Policy):
            raise ValueError(
                f"policy must be a marl_kstep.Policy (see Policy.from_arrays); got {type(policy).__name__}"
            )
        return policy.flat(self._mdp)

    def _compute(self, theta: np.ndarray, want_grad: bool):
        """``(V_k on the walked model, flat gradient or None)``."""
        p = self._plan
        s = p.settings
        if p.fused:
            Vk, grad, ratio = fused_small(walk_kind(p.k), want_grad, p.k, p.sm, theta, p.toff, p.model.mu, p.m_ptr,
                                          p.m_idx)
            if not ratio >= s.singular_rtol:
                raise SingularSystemError(singular_message(ratio, s.singular_rtol))
            return Vk, (grad if want_grad else None)
        N = p.model.n_states
        # parallel plans: dynamic chunks, one launch at a time under unsafe threading layers
        with (nullcontext() if p.serial and not p.parallel_solve else parallel_section()):
            W = np.zeros(N)
            m_data = np.zeros(p.m_idx.size)
            if p.serial:
                walk_values(0, N, p.k, p.sm, theta, p.toff, p.m_ptr, p.m_idx, W, m_data)
            else:
                walk_values_parallel(p.n_chunks, p.k, p.sm, theta, p.toff, p.m_ptr, p.m_idx, W, m_data)
            solver = Solver(p.m_ptr, p.m_idx, m_data, direct_max_states=s.direct_solve_max_states,
                            iter_rtol=s.iter_rtol, singular_rtol=s.singular_rtol,
                            fallback_max_states=s.direct_fallback_max_states, parallel=p.parallel_solve)
            Vk, nu = solver.solve(W, np.asarray(p.model.mu, dtype=np.float64) if want_grad else None)
            if not want_grad:
                return Vk, None
            if p.serial:
                grad = np.zeros(theta.size)
                walk_grad(0, N, p.k, p.sm, theta, p.toff, Vk, nu, grad)
            else:
                grad = walk_grad_parallel(p.n_chunks, p.k, p.sm, theta, p.toff, Vk, nu, theta.size)
            return Vk, grad

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        return [flat[o:o + n * a].reshape(n, a).copy()
                for o, n, a in zip(self._plan.toff, self.n_obs, self.n_actions, strict=True)]

    def _expand(self, Vk: np.ndarray) -> np.ndarray:
        return Vk if self._plan.block is None else Vk[self._plan.block]

    def value_vector(self, policy) -> np.ndarray:
        r"""The k-step value :math:`V_k = (I - M)^{-1} W`, shape ``(N,)``."""
        return self._expand(self._compute(self._theta(policy), False)[0])

    def value(self, policy) -> float:
        r""":math:`J_k(\theta) = \mu^\top V_k`."""
        return float(self._plan.model.mu @ self._compute(self._theta(policy), False)[0])

    def values_and_grad(self, policy) -> tuple[float, list[np.ndarray], np.ndarray]:
        """``(J_k, grad, V_k)``: :meth:`value_and_grad` and the value vector (shape ``(N,)``)."""
        Vk, grad = self._compute(self._theta(policy), True)
        return float(self._plan.model.mu @ Vk), self._split(grad), self._expand(Vk)

    def value_and_grad(self, policy) -> tuple[float, list[np.ndarray]]:
        r"""``(J_k, grad)`` with ``grad[i][o, a]`` = :math:`\partial J_k / \partial \theta_i[o, a]`
        (every entry, rows not renormalised)."""
        J, grad, _ = self.values_and_grad(policy)
        return J, grad

    def estimate(self, policy) -> Estimate:
        """The estimator protocol: the exact ``J_k`` and gradient (standard errors ``None``)."""
        J, grad = self.value_and_grad(policy)
        return Estimate(J_k=J, grad=grad)


# ------------------------------------------------------------------ planning and its cache
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _options(mdp, lump_opt, max_path_steps):
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    settings = current()
    lump_opt = settings.lump if lump_opt is None else lump_opt
    if not isinstance(lump_opt, bool | np.bool_):
        raise ValueError(f"lump must be True or False; got lump={lump_opt!r}")
    budget = settings.max_path_steps if max_path_steps is None else check_int("max_path_steps", max_path_steps,
                                                                              minimum=0)
    return bool(lump_opt), budget, settings


def _cached(mdp: JointMDP, key, build):
    with _LOCK:
        entry = _CACHE.setdefault(mdp, {})
        if key in entry:
            return entry[key]
    value = build()
    with _LOCK:
        return _CACHE.setdefault(mdp, {}).setdefault(key, value)


def _make(mdp, k, lump_opt, max_path_steps) -> Plan:
    lump_opt, budget, settings = _options(mdp, lump_opt, max_path_steps)
    lumping = _cached(mdp, ("lumping", settings), lambda: lump(mdp)) if lump_opt else None
    return make_plan(mdp, k, lump_model=lump_opt, max_path_steps=budget, settings=settings, lumping=lumping)


def _estimator_for(mdp, k, lump_opt, max_path_steps) -> ExactKStep:
    k = check_k(k)
    lump_opt, budget, settings = _options(mdp, lump_opt, max_path_steps)
    plan = _cached(mdp, ("plan", k, lump_opt, budget, settings), lambda: _make(mdp, k, lump_opt, budget))
    return ExactKStep._from_plan(mdp, plan)


# ------------------------------------------------------------------ thin wrappers
def value_vector(mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None,
                 lump: bool | None = None) -> np.ndarray:
    r"""The k-step value :math:`V_k = (I - M)^{-1} W`, shape ``(N,)`` (:meth:`ExactKStep.value_vector`).

    For ``k = 1`` (or a deterministic policy) this is the ordinary value
    :math:`V = (I - \gamma P_\pi)^{-1} r_\pi`."""
    return _estimator_for(mdp, k, lump, max_path_steps).value_vector(policy)


def value(mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None, lump: bool | None = None) -> float:
    r"""The k-step objective :math:`J_k(\theta) = \mu^\top V_k` (:meth:`ExactKStep.value`)."""
    return _estimator_for(mdp, k, lump, max_path_steps).value(policy)


def value_and_grad(mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None,
                   lump: bool | None = None) -> tuple[float, list[np.ndarray]]:
    r"""The k-step objective and its exact gradient (:meth:`ExactKStep.value_and_grad`).

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
        On a policy that does not fit ``mdp``, ``k < 1``, an enumeration over the
        ``max_path_steps`` budget, or a singular :math:`I - M` (off the simplex).
    """
    return _estimator_for(mdp, k, lump, max_path_steps).value_and_grad(policy)


def values_and_grad(mdp: JointMDP, policy, k: int = 1, *, max_path_steps: int | None = None,
                    lump: bool | None = None) -> tuple[float, list[np.ndarray], np.ndarray]:
    """Like :func:`value_and_grad` but also returns the value vector ``V_k`` (shape ``(N,)``)."""
    return _estimator_for(mdp, k, lump, max_path_steps).values_and_grad(policy)


def estimate_path_steps(mdp: JointMDP, k: int, *, max_path_steps: int | None = None) -> int:
    r"""Path steps one enumeration pass over ``mdp`` (unlumped) walks for window ``k``.

    The bound :math:`\sum_{t=1}^{k} \mathbf 1^\top C^t \mathbf 1` when it is within the budget
    (default ``Settings.max_path_steps``), else the exact count, or budget + 1 when counting
    was stopped above the budget."""
    k = check_k(k)
    _, budget, _ = _options(mdp, False, max_path_steps)
    return path_steps(mdp, k, budget)


def count_path_steps(mdp: JointMDP, k: int, cap: int = 10**12) -> int:
    """Exact number of path steps one pass over ``mdp`` (unlumped) walks (counting stops above ``cap``)."""
    k = check_k(k)
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    cap = check_int("cap", cap, minimum=0)
    sm, toff, ones = kernel_args(mdp)
    return min(int(count_steps(k, sm, ones, toff, cap)), cap + 1)
