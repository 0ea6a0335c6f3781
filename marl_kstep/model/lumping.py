r"""Exact lumping: the bisimulation quotient of a joint MDP.

States :math:`s \sim s'` are lumped when no restricted policy can tell them apart: every
agent observes the same, :math:`\phi_i(s) = \phi_i(s')`; the rewards agree,
:math:`r(s, j) = r(s', j)`; and for every joint action the probability of moving into each
block agrees, :math:`P(B \mid s, j) = P(B \mid s', j)`. :func:`lump` finds the largest such
partition (the coarsest refinement of the (observations, rewards) split that is stable
under the block transition rows). Because a policy sees states only through :math:`\phi`,
window paths from lumped states have the same distribution of observations, rewards and end
blocks, so :math:`V_k` is constant on blocks and :math:`J_k(\theta)` is the same function of
:math:`\theta` on the quotient: the value and every partial derivative are those of the full
model (up to rounding).

Refinement is splitter based ("process all but the largest piece", Hopcroft; Valmari &
Franceschinis 2010), :math:`O(m \log n)` for :math:`m` transitions and :math:`n` states,
with probabilities compared bitwise (sums taken in sorted order, so equal multisets give
equal sums). Pieces whose block probabilities are derived by subtraction are exact only up
to rounding, so the result is checked: every state's block rows must match its block
representative's within ``Settings.lump_stable_tol``, else the model is left unlumped (with
a warning). Models with more than ``Settings.lump_max_transitions`` transitions, or whose
refinement would need more memory than ``Settings.max_model_bytes`` allows
(:func:`refine_bytes`), are not lumped either (with a warning); :attr:`Lumping.skipped` says
why. Lumping is never off without a :class:`LumpingSkippedWarning`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .._refine import check_stable, refine_lumping
from ..settings import current, model_bytes_limit
from ._refine_small import SMALL_MAX_TRANSITIONS, refine_small
from .joint_mdp import JointMDP

__all__ = ["Lumping", "lump", "LumpingSkippedWarning"]


class LumpingSkippedWarning(UserWarning):
    """Lumping was skipped (the model is walked unlumped); the message says why."""


class Lumping(NamedTuple):
    """Result of :func:`lump`.

    Attributes
    ----------
    quotient : JointMDP
        The model on the blocks (block ``b`` represented by its first state; ``mu`` summed per block).
    block : ndarray, shape (N,)
        Block of every state, blocks numbered in order of their first state.
    skipped : str or None
        Why lumping was not attempted or not used (``None`` when it ran).
    """

    quotient: JointMDP
    block: np.ndarray
    skipped: str | None = None

    @property
    def n_blocks(self) -> int:
        return self.quotient.n_states

    @property
    def is_trivial(self) -> bool:
        """True when no two states were lumped (the quotient is the model itself)."""
        return self.quotient.n_states == self.block.size


def _relabel(inverse: np.ndarray) -> tuple[np.ndarray, int]:
    """Block labels numbered by first occurrence."""
    _, first, inv = np.unique(inverse, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inv.ravel()], first.size


def _row_ids(rows: np.ndarray) -> np.ndarray:
    """Id of every row of a 2-d int64 array (equal rows, equal ids)."""
    rows = np.ascontiguousarray(rows)
    void = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    return np.unique(void, return_inverse=True)[1].ravel()


def _quotient_rows(mdp: JointMDP, label: np.ndarray, rep: np.ndarray):
    """The quotient's transition rows: row ``b * J + j`` aggregates the row ``(rep[b], j)``
    onto blocks. Returns ``(row, block, probability)`` sorted by row then block, with the
    probabilities of one block summed in sorted order (equal multisets, equal sums); only the
    representatives' rows are read."""
    J = mdp.n_joint_actions
    rows = (rep[:, None] * J + np.arange(J)).ravel()
    lo, hi = mdp.indptr[rows], mdp.indptr[rows + 1]
    counts = hi - lo
    q_row = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
    entry = np.arange(q_row.size, dtype=np.int64) + np.repeat(lo - np.cumsum(counts) + counts, counts)
    b, p = label[mdp.indices[entry]], mdp.probs[entry]
    order = np.lexsort((p, b, q_row))
    r_s, b_s, p_s = q_row[order], b[order], p[order]
    if r_s.size == 0:
        return r_s, b_s, p_s
    start = np.flatnonzero(np.r_[True, (r_s[1:] != r_s[:-1]) | (b_s[1:] != b_s[:-1])])
    return r_s[start], b_s[start], np.add.reduceat(p_s, start)


