r"""Per-agent ascent on :math:`J_k` with any estimator (SPEC §4).

:func:`train` asks an estimator (:class:`~marl_kstep.estimators.Estimator`) for
:math:`(J_k, \nabla J_k)` at every iterate and lets each agent update its own rows with
projected (``pgd``) or mirror ascent. Given a :class:`~marl_kstep.model.JointMDP` instead,
it builds the exact estimator :class:`~marl_kstep.estimators.ExactKStep` (``train(mdp, k=3)``).
Whenever the estimator has a model, the history also holds the exact ordinary value
:math:`J = J_1` of every iterate.

Where ascent stops (SPEC §9): at a *vertex* (every visited row deterministic, or at the
floor), at a *saddle* (such as the symmetric uniform policy; a :class:`SaddleWarning`) or at
another stochastic stationary point, said in :attr:`TrainResult.stationary`. With
``escape=True`` and a model, a vertex that ascent keeps is certified
(:func:`~marl_kstep.certificates.certify`): if a change of up to ``escape_order`` (default 2)
slots improves :math:`J`, the run jumps to the best such deviation and resumes; it stops at a
certified vertex. A saddle is left along the direction of positive curvature that was found
(:mod:`marl_kstep.optim.escape`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..certificates import Certificate
from ..estimators import ExactKStep
from ..interrupt import checkpoint, deferred_interrupts
from ..model import JointMDP
from ..policy import Policy
from .escape import SADDLE_KICK, STATIONARY_TOL, Escaper, classify_stop, near_stationary
from .options import TrainOptions
from .simplex import STEPS

__all__ = ["SaddleWarning", "TrainOptions", "TrainResult", "train"]


class SaddleWarning(RuntimeWarning):
    """Ascent stopped at a stationary point that is not a vertex (a saddle of :math:`J_k`)."""


#: At most this many in-loop saddle probes per run (each costs 16 evaluations; a run that keeps
#: nearing and leaving stationary points is not probed without end).
MAX_SADDLE_PROBES = 20
#: Above this many joint states, train records exact values alongside only when asked.
EXACT_ALONGSIDE_MAX_STATES = 100_000


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
        Whether ``max |theta_{t+1} - theta_t| < tol`` stopped the run, or (``stop_reason ==
        "saddle"``) the run stopped at a saddle, stationary relative to the gradient's scale.
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
        floor); at a *saddle*, a stochastic stationary point with a direction of positive
        curvature inside its face, found by 8 seeded symmetric probes of size ``SADDLE_KICK``
        (exact estimators; a :class:`SaddleWarning` is issued). An exact run is probed the first
        time it is stationary relative to the gradient's scale
        (:func:`~marl_kstep.optim.escape.near_stationary`, ``SADDLE_RTOL``), and ends there at a
        saddle (``stop_reason="saddle"``; with ``escape=True`` it leaves along the probe): so a
        symmetric saddle stops a run from the exactly symmetric start and from starts a rounding
        error off it alike, before ascent can amplify the rounding error. Or at another stochastic
        stationary point (a flat face, e.g. rows mixing actions that do the same thing, or a
        stochastic local maximum). ``None`` when the run neither converged nor stopped at a
        certified vertex, or when its last update still moved an entry by more than
        ``STATIONARY_TOL`` (1e-8: a loose ``tol`` stops runs that are not stationary).
    escapes : list of dict
        With ``escape=True``: one entry per jump, ``{"iteration", "kind", "J_from", "J_to",
        "slots"}``; ``kind`` is ``"deviation"`` (to the best improving 1- or 2-slot change,
        ``slots`` as in :class:`~marl_kstep.certificates.Deviation`; ``J_from`` and ``J_to`` are
        the exact ordinary values of the iterate and of the jumped-to policy) or
        ``"perturbation"`` (off a saddle: it raises :math:`J_k`, not necessarily :math:`J`), or
        ``"return"``: the run ended below a policy it had jumped to (ascent after a jump is
        monotone only for small enough steps) and ends on that policy instead; the histories'
        last entry is then that policy. ``iteration`` indexes the histories: the policy after
        the jump is the one evaluated there.
    certificate : Certificate or None
        With ``escape=True``: the certificate of the final policy's greedy tables (``rounded``
        says whether the final policy was deterministic on its used observations).
    options : TrainOptions
        The options the run used.
    capped : bool
        Whether the run was stopped by ``iters`` (the iteration cap) rather than by ``tol``, a stop
        at a certified vertex or a saddle, or the callback. A capped run is not stationary and, with
        ``escape=True``, **not certified**: its ``certificate`` is that of the greedy tables of a
        policy ascent was still moving, and may list improving changes (see :attr:`certified`).
    stop_reason : str
        Why the run ended: ``"tol"`` (the update moved no entry more than ``tol``), ``"vertex"``
        (``escape=True``: a certified vertex), ``"saddle"`` (an exact run found stationary relative to
        the gradient's scale at a saddle, :func:`~marl_kstep.optim.escape.near_stationary`; without
        escapes the run ends there), ``"iteration cap"``, ``"callback"`` or ``"return"``
        (``escape=True``: ended on a better policy it had jumped to).
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
    options: TrainOptions | None = None
    capped: bool = False
    stop_reason: str | None = None

    @property
    def certified(self) -> bool:
        """An ``escape=True`` run that ended on a vertex its certificate proves ``escape_order``-opt
        (no change of up to that many slots improves :math:`J`), not stopped by the iteration cap (a
        sampled learner's vertex is floored; its certificate is that of the vertex's greedy tables)."""
        cert = self.certificate
        return cert is not None and not self.capped and self.stationary == "vertex" and not cert.improving

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


def _options(options, overrides: dict) -> TrainOptions:
    """The run's :class:`TrainOptions`: ``options`` (or the defaults) with ``overrides``."""
    if options is None:
        options = TrainOptions()
    elif isinstance(options, dict):
        options = TrainOptions.from_dict(options)
    elif not isinstance(options, TrainOptions):
        raise ValueError(f"options must be a TrainOptions or a dict of its fields ({', '.join(TrainOptions.names())}); "
                         f"got options={options!r} (method, step, ... are keywords: train(est, method='mirror'))")
    return options.replace(**overrides) if overrides else options


