r"""Where ascent stops, and certified escapes (SPEC §9): the machinery of ``train(..., escape=True)``.

Three kinds of stopping point, told apart with exact values:

* a **vertex**: every visited row deterministic (or at its floor, :math:`1 - (A_i - 1)\,\mathrm{floor}`
  on the played action). It is a *KKT vertex* of :math:`J_k` when, in every row, the played
  action's partial is at least every other action's: then projected ascent maps the vertex to
  itself and mirror ascent converges to it. Only KKT vertices are certified: a vertex that
  ascent is leaving (a transient one, or one below a better stochastic policy) is left alone.
* a **saddle**: a stochastic stationary point with a direction of positive curvature inside its
  face. Symmetric moves :math:`\theta \pm \delta` measure it without the first-order term:
  :math:`J_k(\theta + \delta) + J_k(\theta - \delta) - 2 J_k(\theta) > 0`. An exact run is
  probed the first time it is stationary relative to the gradient's scale
  (:func:`near_stationary`), so that whether it stops at (or, with escapes, leaves) a symmetric
  saddle does not depend on rounding errors that break the symmetry by 1e-16.
* any other **stochastic** stationary point (a flat face, e.g. rows mixing actions that do the
  same thing, or a stochastic local maximum, which can beat every deterministic policy).

:class:`Escaper` keeps the certificates of one run (:func:`~marl_kstep.certificates.certify`),
their budget (checked before the run starts), the run's seeded generator and the jumps made.
"""

from __future__ import annotations

import numpy as np

from ..certificates import Certificate, certify, count_deviations, slot_visitation
from ..estimators import ExactKStep
from ..policy import Policy
from ..search import _slot_layout
from ..settings import current

__all__ = ["Escaper", "at_vertex", "classify_stop", "kkt_vertex", "near_stationary", "saddle_move", "vertex_policy",
           "visited_rows"]

#: A visited row is at its vertex when its largest entry is within this of ``1 - (A - 1) floor``.
VERTEX_TOL = 1e-6
#: Slots visited less than this (discounted visitation, summing to 1) do not count for vertices.
VISIT_TOL = 1e-12
#: A converged run is stationary only when its last update moved no entry more than this.
STATIONARY_TOL = 1e-8
#: Size of the symmetric moves that probe a stochastic stationary point for a saddle.
SADDLE_KICK = 1e-3
#: Entries within this of their bound (0 or the floor) are on the face's boundary and do not move.
FACE_TOL = 1e-8
#: An exact run is probed for a saddle when its gradient mapping falls below this share of the gradient's
#: scale (:func:`near_stationary`), before rounding errors that break a symmetry can have grown.
SADDLE_RTOL = 1e-8


def at_vertex(policy: Policy, floor: float, visited=None) -> bool:
    """Every (visited) row's largest entry within ``VERTEX_TOL`` of ``1 - (A - 1) floor``."""
    for i, t in enumerate(policy.theta):
        gap = 1.0 - (t.shape[1] - 1) * floor - t.max(axis=1)
        if visited is not None:
            gap = gap[visited[i]]
        if gap.size and gap.max() > VERTEX_TOL:
            return False
    return True


def near_stationary(move: float, eta: float, grad) -> bool:
    r"""Stationary relative to the gradient's scale: the gradient mapping
    :math:`\max|\theta^+ - \theta| / \eta` (:math:`\theta^+` the update of :math:`\theta`) is at most
    ``SADDLE_RTOL`` times :math:`\max|\nabla J_k|`.

    The test does not depend on rounding: a point that is stationary up to a symmetry broken only by
    rounding errors (two exchangeable agents whose gradients differ by 2e-16) passes it as the exactly
    symmetric point does, long before ascent amplifies the difference (by a constant factor per
    iteration, from 1e-16 to 1e-11 in about 40 iterations on docs/when-k-helps.md's saddle, where the
    test first holds). Relative, so it means the same for any reward scale and step."""
    scale = max((float(np.abs(g).max(initial=0.0)) for g in grad), default=0.0)
    return scale > 0.0 and move <= SADDLE_RTOL * eta * scale


def visited_rows(mdp, policy: Policy) -> list[np.ndarray]:
    """Per agent, which observations the policy visits (discounted visitation above ``VISIT_TOL``)."""
    return [w > VISIT_TOL for w in slot_visitation(mdp, policy)]