def refine_bytes(mdp: JointMDP) -> int:
    """Estimated peak bytes of :func:`lump` on ``mdp``: the refinement keeps eight 8-byte
    arrays per stored transition (the reversed model, sort buffers, gathered contributions)
    and about twenty per state; the quotient is built from the representatives' rows."""
    return 72 * int(mdp.probs.size) + 8 * 24 * mdp.n_states + 8 * mdp.indptr.size


def _unlumped(mdp: JointMDP, reason: str | None) -> Lumping:
    if reason is not None:
        warnings.warn(f"lumping skipped: {reason}; the model is walked unlumped", LumpingSkippedWarning,
                      stacklevel=3)
    block = np.arange(mdp.n_states, dtype=np.int64)
    block.setflags(write=False)
    return Lumping(mdp, block, reason)


def lump(mdp: JointMDP) -> Lumping:
    """The coarsest exact lumping (bisimulation quotient) of ``mdp`` (see the module docstring).

    Returns
    -------
    Lumping
        ``quotient``, ``block`` and ``skipped``. A model that does not lump is returned as
        its own quotient.
    """
    settings = current()
    N, J = mdp.n_states, mdp.n_joint_actions
    if mdp.probs.size > settings.lump_max_transitions:
        return _unlumped(mdp, f"{mdp.probs.size:,} transitions, more than Settings.lump_max_transitions="
                              f"{settings.lump_max_transitions:,}")
    need = refine_bytes(mdp)
    if need > model_bytes_limit(settings):
        return _unlumped(mdp, f"the refinement would take about {need / 2**30:,.2f} GiB, more than the limit of "
                              f"{model_bytes_limit(settings) / 2**30:,.2f} GiB (Settings.max_model_bytes)")
    first = np.concatenate([np.stack(mdp.obs, axis=1), mdp.rewards.view(np.int64)], axis=1)
    init, n_init = _relabel(_row_ids(first))
    if n_init == N:
        return _unlumped(mdp, None)
    exact = False
    if mdp.probs.size <= SMALL_MAX_TRANSITIONS:  # numpy rounds: no refinement kernel to compile
        init, exact = refine_small(mdp.indptr, mdp.indices, mdp.probs, N, J, init)
    label = init if exact else refine_lumping(mdp.indptr, mdp.indices, mdp.probs, N, J, init)
    n_blocks = int(label.max()) + 1
    if n_blocks == N:
        return _unlumped(mdp, None)
    err = 0.0 if exact else check_stable(mdp.indptr, mdp.indices, mdp.probs, N, J, label)
    if not err <= settings.lump_stable_tol:
        return _unlumped(mdp, f"the refined partition is stable only to {err:.1e} (rounding), more than "
                              f"Settings.lump_stable_tol={settings.lump_stable_tol:g}")
    rep = np.zeros(n_blocks, np.int64)
    rep[label[::-1]] = np.arange(N - 1, -1, -1)  # first state of every block
    q_row, b, p = _quotient_rows(mdp, label, rep)
    indptr = np.zeros(n_blocks * J + 1, np.int64)
    np.cumsum(np.bincount(q_row, minlength=n_blocks * J), out=indptr[1:])
    quotient = JointMDP(
        n_actions=mdp.n_actions, n_obs=mdp.n_obs, obs=tuple(o[rep] for o in mdp.obs), indptr=indptr,
        indices=b.astype(np.int64), probs=p.astype(np.float64), rewards=mdp.rewards[rep],
        mu=np.bincount(label, weights=mdp.mu, minlength=n_blocks), gamma=mdp.gamma,
        agent_names=mdp.agent_names, action_names=mdp.action_names, obs_names=mdp.obs_names,
    )
    label = label.astype(np.int64)
    label.setflags(write=False)
    return Lumping(quotient, label, None)
