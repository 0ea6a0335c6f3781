r"""Exhaustive search over deterministic decentralized policies.

A deterministic joint table assigns every (agent, observation) slot one action, so there
are :math:`\prod_i A_i^{O_i}` of them; only observations that occur in some state matter,
so the search enumerates those slots (unseen observations get action 0). For each, the joint action in state ``s`` is
:math:`j(s) = \sum_i d_i(\phi_i(s))\, \mathrm{stride}_i` and the value is the ordinary
:math:`J = \mu^\top (I - \gamma P_d)^{-1} r_d` (for deterministic tables
:math:`V_k = V` for every ``k``, SPEC §3).

Small state spaces are evaluated in batches with dense batched solves; larger ones one
table at a time with a sparse LU.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from .model import JointMDP
from .policy import Policy
from .settings import current
from .threads import blas_threads
from .validation import check_int


def _check_model(mdp) -> None:
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")


def _max_policies(value) -> int:
    return current().max_policies if value is None else check_int("max_policies", value, minimum=1)

__all__ = [
    "mdp_optimum",
    "alternating_best_response",
    "best_deterministic",
    "best_response",
    "count_deterministic",
    "deterministic_values",
    "option_values",
    "used_observations",
]


def used_observations(mdp: JointMDP) -> list[np.ndarray]:
    """The observation ids each agent actually sees in some state (sorted)."""
    return [np.unique(o) for o in mdp.obs]


def count_deterministic(mdp: JointMDP) -> int:
    r"""Number of distinct deterministic joint tables, :math:`\prod_i A_i^{|\mathcal O_i|}`
    with :math:`\mathcal O_i` the observations agent ``i`` sees in some state (rows of
    unseen observations do not change the value). Exact integer."""
    count = 1
    for used, a in zip(used_observations(mdp), mdp.n_actions, strict=True):
        count *= a ** len(used)
    return count


def _slot_layout(mdp: JointMDP):
    """Radices of the used (agent, observation) slots, agent 0's slots most significant,
    and for each agent the map from observation id to slot position (-1 when unused)."""
    used = used_observations(mdp)
    radices = tuple(a for u, a in zip(used, mdp.n_actions, strict=True) for _ in u)
    slot_of, pos = [], 0
    for i, u in enumerate(used):
        m = np.full(mdp.n_obs[i], -1, dtype=np.int64)
        m[u] = pos + np.arange(u.size)
        slot_of.append(m)
        pos += u.size
    return radices, slot_of


def joint_action_weights(mdp: JointMDP, policy: Policy, skip: int | None = None) -> np.ndarray:
    r"""``w[s, j]`` = :math:`\prod_i \theta_i[\phi_i(s), a_i(j)]` over the agents (all but ``skip``):
    the probability of joint action ``j`` in state ``s`` (without agent ``skip``'s factor)."""
    acts = mdp.joint_actions()
    w = np.ones((mdp.n_states, mdp.n_joint_actions))
    for i, t in enumerate(policy.theta):
        if i != skip:
            w *= t[mdp.obs[i]][:, acts[:, i]]
    return w


def _joint_actions_of(mdp: JointMDP, digits: np.ndarray, slot_of) -> np.ndarray:
    """Joint action per state for a batch of tables: ``digits`` (B, n_slots) -> (B, N)."""
    strides = mdp.action_strides
    j = np.zeros((digits.shape[0], mdp.n_states), dtype=np.int64)
    for i in range(mdp.n_agents):
        j += digits[:, slot_of[i][mdp.obs[i]]] * strides[i]
    return j


@blas_threads()  # one BLAS thread in the batched solves (threads.py, point 4)
def option_values(P_opt, r_opt: np.ndarray, choice: np.ndarray, mu: np.ndarray, gamma: float) -> np.ndarray:
    r"""Values of deterministic maps that pick one *option* per state.

    Parameters
    ----------
    P_opt : sparse matrix, shape (N*K, N)
        Row ``s*K + k`` is the next-state distribution of option ``k`` in state ``s``.
    r_opt : ndarray, shape (N, K)
        Reward of option ``k`` in state ``s``.
    choice : ndarray, shape (B, N)
        ``choice[b, s]``: the option map ``b`` plays in state ``s``.

    Returns
    -------
    ndarray, shape (B,)
        :math:`\mu^\top (I - \gamma P_b)^{-1} r_b` for every map.
    """
    N, K = r_opt.shape
    rows = np.arange(N)
    B = choice.shape[0]
    out = np.empty(B)
    settings = current()
    if N <= settings.dense_search_max_states:
        P = P_opt.toarray().reshape(N, K, N)
        batch = max(1, settings.search_batch_bytes // (8 * N * N))
        eye = np.eye(N)
        for lo in range(0, B, batch):
            ch = choice[lo : lo + batch]
            A = eye[None] - gamma * P[rows[None, :], ch]  # (b, N, N)
            r = r_opt[rows[None, :], ch]  # (b, N)
            # J = mu^T A^{-1} r: solve the transposed system for nu, then dot
            nu = np.linalg.solve(np.swapaxes(A, 1, 2), np.broadcast_to(mu, r.shape)[..., None])
            out[lo : lo + batch] = np.einsum("bn,bn->b", nu[..., 0], r)
        return out
    P_opt = sparse.csr_matrix(P_opt)
    eye = sparse.identity(N, format="csc")
    for b in range(B):
        Pd = P_opt[rows * K + choice[b]]
        V = splu((eye - gamma * Pd).tocsc()).solve(r_opt[rows, choice[b]])
        out[b] = mu @ V
    return out


def deterministic_values(mdp: JointMDP, joint_actions: np.ndarray) -> np.ndarray:
    """Values ``J = mu . V`` of deterministic state-to-joint-action maps.

    Parameters
    ----------
    joint_actions : ndarray, shape (B, N)
        ``joint_actions[b, s]`` is the joint action played in state ``s`` by table ``b``.
    """
    return option_values(mdp.transition_matrix(), np.asarray(mdp.rewards), joint_actions, mdp.mu, mdp.gamma)


def best_deterministic(mdp: JointMDP, max_policies: int | None = None) -> tuple[float, Policy]:
    r"""Best deterministic decentralized policy by exhaustive, exact search.

    Parameters
    ----------
    mdp : JointMDP
    max_policies : int, optional
        Refuse (``ValueError``) when :math:`\prod_i A_i^{O_i}` exceeds this (default
        ``Settings.max_policies``).

    Returns
    -------
    (J*, Policy)
        The best value and a maximising policy (the first in enumeration order on ties).
    """
    _check_model(mdp)
    max_policies = _max_policies(max_policies)
    count = count_deterministic(mdp)
    if count > max_policies:
        raise ValueError(
            f"exhaustive search needs {count:,} deterministic joint tables (prod_i A_i^O_i with "
            f"A={list(mdp.n_actions)} and O={[len(u) for u in used_observations(mdp)]} observations in use), more than "
            f"max_policies={max_policies:,}; pass a larger max_policies if you can afford it"
        )
    radices, slot_of = _slot_layout(mdp)
    best_val, best_idx = -np.inf, 0
    chunk = 1 << 16
    for lo in range(0, count, chunk):
        idx = np.arange(lo, min(count, lo + chunk))
        digits = np.stack(np.unravel_index(idx, radices), axis=1) if radices else np.zeros((idx.size, 0), int)
        vals = deterministic_values(mdp, _joint_actions_of(mdp, digits, slot_of))
        b = int(np.argmax(vals))
        if vals[b] > best_val:
            best_val, best_idx = float(vals[b]), int(idx[b])
    digits = np.asarray(np.unravel_index(best_idx, radices), dtype=np.int64) if radices else np.zeros(0, int)
    tables = [np.where(slot_of[i] >= 0, digits[np.maximum(slot_of[i], 0)], 0) for i in range(mdp.n_agents)]
    return best_val, Policy.deterministic(mdp, tables)


def _tables_of(digits: np.ndarray, used: np.ndarray, n_obs: int) -> np.ndarray:
    """Full per-observation table from the digits of the used observations (others: 0)."""
    table = np.zeros(n_obs, dtype=np.int64)
    table[used] = digits
    return table


def best_response(mdp: JointMDP, policy: Policy, agent: int,
                  max_policies: int | None = None) -> tuple[float, np.ndarray]:
    r"""Agent ``agent``'s best deterministic table when the others play ``policy``.

    The others' (possibly stochastic) tables are folded into the dynamics: with
    :math:`w(s, j, a) = 1[j_i = a] \prod_{l \ne i} \theta_l[\phi_l(s), j_l]`, option ``a``
    in state ``s`` has :math:`P_a(s, \cdot) = \sum_j w\, P(\cdot \mid s, j)` and
    :math:`r_a(s) = \sum_j w\, r(s, j)`; all :math:`A_i^{|\mathcal O_i|}` tables are then
    evaluated exactly.

    Returns
    -------
    (value, table)
        The best value and the table (one action per observation of the agent).
    """
    _check_model(mdp)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a marl_kstep.Policy; got {type(policy).__name__}")
    policy.check_compatible(mdp)
    agent = check_int("agent", agent, minimum=0, maximum=mdp.n_agents - 1)
    N, J, A = mdp.n_states, mdp.n_joint_actions, mdp.n_actions[agent]
    used = used_observations(mdp)[agent]
    count = A ** len(used)
    max_policies = _max_policies(max_policies)
    if count > max_policies:
        raise ValueError(
            f"best response of agent {agent} needs {count:,} tables, more than max_policies={max_policies:,}"
        )
    acts = mdp.joint_actions()
    w = joint_action_weights(mdp, policy, skip=agent)
    # weight matrix (N*A, N*J): row s*A + a collects the joint actions with j_i = a
    rows = (np.arange(N)[:, None] * A + acts[:, agent][None, :]).ravel()
    cols = np.arange(N * J)
    Wm = sparse.csr_matrix((w.ravel(), (rows, cols)), shape=(N * A, N * J))
    P_opt = Wm @ mdp.transition_matrix()
    r_opt = (Wm @ np.asarray(mdp.rewards).ravel()).reshape(N, A)
    digits = np.stack(np.unravel_index(np.arange(count), (A,) * len(used)), axis=1).reshape(count, len(used))
    pos = np.full(mdp.n_obs[agent], -1, dtype=np.int64)
    pos[used] = np.arange(len(used))
    choice = digits[:, pos[mdp.obs[agent]]]
    vals = option_values(P_opt, r_opt, choice, mdp.mu, mdp.gamma)
    b = int(np.argmax(vals))
    return float(vals[b]), _tables_of(digits[b], used, mdp.n_obs[agent])


def alternating_best_response(mdp: JointMDP, init: Policy | None = None, rounds: int = 20,
                              max_policies: int | None = None) -> tuple[float, Policy, int]:
    """Agents in turn replace their table by their exact best deterministic response.

    Starts from ``init`` (default uniform); stops after ``rounds`` rounds or when a full
    round changes nothing (a deterministic equilibrium among the agents).

    Returns
    -------
    (value, Policy, rounds_used)
    """
    _check_model(mdp)
    rounds = check_int("rounds", rounds, minimum=1)
    _max_policies(max_policies)
    if init is not None and not isinstance(init, Policy):
        raise ValueError(f"init must be a marl_kstep.Policy or None; got {type(init).__name__}")
    policy = (Policy.uniform(mdp) if init is None else init).copy()
    policy.check_compatible(mdp)
    value = -np.inf
    for r in range(1, rounds + 1):
        changed = False
        for i in range(mdp.n_agents):
            value, table = best_response(mdp, policy, i, max_policies)
            onehot = np.eye(mdp.n_actions[i])[table]
            if not np.array_equal(onehot, policy.theta[i]):
                policy.theta[i] = onehot
                changed = True
        if not changed:
            return value, policy, r
    return value, policy, rounds


def mdp_optimum(mdp: JointMDP, tol: float = 1e-10, max_iter: int = 100_000) -> float:
    r"""Optimal value of the fully observable joint MDP, :math:`\mu^\top V^*` by value iteration.

    A centralised controller that sees the joint state can do at least as well as any
    decentralized memoryless policy, so this is an upper bound on every value in the tables
    (J*, and stochastic restricted policies too). Stops when the Bellman update moves by less
    than ``tol (1 - gamma) / (2 gamma)`` (then :math:`\|V - V^*\|_\infty \le` ``tol``).
    """
    _check_model(mdp)
    from scipy import sparse

    N, J = mdp.n_states, mdp.n_joint_actions
    P = sparse.csr_matrix((mdp.probs, mdp.indices, mdp.indptr), shape=(N * J, N))
    R = mdp.rewards.reshape(N * J)
    V = np.zeros(N)
    g = mdp.gamma
    stop = tol * (1 - g) / (2 * g) if g > 0 else np.inf
    for _ in range(max_iter):
        V_new = (R + g * (P @ V)).reshape(N, J).max(axis=1)
        if np.abs(V_new - V).max() <= stop:
            V = V_new
            break
        V = V_new
    return float(mdp.mu @ V)
