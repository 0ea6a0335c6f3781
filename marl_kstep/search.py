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

__all__ = ["count_deterministic", "best_deterministic", "deterministic_values", "used_observations"]

_DENSE_MAX_STATES = 600
_BATCH_BYTES = 64 * 2**20


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


def _joint_actions_of(mdp: JointMDP, digits: np.ndarray, slot_of) -> np.ndarray:
    """Joint action per state for a batch of tables: ``digits`` (B, n_slots) -> (B, N)."""
    strides = mdp.action_strides
    j = np.zeros((digits.shape[0], mdp.n_states), dtype=np.int64)
    for i in range(mdp.n_agents):
        j += digits[:, slot_of[i][mdp.obs[i]]] * strides[i]
    return j


def deterministic_values(mdp: JointMDP, joint_actions: np.ndarray) -> np.ndarray:
    """Values ``J = mu . V`` of deterministic state-to-joint-action maps.

    Parameters
    ----------
    joint_actions : ndarray, shape (B, N)
        ``joint_actions[b, s]`` is the joint action played in state ``s`` by table ``b``.

    Returns
    -------
    ndarray, shape (B,)
    """
    N, J = mdp.n_states, mdp.n_joint_actions
    rows = np.arange(N)
    B = joint_actions.shape[0]
    out = np.empty(B)
    g = mdp.gamma
    if N <= _DENSE_MAX_STATES:
        P = mdp.to_dense()  # (N, J, N)
        batch = max(1, _BATCH_BYTES // (8 * N * N))
        eye = np.eye(N)
        for lo in range(0, B, batch):
            ja = joint_actions[lo : lo + batch]
            A = eye[None] - g * P[rows[None, :], ja]  # (b, N, N)
            r = mdp.rewards[rows[None, :], ja]  # (b, N)
            # J = mu^T A^{-1} r: solve the transposed system for nu, then dot
            nu = np.linalg.solve(np.swapaxes(A, 1, 2), np.broadcast_to(mdp.mu, r.shape)[..., None])
            out[lo : lo + batch] = np.einsum("bn,bn->b", nu[..., 0], r)
        return out
    Pcsr = mdp.transition_matrix()
    eye = sparse.identity(N, format="csc")
    for b in range(B):
        sel = rows * J + joint_actions[b]
        Pd = Pcsr[sel]
        V = splu((eye - g * Pd).tocsc()).solve(mdp.rewards[rows, joint_actions[b]])
        out[b] = mdp.mu @ V
    return out


def best_deterministic(mdp: JointMDP, max_policies: int = 10**6) -> tuple[float, Policy]:
    r"""Best deterministic decentralized policy by exhaustive, exact search.

    Parameters
    ----------
    mdp : JointMDP
    max_policies : int
        Refuse (``ValueError``) when :math:`\prod_i A_i^{O_i}` exceeds this.

    Returns
    -------
    (J*, Policy)
        The best value and a maximising policy (the first in enumeration order on ties).
    """
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