def classify_stop(est, policy: Policy, J_k: float, floor: float, seed, max_states: int) -> str:
    """Where a stationary run stopped: ``"vertex"``, ``"saddle"`` (exact estimators, by
    :func:`saddle_move`) or ``"stochastic"``. Visitation is computed on models up to ``max_states``
    states; beyond, every row counts as visited."""
    if at_vertex(policy, floor):
        return "vertex"
    mdp = est.mdp
    if mdp is not None and mdp.n_states <= max_states and at_vertex(policy, floor, visited_rows(mdp, policy)):
        return "vertex"
    if getattr(est, "exact", False) and saddle_move(est.value, policy, J_k, floor,
                                                   np.random.default_rng(0 if seed is None else seed)):
        return "saddle"
    return "stochastic"


def vertex_policy(tables, n_actions, floor: float) -> Policy:
    """The deterministic policy of ``tables`` with every entry kept at least ``floor``."""
    theta = []
    for tab, A in zip(tables, n_actions, strict=True):
        t = np.full((len(tab), A), floor)
        t[np.arange(len(tab)), tab] = 1.0 - (A - 1) * floor
        theta.append(t)
    return Policy(theta)


def kkt_vertex(grad, tables, grad_se=None) -> bool:
    r"""In every row the played action's partial is at least every other's (within rounding, or
    within two standard errors of the difference for a sampled gradient)."""
    for i, (g, tab) in enumerate(zip(grad, tables, strict=True)):
        rows = np.arange(len(tab))
        adv = g - g[rows, tab][:, None]  # partial minus the played action's partial
        slack = 1e-9 * max(1.0, float(np.abs(g).max(initial=0.0)))
        if grad_se is not None:
            se = grad_se[i]
            slack = slack + 2.0 * np.sqrt(se ** 2 + se[rows, tab][:, None] ** 2)
        if np.any(adv > slack):
            return False
    return True


def _face_moves(policy: Policy, floor: float, rng, scale: float):
    """A random direction ``delta`` inside the face of ``policy`` with ``policy +- delta`` feasible:
    per row, zero sum over the entries above their bound, nothing on the others."""
    delta = []
    for t in policy.theta:
        excess = t - floor
        free = excess > FACE_TOL
        u = rng.uniform(-1.0, 1.0, size=t.shape) * free
        n_free = free.sum(axis=1, keepdims=True)
        u = np.where(free, u - u.sum(axis=1, keepdims=True) / np.maximum(n_free, 1), 0.0)
        u[n_free[:, 0] < 2] = 0.0
        room = np.where(free, excess, np.inf).min(axis=1, keepdims=True)  # keeps +-delta >= floor
        room = np.where(np.isfinite(room), room, 0.0)
        delta.append(u * np.minimum(scale, 0.5 * room))
    return delta


def saddle_move(value, policy: Policy, J: float, floor: float, rng, tries: int = 8) -> Policy | None:
    r"""Probe a stochastic stationary point for a saddle: ``tries`` random directions inside its face,
    each measured symmetrically, :math:`c = J_k(\theta + \delta) + J_k(\theta - \delta) - 2 J_k(\theta)`.
    Returns the better side of the direction with the largest :math:`c`, if :math:`c` exceeds
    rounding (``1e-10 max(1, |J|)``) and that side improves :math:`J_k`; else ``None``."""
    best, best_c = None, 1e-10 * max(1.0, abs(J))
    for _ in range(tries):
        delta = _face_moves(policy, floor, rng, SADDLE_KICK)
        plus = Policy([t + d for t, d in zip(policy.theta, delta, strict=True)])
        minus = Policy([t - d for t, d in zip(policy.theta, delta, strict=True)])
        Jp, Jm = value(plus), value(minus)
        c = Jp + Jm - 2.0 * J
        if c > best_c and max(Jp, Jm) > J:
            best, best_c = (plus if Jp >= Jm else minus), c
    return best


