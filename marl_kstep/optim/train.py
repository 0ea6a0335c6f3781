r"""Per-agent ascent on :math:`J_k` with any estimator (SPEC §4).

:func:`train` asks an estimator (:class:`~marl_kstep.estimators.Estimator`) for
:math:`(J_k, \nabla J_k)` at every iterate and lets each agent update its own rows with
projected (``pgd``) or mirror ascent. Given a :class:`~marl_kstep.model.JointMDP` instead,
it builds the exact estimator :class:`~marl_kstep.estimators.ExactKStep` (``train(mdp, k=3)``).
Whenever the estimator has a model, the history also holds the exact ordinary value
:math:`J = J_1` of every iterate.

Where ascent stops (SPEC §9): at a *vertex* (every visited row deterministic, or at the
floor) or at a *stochastic stationary point* (a saddle such as the symmetric uniform policy),
said in :attr:`TrainResult.stationary` and, for the latter, with a :class:`SaddleWarning`.
With ``escape=True`` and a model, a vertex is certified (:func:`~marl_kstep.certificates.certify`):
if a change of one or two slots improves :math:`J`, the run jumps to the best such deviation
and resumes; it stops at a certified 2-opt vertex. A stochastic stationary point is left by a
seeded small perturbation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..certificates import Certificate, certify, slot_visitation
from ..estimators import ExactKStep
from ..interrupt import checkpoint, deferred_interrupts
from ..model import JointMDP
from ..policy import Policy
from ..validation import check_bool, check_int, check_positive
from .simplex import STEPS

__all__ = ["SaddleWarning", "TrainResult", "train"]


class SaddleWarning(RuntimeWarning):
    """Ascent stopped at a stationary point that is not a vertex (a saddle of :math:`J_k`)."""


#: Above this many joint states, train records exact values alongside only when asked.
EXACT_ALONGSIDE_MAX_STATES = 100_000
#: A visited row is at its vertex when its largest entry is within this of ``1 - (A - 1) floor``.
VERTEX_TOL = 1e-6
#: Slots visited less than this (discounted visitation, summing to 1) do not count for vertices.
VISIT_TOL = 1e-12
#: Size of the perturbation that leaves a stochastic stationary point under ``escape=True``.
SADDLE_KICK = 1e-3


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    policy : Policy
        Final policy.
    history_J_k : ndarray
        :math:`J_k` (as estimated) at the initial policy and after every update (length
        ``iterations + 1``).
    history_J : ndarray
        The exact ordinary value :math:`J = J_1` at the same iterates (NaN when the estimator
        has no model).
    iterations : int
        Updates performed.
    converged : bool
        Whether ``max |theta_{t+1} - theta_t| < tol`` stopped the run.
    seconds : float
        Wall time.
    k, method, step : int, str, float
        The settings used (``step`` is the effective eta after normalisation).
    history_J_k_se : ndarray or None
        Standard errors of ``history_J_k`` for sampled estimators (``None`` for exact ones).
    history_J_k_exact : ndarray or None
        For a sampled estimator on a model: the exact :math:`J_k` of every iterate (``None``
        otherwise, where ``history_J_k`` is already exact or no model exists).
    floor : float
        The smallest entry the updates kept (0 for exact estimators by default).
    stationary : {"vertex", "saddle", "stochastic"} or None
        Where a converged run stopped: at a vertex (every visited row deterministic, or at the
        floor); at a *saddle*, a stochastic stationary point that one of 8 seeded moves of size
        ``SADDLE_KICK`` improves (exact estimators; a :class:`SaddleWarning` is issued); or at
        another stochastic stationary point (a flat face, e.g. rows mixing actions that do the same
        thing, or a stochastic local maximum). ``None`` when the run did not converge and did not
        stop at a certified vertex.
    escapes : list of dict
        With ``escape=True``: one entry per jump, ``{"iteration", "kind", "J_from", "J_to",
        "slots"}``; ``kind`` is ``"deviation"`` (to the best improving 1- or 2-slot change,
        ``slots`` as in :class:`~marl_kstep.certificates.Deviation`, ``J`` values exact) or
        ``"perturbation"`` (off a saddle). ``iteration`` indexes the
        histories: the policy after the jump is the one evaluated there.
    certificate : Certificate or None
        With ``escape=True``: the certificate of the last vertex examined (``two_opt`` when the
        run stopped there).
    """

    policy: Policy
    history_J_k: np.ndarray
    history_J: np.ndarray
    iterations: int
    converged: bool
    seconds: float
    k: int = 1
    method: str = "pgd"
    step: float = 0.0
    history_J_k_se: np.ndarray | None = None
    history_J_k_exact: np.ndarray | None = None
    floor: float = 0.0
    extra: dict = field(default_factory=dict)
    stationary: str | None = None
    escapes: list = field(default_factory=list)
    certificate: Certificate | None = None

    @property
    def final_J(self) -> float:
        return float(self.history_J[-1])

    @property
    def final_J_k(self) -> float:
        return float(self.history_J_k[-1])


