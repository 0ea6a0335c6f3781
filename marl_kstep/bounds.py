r"""Bounds and baselines of a decentralized problem: the best observation-blind policy (a lower
bound) and the fast informed bound (an upper bound on every decentralized policy, with any memory).

Both read a :class:`~marl_kstep.model.JointMDP` whose agent ``i`` sees :math:`\phi_i(x)` in state
:math:`x` (SPEC §1; for a ``.dpomdp`` model :math:`x = (s, o)` carries the last joint observation,
``start`` at :math:`t = 0`, SPEC §6).

**Blind policies.** Every agent plays one fixed action whatever it sees: a constant joint action
:math:`j`, value :math:`\mu^\top (I - \gamma P_j)^{-1} r_j`. :func:`best_blind` enumerates all
:math:`\prod_i A_i` of them. (Only deterministic blind policies: a stochastic blind policy is a
product of per-agent distributions, and its best value is not in general reached at a constant
joint action; we report the deterministic one as a baseline, not as the optimum of that class.)

**Fast informed bound** (Hauskrecht, JAIR 13, 2000). Let a *centralised* controller see the joint
observation :math:`o(x) = (\phi_0(x), \dots, \phi_{n-1}(x))` and remember everything. Every
decentralized policy -- memoryless, a finite-state controller of any size, history-dependent,
stochastic -- is one of its policies (each agent's choice depends on its own observations and
private randomness only, which the centralised controller can simulate), so the optimum of this
centralised POMDP bounds every value we report from above. Its value is bounded in turn by the
fixed point of

.. math::
    Q(x, j) = r(x, j) + \gamma \sum_{o'} \max_{j'} \sum_{x' : o(x') = o'} P(x' \mid x, j)\, Q(x', j'),

as :math:`V^*(b) \le \max_j \sum_x b(x) Q(x, j)` for every belief :math:`b`. At :math:`t = 0` the
controller has seen :math:`o(x_0)`, so the bound is
:math:`\sum_{o} \max_j \sum_{x : o(x) = o} \mu(x) Q(x, j)` (no larger than
:math:`\max_j \sum_x \mu(x) Q(x, j)`). The operator is monotone and a :math:`\gamma`-contraction in
the sup norm; iterating from 0 until the update moves by :math:`\delta` gives
:math:`\|Q_n - Q\|_\infty \le \gamma \delta / (1 - \gamma)`, which is added to the value so the
number returned stays an upper bound. It lies between the centralised POMDP's value and the fully
observable optimum (:func:`~marl_kstep.search.mdp_optimum`), and equals the latter when the joint
observation identifies the state.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .model import JointMDP
from .validation import check_int

__all__ = ["best_blind", "blind_values", "fast_informed_bound", "joint_observation"]


def _check_model(mdp) -> None:
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")


def joint_observation(mdp: JointMDP) -> np.ndarray:
    r"""The joint observation code of every state, :math:`\sum_i \phi_i(x) \prod_{l > i} O_l`
    (agent 0 most significant), as int64."""
    _check_model(mdp)
    code = np.zeros(mdp.n_states, dtype=np.int64)
    for o, n in zip(mdp.obs, mdp.n_obs, strict=True):
        code = code * int(n) + np.asarray(o, dtype=np.int64)
    return code


def blind_values(mdp: JointMDP) -> np.ndarray:
    r"""Value :math:`\mu^\top (I - \gamma P_j)^{-1} r_j` of every constant joint action :math:`j`
    (every agent plays one action whatever it sees), in joint-action order (SPEC §1)."""
    _check_model(mdp)
    from scipy.sparse.linalg import splu

    N, J = mdp.n_states, mdp.n_joint_actions
    P = sparse.csr_matrix((mdp.probs, mdp.indices, mdp.indptr), shape=(N * J, N))
    R = np.asarray(mdp.rewards).reshape(N, J)
    out = np.empty(J)
    eye = sparse.identity(N, format="csc")
    for j in range(J):
        Pj = P[np.arange(N) * J + j]
        V = splu((eye - mdp.gamma * Pj).tocsc()).solve(R[:, j].copy())
        out[j] = float(mdp.mu @ V)
    return out


def best_blind(mdp: JointMDP) -> tuple[float, tuple[int, ...]]:
    """The best deterministic observation-blind policy: ``(value, one action per agent)``."""
    vals = blind_values(mdp)
    j = int(np.argmax(vals))
    return float(vals[j]), tuple(int(a) for a in np.unravel_index(j, tuple(mdp.n_actions)))


def fast_informed_bound(mdp: JointMDP, tol: float = 1e-8, max_iter: int = 100_000) -> float:
    r"""The fast informed bound of the centralised joint-observation POMDP (module docstring): an
    upper bound on the value of every decentralized policy, memory of any size included.

    Parameters
    ----------
    tol : float
        Iterate until the bound's own slack :math:`\gamma \delta / (1 - \gamma)` is at most ``tol``;
        that slack is added, so the result is an upper bound (up to floating-point rounding).
    max_iter : int
        Refuse (``ValueError``) when ``tol`` is not reached by then.
    """
    _check_model(mdp)
    if not (isinstance(tol, float | int) and not isinstance(tol, bool) and tol > 0):
        raise ValueError(f"tol must be a positive number; got tol={tol!r}")
    max_iter = check_int("max_iter", max_iter, minimum=1)
    N, J, g = mdp.n_states, mdp.n_joint_actions, mdp.gamma
    obs = joint_observation(mdp)
    rows = np.repeat(np.arange(N * J, dtype=np.int64), np.diff(mdp.indptr))
    # one group per (row (x, j), next joint observation o')
    keys = rows * (int(obs.max()) + 1) + obs[mdp.indices]
    uniq, group = np.unique(keys, return_inverse=True)
    G = sparse.csr_matrix((mdp.probs, (group, mdp.indices)), shape=(uniq.size, N))
    group_row = uniq // (int(obs.max()) + 1)
    R = np.asarray(mdp.rewards, dtype=float).reshape(N * J)
    Q = np.zeros((N, J))
    slack = np.inf
    for _ in range(max_iter):
        best = (G @ Q).max(axis=1)  # max over j' of each group's sum
        Q_new = (R + g * np.bincount(group_row, weights=best, minlength=N * J)).reshape(N, J)
        delta = float(np.abs(Q_new - Q).max())
        Q = Q_new
        slack = g * delta / (1.0 - g) if g < 1 else np.inf
        if slack <= tol:
            break
    else:
        raise ValueError(f"fast_informed_bound: tol={tol} not reached in max_iter={max_iter} iterations "
                         f"(slack {slack:.3g})")
    # t = 0: the controller has seen o(x_0)
    start = np.flatnonzero(mdp.mu > 0)
    _, first = np.unique(obs[start], return_inverse=True)
    weighted = np.zeros((first.max() + 1, J))
    np.add.at(weighted, first, mdp.mu[start, None] * Q[start])
    return float(weighted.max(axis=1).sum() + slack)