class Escaper:
    """The certificates, budget, generator and jump records of one ``train(..., escape=True)`` run."""

    def __init__(self, est, floor: float, order: int, max_escapes: int, seed):
        mdp = est.mdp
        radices, _ = _slot_layout(mdp)
        n_dev = count_deviations(radices, order)
        limit = current().max_policies
        if n_dev > limit:  # refused before any training, not after it
            raise ValueError(f"escape=True with escape_order={order} needs {n_dev:,} deviations per certificate, "
                             f"above Settings.max_policies={limit:,} (use escape_order=1 or "
                             "mk.configure(max_policies=...))")
        self.est, self.mdp, self.floor, self.order, self.max_escapes = est, mdp, floor, order, max_escapes
        self.rng = np.random.default_rng(0 if seed is None else seed)
        self.exact_J = ExactKStep(mdp, 1).value
        self.exact_k = est.value if getattr(est, "exact", False) else None
        self.certificates: dict[tuple, Certificate] = {}
        self.records: list[dict] = []
        self.best: tuple[float, Policy] | None = None  # the best policy jumped to: (exact J, policy)

    def certificate(self, policy: Policy) -> Certificate:
        key = tuple(tuple(int(a) for a in t) for t in policy.greedy_tables())
        if key not in self.certificates:
            self.certificates[key] = certify(self.mdp, policy, order=self.order)
        return self.certificates[key]

    def _deviation(self, it: int, policy: Policy, cert: Certificate) -> Policy | None:
        """The best improving deviation whose (floored) policy beats the current exact J."""
        if len(self.records) >= self.max_escapes:
            return None
        J_now = self.exact_J(policy)
        for d in cert.improving:
            tables = [t.copy() for t in cert.policy.greedy_tables()]
            for i, o, a in d.slots:
                tables[i][o] = a
            target = vertex_policy(tables, self.est.n_actions, self.floor)
            J_to = d.J if self.floor == 0.0 else self.exact_J(target)
            if J_to > J_now + 1e-12 * max(1.0, abs(J_now)):
                self.records.append(dict(iteration=it + 1, kind="deviation", J_from=J_now, J_to=J_to,
                                         slots=[list(x) for x in d.slots]))
                if self.best is None or J_to > self.best[0]:
                    self.best = (J_to, target)
                return target
        return None

    def consider(self, it: int, policy: Policy, estimate, settled: bool, periodic: bool):
        """What to do at this iterate: ``(jump, stop, stationary)``.

        ``jump`` is the next iterate when the run leaves by a certified deviation or off a saddle;
        ``stop`` asks to end the run on ``jump`` (a certified vertex, snapped onto it);
        ``stationary`` is ``"vertex"`` for a certified stop.
        """
        near = at_vertex(policy, self.floor) or ((settled or periodic)
                                                  and at_vertex(policy, self.floor, visited_rows(self.mdp, policy)))
        if near:
            tables = policy.greedy_tables()
            if not settled and not kkt_vertex(estimate.grad, tables, estimate.grad_se):
                return None, False, None  # ascent is leaving this vertex: let it
            # (a settled non-KKT vertex: the run stopped there anyway, e.g. mirror ascent whose other
            # entries are too small to grow within tol; certifying it cannot end below plain ascent)
            cert = self.certificate(policy)
            jump = self._deviation(it, policy, cert)
            if jump is not None:
                return jump, False, None
            # no jump (none improves, or the cap is reached): ascent keeps this vertex; stop on it
            return vertex_policy(tables, self.est.n_actions, self.floor), True, "vertex"
        if settled and self.exact_k is not None and len(self.records) < self.max_escapes:
            move = saddle_move(self.exact_k, policy, estimate.J_k, self.floor, self.rng)
            if move is not None:
                self.records.append(dict(iteration=it + 1, kind="perturbation", J_from=self.exact_J(policy),
                                         J_to=self.exact_J(move), slots=[]))
                return move, False, None
        if settled:  # another stochastic stationary point: a certified vertex may still beat it
            return self._deviation(it, policy, self.certificate(policy)), False, None
        return None, False, None

    def finish(self, policy: Policy, it: int) -> tuple[Policy | None, Certificate]:
        """The end of a run at ``policy`` after ``it`` iterations: ``(back, certificate)``.

        ``back`` is the best policy jumped to when the run ends below it (ascent after a jump is
        monotone only for steps small enough; a long step can oscillate down; recorded as a
        ``"return"`` at iteration ``it``), else ``None``; ``certificate`` is the certificate of the
        final policy's greedy tables."""
        back = None
        if self.best is not None:
            J_end = self.exact_J(policy)
            if self.best[0] > J_end + 1e-12 * max(1.0, abs(J_end)):
                self.records.append(dict(iteration=it, kind="return", J_from=J_end, J_to=self.best[0], slots=[]))
                back = self.best[1]
        return back, self.certificate(policy if back is None else back)
