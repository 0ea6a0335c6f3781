r"""Partition refinement for small models in numpy (no compiled kernel).

The bisimulation quotient of :mod:`.lumping` is the coarsest partition that refines the
(observations, rewards) split and is stable: for every two states :math:`s, s'` of one block,
every joint action :math:`j` and every block :math:`B`, :math:`P(B \mid s, j) = P(B \mid s', j)`.
The compiled splitter refinement (:mod:`marl_kstep._refine`, :math:`O(m \log n)`) costs about
10-15 s of compilation on a machine's first call, longer than the refinement of any small
model. For small models this module runs the plain signature refinement instead (Kanellakis
& Smolka; "naive" Moore refinement): every round, each state's signature is its block and,
for every joint action, the multiset of (block, :math:`P(B \mid s, j)`) pairs; states with
equal signatures stay together, and the rounds stop when no block splits. Each round is a
few vectorised sorts, :math:`O(m \log m)`; the number of rounds is at most the number of
blocks, and the rounds here are capped by work (:data:`SMALL_MAX_WORK` transitions times
rounds, at most about 0.05 s).

Block sums are taken in increasing order of the probabilities (one ``lexsort``), so equal
multisets give bitwise equal sums (as in :mod:`marl_kstep._refine`), and the fixed point is
stable exactly (bitwise), not up to rounding. After the capped rounds without a fixed point
(a chain splits off one state per round) the partition reached so far is returned
unfinished; it refines the initial split and is coarser than or equal to the answer, so the
compiled refinement started from it finds the same coarsest stable partition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["refine_small", "SMALL_MAX_TRANSITIONS", "SMALL_MAX_WORK"]

#: Models with at most this many stored transitions are refined here (larger ones: the
#: compiled refinement, which then costs less than its compilation).
SMALL_MAX_TRANSITIONS = 5_000
#: Transitions times rounds before the unfinished partition is handed to the compiled
#: refinement (about 1 microsecond each; measured on the aggregated chain, 2 cores).
SMALL_MAX_WORK = 50_000


def _first_occurrence_labels(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense labels of the rows of ``keys`` (shape ``(N, w)``), numbered by first occurrence."""
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()], int(first.size)


def refine_small(indptr, indices, probs, n_states: int, n_joint: int, init_label: np.ndarray,
                 max_rounds: int | None = None) -> tuple[np.ndarray, bool]:
    r"""Signature refinement of ``init_label`` to the coarsest stable partition.

    Parameters
    ----------
    indptr : ndarray of int64, shape (n_states * n_joint + 1,)
        CSR row pointers over rows ``r = s * n_joint + j``.
    indices : ndarray of int64, shape (nnz,)
        Successor states.
    probs : ndarray of float64, shape (nnz,)
        Transition probabilities.
    n_states, n_joint : int
    init_label : ndarray of int, shape (n_states,)
        Initial partition (states with different labels are never merged).
    max_rounds : int, optional
        Rounds before giving up on reaching the fixed point here (default: ``SMALL_MAX_WORK``
        divided by the number of transitions, at least 4).

    Returns
    -------
    label : ndarray of int64, shape (n_states,)
        Block of every state, numbered by first occurrence.
    done : bool
        True when ``label`` is the coarsest stable partition (exactly stable); False when
        ``max_rounds`` rounds did not reach it (``label`` is then an intermediate partition).
    """
    N, J = int(n_states), int(n_joint)
    label, n_blocks = _first_occurrence_labels(np.asarray(init_label, np.int64).reshape(N, 1))
    if N == 0 or len(indices) == 0:  # no transitions: the initial split is stable
        return label, True
    if max_rounds is None:
        max_rounds = max(4, SMALL_MAX_WORK // len(indices))
    row = np.repeat(np.arange(N * J, dtype=np.int64), np.diff(indptr))
    bits = np.asarray(probs, np.float64)
    for _ in range(max_rounds):
        block = label[indices]
        order = np.lexsort((bits, block, row))  # by row, then block, then probability
        r_s, b_s = row[order], block[order]
        start = np.flatnonzero(np.r_[True, (r_s[1:] != r_s[:-1]) | (b_s[1:] != b_s[:-1])])
        sums = np.add.reduceat(bits[order], start)  # increasing order within every group
        g_row, g_block = r_s[start], b_s[start]
        g_state = g_row // J
        # one key per (state, j, block, sum): the states' signatures are their runs of groups
        group_key = _first_occurrence_labels(
            np.stack([g_row % J, g_block, sums.view(np.int64)], axis=1))[0]
        counts = np.bincount(g_state, minlength=N)
        width = int(counts.max()) if counts.size else 0
        sig = np.full((N, width + 1), -1, np.int64)
        sig[:, 0] = label
        pos = np.arange(g_state.size) - np.repeat(np.cumsum(counts) - counts, counts)
        sig[g_state, 1 + pos] = group_key
        new_label, n_new = _first_occurrence_labels(sig)
        label = new_label
        if n_new == n_blocks:
            return label, True
        n_blocks = n_new
    return label, False