def _as_estimator(target, k, max_path_steps):
    if isinstance(target, JointMDP):
        return ExactKStep(target, 1 if k is None else k, max_path_steps=max_path_steps)
    if not callable(getattr(target, "estimate", None)):
        raise ValueError(
            f"train needs a JointMDP or an estimator (with .estimate(policy)); got {type(target).__name__}"
        )
    if k is not None and k != target.k:
        raise ValueError(f"k={k!r} disagrees with the estimator's k={target.k}; leave k out when passing an estimator")
    if max_path_steps is not None:
        raise ValueError("max_path_steps applies to train(mdp, ...); set it on the estimator instead")
    return target


def _at_vertex(policy: Policy, floor: float, visited=None) -> bool:
    """Every (visited) row's largest entry within VERTEX_TOL of its floored vertex ``1 - (A-1) floor``."""
    for i, t in enumerate(policy.theta):
        gap = 1.0 - (t.shape[1] - 1) * floor - t.max(axis=1)
        if visited is not None:
            gap = gap[visited[i]]
        if gap.size and gap.max() > VERTEX_TOL:
            return False
    return True


def _ascent_off(est, policy: Policy, J_k: float, rng, tries: int = 8) -> Policy | None:
    """At a stochastic stationary point: the best of ``tries`` seeded moves of size ``SADDLE_KICK``
    towards random policies on the same face (same support) when it raises the exact :math:`J_k`
    (a saddle), else ``None``."""
    best, best_J = None, J_k + 1e-12 * max(1.0, abs(J_k))
    support = [t > 0 for t in policy.theta]  # moves stay on the face: entries at 0 stay there
    for _ in range(tries):
        r = [rng.random(t.shape) * m for t, m in zip(policy.theta, support, strict=True)]
        r = [u / u.sum(axis=1, keepdims=True) for u in r]
        cand = Policy([(1 - SADDLE_KICK) * t + SADDLE_KICK * u for t, u in zip(policy.theta, r, strict=True)])
        J = est.value(cand)
        if J > best_J:
            best, best_J = cand, J
    return best


def _vertex_policy(tables, n_actions, floor: float) -> Policy:
    """The deterministic policy of ``tables`` with every entry kept at least ``floor``."""
    theta = []
    for tab, A in zip(tables, n_actions, strict=True):
        t = np.full((len(tab), A), floor)
        t[np.arange(len(tab)), tab] = 1.0 - (A - 1) * floor
        theta.append(t)
    return Policy(theta)


