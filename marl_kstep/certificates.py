r"""Local-optimality certificates at deterministic policies (SPEC §9): exact values of 1-, 2-, ... slot deviations.

A *slot* is an (agent, observation) pair that the agent sees in some state; a deterministic
policy picks one action per slot. :func:`certify` evaluates, exactly, every policy that differs
from a given deterministic one in one slot (``order=1``), in one or two slots (``order=2``, the
default) or in up to ``order`` slots:
the value :math:`J = \mu^\top (I - \gamma P_d)^{-1} r_d` of each deviation ``d``, in batches
through the same machinery as the exhaustive search (:func:`marl_kstep.search.deterministic_values`),
never one Python call per deviation.

* ``one_opt``: no single-slot change improves :math:`J` (every k-step gradient with a
  deterministic start sees only such changes, SPEC §3);
* ``two_opt``: no change of one or two slots together improves it (a coordination trap that
  single-slot ascent cannot leave may still be left by a certified pair, see ``improving``);
* :meth:`Certificate.is_opt` ``(m)``: no change of at most ``m`` slots improves it (``m <= order``).
  Some traps need more than two slots at once (3-agent number matching: three; the grid corridor
  trap at k = 4: four), and ``order=3`` or ``4`` finds them; the count of changes,
  :func:`count_deviations`, grows like :math:`\binom{S}{m} (A - 1)^m` in the number of slots ``S``
  and is checked against the budget before any work.

A stochastic policy is rounded to its greedy tables first, and the certificate says so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from .model import JointMDP
from .policy import Policy
from .search import _joint_actions_of, _slot_layout, deterministic_values, joint_action_weights, used_observations
from .settings import current
from .validation import check_int, check_positive

__all__ = ["Certificate", "Deviation", "certify", "count_deviations", "slot_visitation"]


@dataclass(frozen=True)
class Deviation:
    """A change of one or more slots: ``slots`` holds ``(agent, observation, new action)``; ``J`` its
    exact value and ``gain`` = ``J`` minus the certified policy's value."""

    slots: tuple[tuple[int, int, int], ...]
    J: float
    gain: float


@dataclass(frozen=True)
class Certificate:
    """What :func:`certify` found (see the module docstring).

    Attributes
    ----------
    policy : Policy
        The deterministic policy certified (the rounding of the input when ``rounded``).
    J : float
        Its exact value.
    rounded : bool
        The input was not deterministic; its greedy tables were certified.
    order : int
        Largest number of slots changed together.
    one_opt : bool
    two_opt : bool or None
        No change of one or two slots improves; ``None`` for ``order=1``.
    improving : tuple of Deviation
        The improving deviations, best first.
    evaluated : int
        Deviations evaluated.
    """

    policy: Policy
    J: float
    rounded: bool
    order: int
    one_opt: bool
    two_opt: bool | None
    improving: tuple[Deviation, ...]
    evaluated: int

    @property
    def best(self) -> Deviation | None:
        return self.improving[0] if self.improving else None

    def is_opt(self, m: int) -> bool:
        """No change of at most ``m`` slots improves :math:`J` (``1 <= m <= order``)."""
        m = check_int("m", m, minimum=1, maximum=self.order)
        return not any(len(d.slots) <= m for d in self.improving)


def _deviation_digits(base: np.ndarray, radices, order: int):
    """Every table differing from ``base`` in 1 to ``order`` slots: digits (B, n_slots) and the changes."""
    alternatives = [[a for a in range(r) if a != base[q]] for q, r in enumerate(radices)]
    changes = []
    for size in range(1, order + 1):
        for slots in itertools.combinations(range(len(radices)), size):
            for acts in itertools.product(*(alternatives[q] for q in slots)):
                changes.append(tuple(zip(slots, acts, strict=True)))
    digits = np.repeat(base[None, :], len(changes), axis=0)
    for b, change in enumerate(changes):
        for q, a in change:
            digits[b, q] = a
    return digits, changes


def count_deviations(radices, order: int) -> int:
    r"""Number of tables differing from a deterministic one in 1 to ``order`` slots:
    :math:`\sum_{m=1}^{\mathrm{order}} e_m(A_1 - 1, \dots, A_S - 1)`, the elementary symmetric
    polynomials of the slots' numbers of alternatives."""
    order = min(order, len(radices))
    e = [1] + [0] * order  # e[m] after each slot: changes of exactly m of the slots seen so far
    for r in radices:
        for m in range(order, 0, -1):
            e[m] += e[m - 1] * (r - 1)
    return sum(e[1:])