def _start(est, init, seed) -> Policy:
    if init is None:
        return Policy.random(est, seed) if seed is not None else Policy.near_uniform(est)
    if not isinstance(init, Policy):
        raise ValueError(f"init must be a marl_kstep.Policy; got {type(init).__name__}")
    if init.free_entries:
        raise ValueError("init must lie on the simplex (it was built with check_simplex=False)")
    init.check_compatible(est)
    return init.copy()


def train(
    target,
    k: int | None = None,
    options: TrainOptions | dict | None = None,
    *,
    init: Policy | None = None,
    seed=None,
    callback: Callable[[int, Policy, float, float], object] | None = None,
    max_path_steps: int | None = None,
    hook=None,
    **overrides,
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
    options : TrainOptions or dict, optional
        Every setting of the run (:class:`~marl_kstep.optim.TrainOptions`: ``method``, ``step``,
        ``iters``, ``tol``, ``floor``, ``normalize_step``, ``exact_alongside``, ``escape``,
        ``escape_order``, ``max_escapes``, with their defaults). Any of them may also be given as a
        keyword (``train(est, method="mirror", iters=200)``), which wins over ``options``.
    init : Policy, optional
        Start point. Default: ``Policy.random(target, seed)`` if ``seed`` is given, else
        ``Policy.near_uniform(target)`` (the uniform policy moved 1e-3 towards a fixed random
        one: the exact uniform policy is often a symmetric saddle). Pass ``Policy.uniform(...)``
        for the exact uniform start.
    seed : int or None
        Seed for the random start when ``init`` is None (and for the probes of ``escape``).
    callback : callable, optional
        ``callback(iteration, policy, J_k, J)`` after each evaluation; return ``False``
        to stop early.
    max_path_steps : int, optional
        Path budget of the exact estimator built for a model target.
    hook : object, optional
        A stop hook consulted at every iterate, in place of the one ``escape=True`` builds
        (:class:`~marl_kstep.optim.escape.Escaper` is the library's): ``hook.consider(it, policy,
        estimate, settled, periodic) -> (jump, stop, stationary)`` and ``hook.finish(policy) ->
        (policy or None, stationary or None)``; see :mod:`marl_kstep.optim.escape`. ``settled`` is
        True when the run converged with a last update of at most ``STATIONARY_TOL``, or when an
        exact run's saddle probe (at its first iterate stationary relative to the gradient's scale,
        :func:`~marl_kstep.optim.escape.near_stationary`) found a saddle there.

    Notes
    -----
    Escapes (``escape=True``; SPEC §9; needs a model, any estimator): when the iterate sits at a
    vertex (every visited row within ``VERTEX_TOL`` of its floored vertex) that ascent keeps (a
    *KKT vertex*: in every row the played action's partial is at least every other's; within two
    standard errors for a sampled gradient), its tables are certified with
    :func:`~marl_kstep.certificates.certify` (``order=escape_order``). The next iterate is then the
    best improving change of up to ``escape_order`` slots whose (floored) policy beats the current
    exact :math:`J`, and ascent resumes; if there is none, the run stops on the vertex
    (``stationary="vertex"``, the iterate snapped onto it). A vertex that ascent is leaving is not
    certified. At a saddle (exact estimators) the run takes the improving side of the probe that
    found it; at another stochastic stationary point, the best certified deviation of its greedy
    tables when that beats the current :math:`J`. Every jump is an iteration, listed in
    ``TrainResult.escapes``; the budget of a certificate (``Settings.max_policies``) is checked
    before the run starts; ``seed`` seeds the probes (0 when None), so runs repeat exactly.

    Returns
    -------
    TrainResult
    """
    est = _as_estimator(target, k, max_path_steps)
    opts = _options(options, overrides)
    mdp = est.mdp
    if opts.normalize_step:
        gamma = mdp.gamma if mdp is not None else getattr(est, "gamma", None)
        if gamma is None:
            raise ValueError("normalize_step=True needs a discount: the estimator has neither a model nor gamma")
        eta = opts.step * (1.0 - gamma)
    else:
        eta = opts.step
    update = STEPS[opts.method]
    floor = getattr(est, "floor", 0.0) if opts.floor is None else opts.floor
    for i, A in enumerate(est.n_actions):
        if floor * A >= 1.0:
            raise ValueError(f"floor must be below 1/A_i; agent {i} has {A} actions and floor={floor!r}")
    policy = _start(est, init, seed)
    exact_est = bool(getattr(est, "exact", False))
    # the exact ordinary value alongside, whenever there is a model
    exact_alongside = opts.exact_alongside
    if exact_alongside is None:
        exact_alongside = mdp is not None and mdp.n_states <= EXACT_ALONGSIDE_MAX_STATES
    reference = None
    if exact_alongside and mdp is not None and not (exact_est and est.k == 1):
        reference = ExactKStep(mdp, 1)
    # a sampled estimator on a model: the exact J_k alongside
    exact_k = None
    if exact_alongside and mdp is not None and not exact_est:
        exact_k = reference if est.k == 1 else ExactKStep(mdp, est.k)
    if hook is None and opts.escape:
        if mdp is None:
            raise ValueError("escape=True certifies vertices on a model; the estimator has none (its .mdp is None)")
        hook = Escaper(est, floor, opts.escape_order, opts.max_escapes, seed)

    t0 = time.perf_counter()
    hist_k, hist_1, hist_se, hist_exact = [], [], [], []
    converged = capped = False
    stop_reason = None
    stationary = None
    last_move = float("inf")
    probe_armed, probes = exact_est, 0
    stop = False
    it = 0

    def evaluate(pol):
        """The estimate at ``pol``, its exact J alongside (NaN without one) and its exact J_k (or None)."""
        e = est.estimate(pol)
        if reference is not None:
            J_1 = reference.value(pol)
        elif exact_est and est.k == 1:
            J_1 = e.J_k
        else:
            J_1 = float("nan")
        return e, J_1, None if exact_k is None else exact_k.value(pol)

    with deferred_interrupts():  # Ctrl-C stops between iterations, never inside compiled code
        while True:
            e, J_1, J_k_exact = evaluate(policy)
            hist_k.append(e.J_k)
            hist_1.append(J_1)
            hist_se.append(e.J_k_se)
            if exact_k is not None:
                hist_exact.append(J_k_exact)
            if callback is not None and callback(it, policy, e.J_k, J_1) is False:
                stop_reason = "callback"
                break
            if stop or it >= opts.iters:  # (a last update within tol is a convergence, not the cap)
                capped = not stop and not converged
                stop_reason = "vertex" if stop else ("iteration cap" if capped else "tol")
                break
            proposal = Policy([update(t, g, eta, floor) for t, g in zip(policy.theta, e.grad, strict=True)])
            move = proposal.max_abs_diff(policy)
            # an exact run is probed for a saddle once per approach, when it is stationary relative to the
            # gradient's scale: before rounding errors that break a symmetry can have grown (SPEC §9)
            at_saddle = False
            if probe_armed and near_stationary(move, eta, e.grad):
                probe_armed, probes = False, probes + 1
                at_saddle = classify_stop(est, policy, e.J_k, floor, seed, EXACT_ALONGSIDE_MAX_STATES) == "saddle"
            elif exact_est and probes < MAX_SADDLE_PROBES and not near_stationary(move, 100.0 * eta, e.grad):
                probe_armed = True  # moving again (100 times the threshold): the next stationary point is probed too
            jump = None
            if hook is not None:
                # stationary, not merely stopped by a loose tol; or at a saddle found by the probe
                settled = (converged and last_move <= STATIONARY_TOL) or at_saddle
                jump, stop, where = hook.consider(it, policy, e, settled, periodic=it % 10 == 0)
                stationary = where or stationary
                if stop and jump.max_abs_diff(policy) == 0.0:
                    stop_reason = "vertex"
                    break
            elif at_saddle:
                stationary, converged, stop_reason = "saddle", True, "saddle"
                break
            if converged and jump is None:
                stop_reason = "tol"
                break
            if jump is not None:
                new, converged = jump, False
            else:
                new, last_move = proposal, move
                converged = last_move < opts.tol
            policy = new
            it += 1
            checkpoint()
        back, certificate = (None, None) if hook is None else hook.finish(policy, it)
        if back is not None:  # the run ended below a policy it had jumped to: end there (the last entry)
            policy, stationary = back, "vertex"
            stop_reason = "return"
            e, J_1, J_k_exact = evaluate(policy)
            hist_k[-1], hist_1[-1], hist_se[-1] = e.J_k, J_1, e.J_k_se
            if exact_k is not None:
                hist_exact[-1] = J_k_exact
    if converged and last_move <= STATIONARY_TOL and stationary is None:
        stationary = classify_stop(est, policy, hist_k[-1], floor, seed, EXACT_ALONGSIDE_MAX_STATES)
    if stationary == "saddle":
        warnings.warn(
            f"ascent stopped at a saddle of J_k (J_k = {hist_k[-1]:.6g}, after {it} iterations): a stochastic "
            f"stationary point with a direction of positive curvature (moves of size {SADDLE_KICK:g}), such as "
            "the symmetric uniform start; start off it (train's default start, Policy.near_uniform) or pass "
            "escape=True", SaddleWarning, stacklevel=2)
    return TrainResult(
        policy=policy,
        history_J_k=np.asarray(hist_k),
        history_J=np.asarray(hist_1),
        iterations=it,
        converged=converged,
        seconds=time.perf_counter() - t0,
        k=est.k,
        method=opts.method,
        step=eta,
        history_J_k_se=None if all(s is None for s in hist_se) else np.asarray(hist_se, dtype=float),
        history_J_k_exact=np.asarray(hist_exact) if exact_k is not None else None,
        floor=floor,
        stationary=stationary,
        escapes=[] if hook is None else list(hook.records),
        certificate=certificate,
        options=opts,
        capped=capped,
        stop_reason=stop_reason,
    )