def train(
    target,
    k: int | None = None,
    method: str = "pgd",
    step: float = 0.05,
    iters: int = 1000,
    tol: float = 1e-10,
    init: Policy | None = None,
    seed=None,
    callback: Callable[[int, Policy, float, float], object] | None = None,
    *,
    normalize_step: bool = False,
    max_path_steps: int | None = None,
    floor: float | None = None,
    exact_alongside: bool | None = None,
    escape: bool = False,
    escape_order: int = 2,
    max_escapes: int = 50,
) -> TrainResult:
    r"""Per-agent ascent on the k-step objective :math:`J_k` (SPEC §4).

    Every iteration asks the estimator for :math:`(J_k, \nabla J_k)`, then each agent updates
    its own rows: ``pgd`` (projected gradient ascent, :func:`~marl_kstep.optim.pgd_step`) or
    ``mirror`` (exponentiated gradient, :func:`~marl_kstep.optim.mirror_step`).

    Parameters
    ----------
    target : Estimator or JointMDP
        An estimator (e.g. ``ExactKStep(mdp, k=3)``), or a model: then the exact estimator
        with window ``k`` (default 1) is used.
    k : int, optional
        Window length for a model target (1 = ordinary policy gradient); with an estimator,
        leave it out (or give the estimator's own ``k``).
    method : {"pgd", "mirror"}
    step : float
        Step size :math:`\eta`; with ``normalize_step=True`` it is multiplied by
        :math:`1 - \gamma`.
    iters : int
        Iteration cap.
    tol : float
        Stop when :math:`\max |\theta_{t+1} - \theta_t| < tol`.
    init : Policy, optional
        Start point. Default: ``Policy.random(target, seed)`` if ``seed`` is given, else
        ``Policy.near_uniform(target)`` (the uniform policy moved 1e-3 towards a fixed random
        one: the exact uniform policy is often a symmetric saddle). Pass ``Policy.uniform(...)``
        for the exact uniform start.
    seed : int or None
        Seed for the random start when ``init`` is None (and for the perturbations of
        ``escape``).
    callback : callable, optional
        ``callback(iteration, policy, J_k, J)`` after each evaluation; return ``False``
        to stop early.
    max_path_steps : int, optional
        Path budget of the exact estimator built for a model target.
    floor : float, optional
        Keep every entry :math:`\ge` ``floor`` (``pgd``: projection onto the floored simplex;
        ``mirror``: mixing with the uniform row, see :mod:`marl_kstep.optim.simplex`). Default:
        the estimator's ``floor`` attribute (:class:`~marl_kstep.SampledKStep`: 0.01, because a
        sampled gradient cannot see the partial of an entry at 0), else 0.
    exact_alongside : bool, optional
        Record the exact ordinary :math:`J` (and, for a sampled estimator, the exact
        :math:`J_k`) of every iterate when the estimator has a model. Default: yes up to
        ``EXACT_ALONGSIDE_MAX_STATES`` (10^5) joint states, where it costs little; beyond, the
        histories hold NaN (set it to True to pay for them).
    escape : bool
        Certify vertices and jump out of coordination traps (SPEC §9; needs a model, any
        estimator). When the iterate sits at a vertex (every visited row at its largest entry
        within ``VERTEX_TOL``), its deterministic tables are certified with
        :func:`~marl_kstep.certificates.certify` (``order=escape_order``); if some change of
        one or two slots raises the exact :math:`J`, the next iterate is the best such
        deviation (floored like every iterate) and ascent resumes; if none does, the run stops
        there (``stationary="vertex"``, the iterate snapped onto the vertex). At a saddle the run
        takes the improving move of size ``SADDLE_KICK`` (exact estimators); at another
        stochastic stationary point the greedy tables are certified and their best deviation
        taken when it beats the current :math:`J`.
        Every jump is an iteration and is listed in ``TrainResult.escapes``.
    escape_order : {1, 2}
        Largest number of slots an escape changes together.
    max_escapes : int
        Cap on the jumps of one run.

    Returns
    -------
    TrainResult
    """
    est = _as_estimator(target, k, max_path_steps)
    if not isinstance(method, str) or method not in STEPS:
        raise ValueError(f"method must be one of {sorted(STEPS)}; got method={method!r}")
    step = check_positive("step", step)
    iters = check_int("iters", iters, minimum=0)
    tol = check_positive("tol", tol, allow_zero=True)
    mdp = est.mdp
    if check_bool("normalize_step", normalize_step):
        gamma = mdp.gamma if mdp is not None else getattr(est, "gamma", None)
        if gamma is None:
            raise ValueError("normalize_step=True needs a discount: the estimator has neither a model nor gamma")
        eta = step * (1.0 - gamma)
    else:
        eta = step
    update = STEPS[method]
    floor = getattr(est, "floor", 0.0) if floor is None else check_positive("floor", floor, allow_zero=True)
    for i, A in enumerate(est.n_actions):
        if floor * A >= 1.0:
            raise ValueError(f"floor must be below 1/A_i; agent {i} has {A} actions and floor={floor!r}")
    if init is None:
        policy = Policy.random(est, seed) if seed is not None else Policy.near_uniform(est)
    else:
        if not isinstance(init, Policy):
            raise ValueError(f"init must be a marl_kstep.Policy; got {type(init).__name__}")
        if init.free_entries:
            raise ValueError("init must lie on the simplex (it was built with check_simplex=False)")
        init.check_compatible(est)
        policy = init.copy()
    # the exact ordinary value alongside, whenever there is a model
    if exact_alongside is None:
        exact_alongside = mdp is not None and mdp.n_states <= EXACT_ALONGSIDE_MAX_STATES
    exact_alongside = check_bool("exact_alongside", exact_alongside)
    reference = None
    if exact_alongside and mdp is not None and not (isinstance(est, ExactKStep) and est.k == 1):
        reference = ExactKStep(mdp, 1)
    # a sampled estimator on a model: the exact J_k alongside
    exact_k = None
    if exact_alongside and mdp is not None and not isinstance(est, ExactKStep):
        exact_k = reference if est.k == 1 else ExactKStep(mdp, est.k)

    escape = check_bool("escape", escape)
    if isinstance(escape_order, bool) or escape_order not in (1, 2):
        raise ValueError(f"escape_order must be 1 or 2; got escape_order={escape_order!r}")
    max_escapes = check_int("max_escapes", max_escapes, minimum=0)
    if escape and mdp is None:
        raise ValueError("escape=True certifies vertices on a model; the estimator has none (its .mdp is None)")
    kicks = np.random.default_rng(seed)
    certificates: dict[tuple, Certificate] = {}
    escapes: list[dict] = []
    last_cert = None

    def visited_rows(pol):
        return [w > VISIT_TOL for w in slot_visitation(mdp, pol)]

    def exact_J(pol, known):
        """The exact ordinary value (``known`` when it was computed alongside)."""
        return known if not np.isnan(known) else ExactKStep(mdp, 1).value(pol)

    t0 = time.perf_counter()
    hist_k, hist_1, hist_se, hist_exact = [], [], [], []
    converged = False
    stationary = None
    stop = False
    it = 0
    with deferred_interrupts():  # Ctrl-C stops between iterations, never inside compiled code
        while True:
            e = est.estimate(policy)
            if reference is not None:
                J_1 = reference.value(policy)
            elif isinstance(est, ExactKStep) and est.k == 1:
                J_1 = e.J_k
            else:
                J_1 = float("nan")
            hist_k.append(e.J_k)
            hist_1.append(J_1)
            hist_se.append(e.J_k_se)
            if exact_k is not None:
                hist_exact.append(exact_k.value(policy))
            if callback is not None and callback(it, policy, e.J_k, J_1) is False:
                break
            if stop:
                break
            jump = None
            if escape and (converged or it % 10 == 0 or _at_vertex(policy, floor)):
                # at a vertex (of the rows it visits), at a saddle, or stationary on a flat face?
                at_vertex = _at_vertex(policy, floor) or _at_vertex(policy, floor, visited_rows(policy))
                off = None
                if not at_vertex and converged and isinstance(est, ExactKStep):
                    off = _ascent_off(est, policy, e.J_k, kicks)
                if at_vertex or (converged and off is None):
                    tables = policy.greedy_tables()
                    key = tuple(tuple(int(a) for a in t) for t in tables)
                    if key not in certificates:
                        certificates[key] = certify(mdp, policy, order=escape_order)
                    last_cert = certificates[key]
                    if last_cert.best is None and at_vertex:  # certified: stop, on the vertex itself
                        stationary = "vertex"
                        vertex = _vertex_policy(tables, est.n_actions, floor)
                        if vertex.max_abs_diff(policy) == 0.0:
                            break
                        jump, stop = vertex, True
                    elif (last_cert.best is not None and len(escapes) < max_escapes
                          and (at_vertex or last_cert.best.J > exact_J(policy, J_1))):
                        best = last_cert.best
                        for i, o, a in best.slots:
                            tables[i][o] = a
                        jump = _vertex_policy(tables, est.n_actions, floor)
                        escapes.append(dict(iteration=it + 1, kind="deviation", J_from=last_cert.J, J_to=best.J,
                                            slots=[list(x) for x in best.slots]))
                elif off is not None and len(escapes) < max_escapes:
                    jump = off
                    escapes.append(dict(iteration=it + 1, kind="perturbation", J_from=exact_J(policy, J_1),
                                        J_to=exact_J(off, float("nan")), slots=[]))
            if it >= iters or (converged and jump is None):
                break
            if jump is not None:
                new, converged = jump, False
            else:
                new = Policy([update(t, g, eta, floor) for t, g in zip(policy.theta, e.grad, strict=True)])
                converged = new.max_abs_diff(policy) < tol
            policy = new
            it += 1
            checkpoint()
    if converged and stationary is None:
        stationary = "vertex" if _at_vertex(policy, floor) else "stochastic"
        if stationary == "stochastic" and mdp is not None and mdp.n_states <= EXACT_ALONGSIDE_MAX_STATES:
            stationary = "vertex" if _at_vertex(policy, floor, visited_rows(policy)) else "stochastic"
        if stationary == "stochastic" and isinstance(est, ExactKStep) and _ascent_off(est, policy, hist_k[-1],
                                                                                     np.random.default_rng(0)):
            stationary = "saddle"
            warnings.warn(
                f"ascent stopped at a saddle of J_k (J_k = {hist_k[-1]:.6g}, after {it} iterations): a stochastic "
                f"stationary point that a move of size {SADDLE_KICK:g} improves, such as the symmetric uniform "
                "start; start off it (train's default start, Policy.near_uniform) or pass escape=True",
                SaddleWarning, stacklevel=2)
    return TrainResult(
        policy=policy,
        history_J_k=np.asarray(hist_k),
        history_J=np.asarray(hist_1),
        iterations=it,
        converged=converged,
        seconds=time.perf_counter() - t0,
        k=est.k,
        method=method,
        step=eta,
        history_J_k_se=None if all(s is None for s in hist_se) else np.asarray(hist_se, dtype=float),
        history_J_k_exact=np.asarray(hist_exact) if exact_k is not None else None,
        floor=floor,
        stationary=stationary,
        escapes=escapes,
        certificate=last_cert,
    )
