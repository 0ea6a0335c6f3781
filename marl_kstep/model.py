r"""The cooperative joint MDP with local-observation agents (SPEC §1).

A :class:`JointMDP` holds

* joint states :math:`s \in \{0, \dots, N-1\}` and agents :math:`i = 0, \dots, n-1`,
  agent :math:`i` having :math:`A_i` actions and :math:`O_i` observations;
* the joint action index :math:`j`, the mixed-radix number of :math:`(a_0, \dots, a_{n-1})`
  with **agent 0 most significant**,
  :math:`j = ((a_0 A_1 + a_1) A_2 + a_2) \dots`, so :math:`J = \prod_i A_i`;
* sparse transitions :math:`P(s' \mid s, j)`: row ``r = s * J + j`` of a CSR-like
  structure (``indptr`` of length :math:`NJ + 1`, ``indices`` and ``probs``);
* the team reward :math:`r(s, j)` (``rewards``, shape ``(N, J)``), the initial
  distribution :math:`\mu` and the discount :math:`0 \le \gamma < 1`;
* each agent's deterministic observation map :math:`\phi_i(s)` (``obs[i]``, shape ``(N,)``).

The object is immutable: every array is a read-only copy made and checked once by the
constructors, so the numerical kernels never re-check their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = ["JointMDP", "Lumping", "LUMP_MAX_ENTRIES", "ROW_SUM_TOL"]

#: Tolerance on transition rows and on ``mu`` summing to one.
ROW_SUM_TOL = 1e-9

#: :meth:`JointMDP.lumped` gives up (returns the model unlumped) when the per-state
#: signatures would hold more than this many integers.
LUMP_MAX_ENTRIES = 50_000_000


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_gamma(gamma) -> float:
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a number in [0, 1); got gamma={gamma!r}") from None
    if not (0.0 <= g < 1.0):
        raise ValueError(f"gamma must lie in [0, 1); got gamma={g!r}")
    return g


def _check_counts(name: str, values) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive integers; got {values!r}") from None
    if len(counts) == 0:
        raise ValueError(f"{name} must name at least one agent; got {values!r}")
    for i, c in enumerate(counts):
        if c < 1:
            raise ValueError(f"{name}[{i}] must be >= 1; got {c}")
    return counts


def _check_distribution(name: str, x, n: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},); got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x) | (x < 0))
    if bad.size:
        s = int(bad[0])
        raise ValueError(f"{name}[{s}] = {float(x[s])!r} is not a probability (negative or NaN)")
    total = float(x.sum())
    if abs(total - 1.0) > ROW_SUM_TOL:
        raise ValueError(f"{name} must sum to 1 (within {ROW_SUM_TOL:g}); it sums to {total!r}")
    return x


@dataclass(frozen=True, eq=False, repr=False)
class JointMDP:
    r"""A cooperative joint MDP whose agents act on local observations (SPEC §1).

    Build it with :meth:`from_dense` or :meth:`from_sparse`; the constructors check every
    array and raise :class:`ValueError` naming the offending index and value.

    Attributes
    ----------
    n_states : int
        Number of joint states :math:`N`.
    n_actions : tuple of int
        :math:`(A_0, \dots, A_{n-1})`.
    n_obs : tuple of int
        :math:`(O_0, \dots, O_{n-1})`.
    obs : tuple of ndarray
        ``obs[i]`` has shape ``(N,)``, entries in ``0..O_i-1``: :math:`\phi_i(s)`.
    indptr : ndarray, shape (N*J + 1,)
        CSR row pointers; row ``s * J + j`` lists the successors of ``(s, j)``.
    indices : ndarray, shape (nnz,)
        Successor states.
    probs : ndarray, shape (nnz,)
        Transition probabilities :math:`P(s' \mid s, j) > 0`.
    rewards : ndarray, shape (N, J)
        Team reward :math:`r(s, j)`.
    mu : ndarray, shape (N,)
        Initial distribution.
    gamma : float
        Discount factor in ``[0, 1)``.
    state_names, agent_names, action_names, obs_names : optional
        Labels kept for reports and plots (``action_names[i][a]``, ``obs_names[i][o]``).
    """

    n_actions: tuple[int, ...]
    n_obs: tuple[int, ...]
    obs: tuple[np.ndarray, ...]
    indptr: np.ndarray
    indices: np.ndarray
    probs: np.ndarray
    rewards: np.ndarray
    mu: np.ndarray
    gamma: float
    state_names: tuple[str, ...] | None = None
    agent_names: tuple[str, ...] | None = None
    action_names: tuple[tuple[str, ...], ...] | None = None
    obs_names: tuple[tuple[str, ...], ...] | None = None
    _cache: dict = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ sizes
    @property
    def n_states(self) -> int:
        """Number of joint states :math:`N`."""
        return int(self.rewards.shape[0])

    @property
    def n_agents(self) -> int:
        """Number of agents :math:`n`."""
        return len(self.n_actions)

    @property
    def n_joint_actions(self) -> int:
        r"""Number of joint actions :math:`J = \prod_i A_i`."""
        return int(self.rewards.shape[1])

    @property
    def action_strides(self) -> np.ndarray:
        r"""Mixed-radix strides: ``j = sum_i a_i * stride[i]``, agent 0 most significant."""
        strides = np.ones(self.n_agents, dtype=np.int64)
        for i in range(self.n_agents - 2, -1, -1):
            strides[i] = strides[i + 1] * self.n_actions[i + 1]
        return strides

    @property
    def obs_matrix(self) -> np.ndarray:
        """All observation maps stacked, shape ``(n, N)``."""
        if "obs_matrix" not in self._cache:
            self._cache["obs_matrix"] = _readonly(np.stack(self.obs).astype(np.int64))
        return self._cache["obs_matrix"]

    def joint_index(self, actions: Sequence[int]) -> int:
        """Joint action index of the per-agent actions ``(a_0, ..., a_{n-1})``."""
        if len(actions) != self.n_agents:
            raise ValueError(
                f"actions must give one action per agent ({self.n_agents}); got {list(actions)}"
            )
        for i, a in enumerate(actions):
            if not 0 <= int(a) < self.n_actions[i]:
                raise ValueError(
                    f"actions[{i}] = {a} is out of range for agent {i} "
                    f"(0..{self.n_actions[i] - 1})"
                )
        return int(np.ravel_multi_index(tuple(int(a) for a in actions), self.n_actions))

    def joint_actions(self) -> np.ndarray:
        """Table of per-agent actions for every joint action, shape ``(J, n)``."""
        return np.stack(np.unravel_index(np.arange(self.n_joint_actions), self.n_actions), axis=1)

    def transition_matrix(self):
        """Sparse matrix of shape ``(N*J, N)`` with row ``s*J + j`` equal to ``P(. | s, j)``."""
        from scipy import sparse

        if "P_csr" not in self._cache:
            self._cache["P_csr"] = sparse.csr_matrix(
                (self.probs, self.indices, self.indptr),
                shape=(self.n_states * self.n_joint_actions, self.n_states),
            )
        return self._cache["P_csr"]

    def to_dense(self) -> np.ndarray:
        """Dense transition array ``P`` of shape ``(N, J, N)``."""
        return self.transition_matrix().toarray().reshape(
            self.n_states, self.n_joint_actions, self.n_states
        )

    def lumped(self) -> Lumping:
        r"""The coarsest exact lumping (bisimulation quotient) of this model, cached.

        States :math:`s \sim s'` are lumped when no restricted policy can tell them apart:
        every agent observes the same, :math:`\phi_i(s) = \phi_i(s')`; the rewards agree,
        :math:`r(s, j) = r(s', j)`; and for every joint action the probability of moving
        into each block agrees, :math:`P(B \mid s, j) = P(B \mid s', j)`. This is the
        largest such partition (refined from the (observations, rewards) split until the
        block transition rows are stable). Because a policy sees states only through
        :math:`\phi`, the window paths from lumped states have the same distribution of
        observations, rewards and end blocks, so :math:`V_k` is constant on blocks and
        :math:`J_k(\theta)` is the same function of :math:`\theta` on the quotient: the
        value and every partial derivative are exactly those of the full model.

        The comparison is bitwise: rewards as stored, block probabilities summed in sorted
        order (the same multiset of probabilities always gives the same sum). Two states
        whose block probabilities differ only by rounding are kept apart, which costs speed,
        never accuracy. Models too large to compare cheaply (more than ``LUMP_MAX_ENTRIES``
        signature entries) are returned unlumped.

        Returns
        -------
        Lumping
            ``quotient`` (a :class:`JointMDP` on the blocks, block ``b`` represented by its
            first state; ``mu`` summed per block) and ``block`` (block of every state,
            shape ``(N,)``, blocks numbered in order of their first state).
        """
        if "lumping" not in self._cache:
            self._cache["lumping"] = _lump(self)
        return self._cache["lumping"]

    def __repr__(self) -> str:
        return (
            f"JointMDP(n_states={self.n_states}, n_agents={self.n_agents}, "
            f"n_actions={self.n_actions}, n_obs={self.n_obs}, "
            f"transitions={self.probs.size}, gamma={self.gamma})"
        )

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_dense(
        cls,
        P,
        R,
        obs,
        n_actions: Sequence[int],
        mu,
        gamma: float,
        *,
        n_obs: Sequence[int] | None = None,
        **names,
    ) -> JointMDP:
        r"""Build from a dense transition array.

        Parameters
        ----------
        P : array_like, shape (N, J, N)
            ``P[s, j, s'] = P(s' | s, j)``; every row ``P[s, j, :]`` sums to 1.
        R : array_like, shape (N, J)
            Team reward ``r(s, j)``.
        obs : sequence of array_like, each shape (N,)
            ``obs[i][s]`` is agent ``i``'s observation :math:`\phi_i(s)`.
        n_actions : sequence of int
            Actions per agent; ``J`` must equal their product.
        mu : array_like, shape (N,)
            Initial distribution.
        gamma : float
            Discount in ``[0, 1)``.
        n_obs : sequence of int, optional
            Observations per agent (default: ``max(obs[i]) + 1``).
        **names
            Optional ``state_names``, ``agent_names``, ``action_names``, ``obs_names``.
        """
        P = np.asarray(P, dtype=float)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (N, J, N); got shape {P.shape}")
        N, J, _ = P.shape
        bad = np.argwhere(~np.isfinite(P) | (P < 0))
        if bad.size:
            s, j, t = (int(x) for x in bad[0])
            raise ValueError(f"P[{s}, {j}, {t}] = {float(P[s, j, t])!r} is not a probability")
        flat = P.reshape(N * J, N)
        nz = flat != 0
        indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
        rows, cols = np.nonzero(nz)
        return cls.from_sparse(
            indptr, cols, flat[rows, cols], R, obs, n_actions, mu, gamma, n_obs=n_obs, **names
        )

    @classmethod
    def from_sparse(
        cls,
        indptr,
        indices,
        probs,
        R,
        obs,
        n_actions: Sequence[int],
        mu,
        gamma: float,
        *,
        n_obs: Sequence[int] | None = None,
        **names,
    ) -> JointMDP:
        r"""Build from CSR-like transition arrays.

        Row ``s * J + j`` (``J = prod(n_actions)``) holds the successors of state ``s``
        under joint action ``j``: ``indices[indptr[r]:indptr[r+1]]`` with probabilities
        ``probs[indptr[r]:indptr[r+1]]``. Zero probabilities are dropped and duplicate
        successors within a row are merged.

        Parameters are as in :meth:`from_dense` except the three transition arrays.
        """
        n_actions = _check_counts("n_actions", n_actions)
        gamma = _check_gamma(gamma)
        R = np.asarray(R, dtype=float)
        if R.ndim != 2:
            raise ValueError(f"R must have shape (N, J); got shape {R.shape}")
        N, J = R.shape
        if N < 1:
            raise ValueError("R must describe at least one state; got N=0")
        if J != int(np.prod(n_actions)):
            raise ValueError(
                f"R has {J} joint actions per state but n_actions={n_actions} "
                f"gives {int(np.prod(n_actions))}"
            )
        bad = np.argwhere(~np.isfinite(R))
        if bad.size:
            s, j = (int(x) for x in bad[0])
            raise ValueError(f"R[{s}, {j}] = {float(R[s, j])!r} is not a finite reward")

        indptr = np.asarray(indptr)
        indices = np.asarray(indices)
        probs = np.asarray(probs, dtype=float)
        if indptr.shape != (N * J + 1,):
            raise ValueError(f"indptr must have shape ({N * J + 1},) = (N*J + 1,); got {indptr.shape}")
        if indices.ndim != 1 or probs.shape != indices.shape:
            raise ValueError(
                f"indices and probs must be 1-d of equal length; got {indices.shape} and {probs.shape}"
            )
        if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices)")
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be integers; got dtype {indices.dtype}")
        row_of = np.repeat(np.arange(N * J), np.diff(indptr))
        bad = np.flatnonzero((indices < 0) | (indices >= N))
        if bad.size:
            r = int(row_of[bad[0]])
            raise ValueError(
                f"successor index {int(indices[bad[0]])} of (s={r // J}, j={r % J}) "
                f"is out of range 0..{N - 1}"
            )
        bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
        if bad.size:
            r, t = int(row_of[bad[0]]), int(indices[bad[0]])
            raise ValueError(
                f"P[{r // J}, {r % J}, {t}] = {float(probs[bad[0]])!r} is not a probability"
            )
        sums = np.zeros(N * J)
        np.add.at(sums, row_of, probs)
        bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
        if bad.size:
            r = int(bad[0])
            raise ValueError(
                f"transition row P[{r // J}, {r % J}, :] sums to {float(sums[r])!r}; "
                f"every row must sum to 1 (within {ROW_SUM_TOL:g})"
            )
        # canonical CSR: sorted, duplicates merged, zeros dropped
        from scipy import sparse

        P = sparse.csr_matrix((probs, indices.astype(np.int64), indptr.astype(np.int64)), shape=(N * J, N))
        P.sum_duplicates()
        P.eliminate_zeros()
        P.sort_indices()

        if len(obs) != len(n_actions):
            raise ValueError(
                f"obs must hold one observation map per agent ({len(n_actions)}); got {len(obs)}"
            )
        obs_arrays = []
        for i, o in enumerate(obs):
            o = np.asarray(o)
            if o.shape != (N,):
                raise ValueError(f"obs[{i}] must have shape ({N},); got shape {o.shape}")
            if o.size and not np.issubdtype(o.dtype, np.integer):
                if not np.all(np.equal(np.mod(o, 1), 0)):
                    raise ValueError(f"obs[{i}] must hold integer observation ids")
            obs_arrays.append(o.astype(np.int64))
        if n_obs is None:
            n_obs = tuple(int(o.max()) + 1 if o.size else 1 for o in obs_arrays)
        n_obs = _check_counts("n_obs", n_obs)
        if len(n_obs) != len(n_actions):
            raise ValueError(f"n_obs must give one count per agent ({len(n_actions)}); got {n_obs}")
        for i, o in enumerate(obs_arrays):
            bad = np.flatnonzero((o < 0) | (o >= n_obs[i]))
            if bad.size:
                s = int(bad[0])
                raise ValueError(
                    f"obs[{i}][{s}] = {int(o[s])} is out of range for agent {i} "
                    f"(0..{n_obs[i] - 1})"
                )
        mu = _check_distribution("mu", mu, N)
        names = _check_names(names, N, n_actions, n_obs)
        return cls(
            n_actions=n_actions,
            n_obs=n_obs,
            obs=tuple(_readonly(o) for o in obs_arrays),
            indptr=_readonly(P.indptr.astype(np.int64)),
            indices=_readonly(P.indices.astype(np.int64)),
            probs=_readonly(P.data.astype(np.float64)),
            rewards=_readonly(R.copy()),
            mu=_readonly(mu.copy()),
            gamma=gamma,
            **names,
        )


def _check_names(names: dict, N: int, n_actions, n_obs) -> dict:
    allowed = {"state_names", "agent_names", "action_names", "obs_names"}
    unknown = set(names) - allowed
    if unknown:
        raise ValueError(f"unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = {}
    if names.get("state_names") is not None:
        sn = tuple(str(x) for x in names["state_names"])
        if len(sn) != N:
            raise ValueError(f"state_names must have {N} entries; got {len(sn)}")
        out["state_names"] = sn
    if names.get("agent_names") is not None:
        an = tuple(str(x) for x in names["agent_names"])
        if len(an) != len(n_actions):
            raise ValueError(f"agent_names must have {len(n_actions)} entries; got {len(an)}")
        out["agent_names"] = an
    for key, counts in (("action_names", n_actions), ("obs_names", n_obs)):
        if names.get(key) is not None:
            lists = tuple(tuple(str(x) for x in lst) for lst in names[key])
            if len(lists) != len(counts) or any(len(names_i) != c for names_i, c in zip(lists, counts, strict=False)):
                raise ValueError(f"{key} must give {list(counts)} names per agent")
            out[key] = lists
    return out


class Lumping(NamedTuple):
    """Result of :meth:`JointMDP.lumped`."""

    quotient: JointMDP
    block: np.ndarray

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


def _block_rows(mdp: JointMDP, label: np.ndarray):
    """Aggregate every transition row onto blocks: (row, block, probability) triples,
    sorted by row then block, probabilities summed in sorted order."""
    row_of = np.repeat(np.arange(mdp.indptr.size - 1), np.diff(mdp.indptr))
    b = label[mdp.indices]
    order = np.lexsort((mdp.probs, b, row_of))
    r_s, b_s, p_s = row_of[order], b[order], mdp.probs[order]
    if r_s.size == 0:
        return r_s, b_s, p_s
    start = np.flatnonzero(np.r_[True, (r_s[1:] != r_s[:-1]) | (b_s[1:] != b_s[:-1])])
    sums = np.add.reduceat(p_s, start)
    # reduceat adds left to right; the sorted order makes equal multisets give equal sums
    return r_s[start], b_s[start], sums


def _lump(mdp: JointMDP) -> Lumping:
    N, J = mdp.n_states, mdp.n_joint_actions
    first = np.concatenate([mdp.obs_matrix.T, mdp.rewards.view(np.int64)], axis=1)
    label, n_blocks = _relabel(_row_ids(first))
    while n_blocks < N:
        r, b, p = _block_rows(mdp, label)
        state = r // J
        count = np.bincount(state, minlength=N)
        width = int(count.max()) if count.size else 0
        if N * (1 + 3 * width) > LUMP_MAX_ENTRIES:
            n_blocks = N
            break
        sig = np.full((N, 1 + 3 * width), -1, np.int64)
        sig[:, 0] = label
        pos = np.arange(r.size) - np.repeat(np.cumsum(count) - count, count)
        sig[state, 1 + 3 * pos] = r % J
        sig[state, 2 + 3 * pos] = b
        sig[state, 3 + 3 * pos] = p.view(np.int64)
        new_label, new_n = _relabel(_row_ids(sig))
        if new_n == n_blocks:
            break
        label, n_blocks = new_label, new_n
    if n_blocks == N:
        return Lumping(mdp, np.arange(N, dtype=np.int64))
    rep = np.zeros(n_blocks, np.int64)
    rep[label[::-1]] = np.arange(N - 1, -1, -1)  # first state of every block
    r, b, p = _block_rows(mdp, label)
    keep = np.isin(r // J, rep)
    r, b, p = r[keep], b[keep], p[keep]
    q_row = label[r // J] * J + r % J
    order = np.lexsort((b, q_row))
    q_row, b, p = q_row[order], b[order], p[order]
    indptr = np.zeros(n_blocks * J + 1, np.int64)
    np.cumsum(np.bincount(q_row, minlength=n_blocks * J), out=indptr[1:])
    quotient = JointMDP(
        n_actions=mdp.n_actions,
        n_obs=mdp.n_obs,
        obs=tuple(_readonly(o[rep]) for o in mdp.obs),
        indptr=_readonly(indptr),
        indices=_readonly(b.astype(np.int64)),
        probs=_readonly(p.astype(np.float64)),
        rewards=_readonly(mdp.rewards[rep]),
        mu=_readonly(np.bincount(label, weights=mdp.mu, minlength=n_blocks)),
        gamma=mdp.gamma,
        agent_names=mdp.agent_names,
        action_names=mdp.action_names,
        obs_names=mdp.obs_names,
    )
    return Lumping(quotient, _readonly(label))