def _check_policy(mdp: JointMDP, policy) -> None:
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a marl_kstep.Policy; got {type(policy).__name__}")
    if policy.free_entries:
        raise ValueError("policy must lie on the simplex (it was built with check_simplex=False)")
    policy.check_compatible(mdp)


def certify(mdp: JointMDP, policy: Policy, order: int = 2, *, tol: float = 1e-9,
            max_deviations: int | None = None, batch: int = 4096) -> Certificate:
    r"""Exact values of every deviation of a deterministic policy in 1 to ``order`` slots.

    Parameters
    ----------
    mdp : JointMDP
    policy : Policy
        Deterministic, or near-deterministic (then its greedy rounding is certified and
        ``rounded`` is set).
    order : int
        Largest number of slots changed together (1, 2 by default, or more: the count of
        deviations is checked against ``max_deviations`` first).
    tol : float
        A deviation improves when its ``J`` exceeds the policy's by more than
        ``tol * max(1, |J|)``.
    max_deviations : int, optional
        Refuse (ValueError, before any allocation) above this many deviations; default
        ``Settings.max_policies``.
    batch : int
        Deviations evaluated together.

    Returns
    -------
    Certificate
    """
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    _check_policy(mdp, policy)
    order = check_int("order", order, minimum=1)
    tol = check_positive("tol", tol, allow_zero=True)
    batch = check_int("batch", batch, minimum=1)
    limit = current().max_policies if max_deviations is None else check_int("max_deviations", max_deviations,
                                                                             minimum=1)
    radices, slot_of = _slot_layout(mdp)
    n_dev = count_deviations(radices, order)
    if n_dev > limit:
        raise ValueError(f"certify(order={order}) needs {n_dev:,} deviations, above max_deviations={limit:,}")
    tables = policy.greedy_tables()
    used = used_observations(mdp)
    rounded = not Policy([t[u] for t, u in zip(policy.theta, used, strict=True)]).is_deterministic()  # used rows
    base = np.array([tables[i][o] for i, u in enumerate(used) for o in u], dtype=np.int64)
    slot_names = [(i, int(o)) for i, u in enumerate(used) for o in u]
    J0 = float(deterministic_values(mdp, _joint_actions_of(mdp, base[None, :], slot_of))[0])
    digits, changes = _deviation_digits(base, radices, min(order, len(radices)))
    values = np.empty(len(changes))
    for lo in range(0, len(changes), batch):
        values[lo:lo + batch] = deterministic_values(mdp, _joint_actions_of(mdp, digits[lo:lo + batch], slot_of))
    thresh = tol * max(1.0, abs(J0))
    better = np.flatnonzero(values > J0 + thresh)
    better = better[np.argsort(-values[better], kind="stable")]
    improving = tuple(Deviation(tuple((*slot_names[q], a) for q, a in changes[b]), float(values[b]),
                                float(values[b] - J0)) for b in better)
    one_opt = not any(len(d.slots) == 1 for d in improving)
    two_opt = not any(len(d.slots) <= 2 for d in improving) if order >= 2 else None
    certified = Policy.deterministic(mdp, [np.asarray(t) for t in tables])
    return Certificate(certified, J0, rounded, order, one_opt, two_opt, improving, len(changes))


def slot_visitation(mdp: JointMDP, policy: Policy) -> list[np.ndarray]:
    r"""Discounted visitation of every slot under a (stochastic) policy.

    :math:`w_i(o) = \sum_{s:\,\phi_i(s) = o} d(s)` with the discounted occupancy
    :math:`d^\top = (1 - \gamma)\,\mu^\top (I - \gamma P_\pi)^{-1}` (sums to 1) and
    :math:`P_\pi(s, s') = \sum_j \pi(j \mid s) P(s' \mid s, j)`. A slot with
    :math:`w_i(o) = 0` is never seen: its row does not change :math:`J`, and every exact
    gradient entry of it is 0. Returns one array of shape ``(O_i,)`` per agent.
    """
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    _check_policy(mdp, policy)
    N, nJ = mdp.n_states, mdp.n_joint_actions
    weight = joint_action_weights(mdp, policy)
    rows = np.repeat(np.arange(N), nJ)
    S = sparse.csr_matrix((weight.ravel(), (rows, np.arange(N * nJ))), shape=(N, N * nJ))
    P_pi = (S @ mdp.transition_matrix()).tocsc()
    d = splu((sparse.identity(N, format="csc") - mdp.gamma * P_pi).T.tocsc()).solve(np.asarray(mdp.mu, dtype=float))
    d *= 1.0 - mdp.gamma
    return [np.bincount(mdp.obs[i], weights=d, minlength=mdp.n_obs[i]) for i in range(mdp.n_agents)]
