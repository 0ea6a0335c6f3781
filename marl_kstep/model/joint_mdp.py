r"""The cooperative joint MDP with local-observation agents (SPEC §1).

A :class:`JointMDP` holds

* joint states :math:`s \in \{0, \dots, N-1\}` and agents :math:`i = 0, \dots, n-1`,
  agent :math:`i` having :math:`A_i` actions and :math:`O_i` observations;
* the joint action index :math:`j`, the mixed-radix number of :math:`(a_0, \dots, a_{n-1})`
  with **agent 0 most significant**,
  :math:`j = ((a_0 A_1 + a_1) A_2 + a_2) \dots`, so :math:`J = \prod_i A_i`;
* sparse transitions :math:`P(s' \mid s, j)`: row ``r = s * J + j`` of a canonical CSR
  structure (``indptr`` of length :math:`NJ + 1`, ``indices`` sorted and distinct within a
  row, ``probs`` > 0);
* the team reward :math:`r(s, j)` (``rewards``, shape ``(N, J)``), the initial
  distribution :math:`\mu` and the discount :math:`0 \le \gamma < 1`;
* each agent's deterministic observation map :math:`\phi_i(s)` (``obs[i]``, shape ``(N,)``).

The object is immutable and holds nothing but these: every array is a read-only copy made
and checked on construction (also by :func:`dataclasses.replace`, which goes through the
same checks), caller arrays are never written, and derived data (lumping, enumeration
plans) belongs to the objects that derive it, so a copy with other fields can never see
stale results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numba
import numpy as np

from ..settings import current
from ..validation import (
    check_counts,
    check_distribution,
    check_gamma,
    check_model_bytes,
    check_sequence,
    check_table_bytes,
    real_array,
)

__all__ = ["JointMDP"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _uncopied(name: str, x) -> np.ndarray:
    """``x`` as an array of real numbers without copying it when it already is one (a broadcast
    view stays a view), so its size can be checked before a copy is made."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be an array of real numbers; {exc}") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got an array of dtype {a.dtype}")
    return a


def _reward_table(R, n_actions: tuple[int, ...]) -> np.ndarray:
    r"""``R`` as a new float64 array of shape ``(N, J)``, :math:`J = \prod_i A_i`: its shape and the
    memory of a model of that size (rewards and row pointers, ``16 N J`` bytes, with a copy while
    building) are checked before anything is copied."""
    R = _uncopied("R", R)
    if R.ndim != 2 or R.shape[0] < 1:
        raise ValueError(f"R must have shape (N, J) with N >= 1; got shape {R.shape}")
    N, J = R.shape
    J_expected = math.prod(n_actions)
    if J != J_expected:
        raise ValueError(f"R has {J} joint actions per state but n_actions={n_actions} gives {J_expected}")
    check_model_bytes(24 * N * J, f"a JointMDP with {N:,} states and {J:,} joint actions (its rewards and row "
                      "pointers)", "use a smaller model")
    return np.array(R, dtype=np.float64)


def _row_of(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _canonical_csr(indptr, indices, probs, n_rows: int):
    """Sorted, duplicate-free, zero-free CSR arrays (new arrays; the inputs are not touched).

    Duplicates are summed in sorted order of their probabilities, so equal multisets give
    equal sums."""
    row = _row_of(indptr)
    order = np.lexsort((probs, indices, row))
    row, col, p = row[order], indices[order], probs[order]
    if p.size:
        start = np.flatnonzero(np.r_[True, (row[1:] != row[:-1]) | (col[1:] != col[:-1])])
        row, col, p = row[start], col[start], np.add.reduceat(p, start)
        keep = p != 0
        row, col, p = row[keep], col[keep], p[keep]
    new_ptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=n_rows), out=new_ptr[1:])
    return new_ptr, col.astype(np.int64), p.astype(np.float64)


@dataclass(frozen=True, eq=False, repr=False)
class JointMDP:
    r"""A cooperative joint MDP whose agents act on local observations (SPEC §1).

    Build it with :meth:`from_dense` or :meth:`from_sparse`; every construction (the
    dataclass constructor and :func:`dataclasses.replace` included) copies and checks the
    arrays and raises :class:`ValueError` naming the offending index and value.

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
        Successor states, increasing within each row.
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

    def __post_init__(self):
        tol = current().row_sum_tol
        put = object.__setattr__
        n_actions = check_counts("n_actions", self.n_actions)
        n_obs = check_counts("n_obs", self.n_obs)
        if len(n_obs) != len(n_actions):
            raise ValueError(f"n_obs must give one count per agent ({len(n_actions)}); got {n_obs}")
        check_table_bytes(n_obs, n_actions, "this JointMDP")
        put(self, "n_actions", n_actions)
        put(self, "n_obs", n_obs)
        put(self, "gamma", check_gamma(self.gamma))
        R = _reward_table(self.rewards, n_actions)
        N, J = R.shape
        bad = np.argwhere(~np.isfinite(R))
        if bad.size:
            s, j = (int(x) for x in bad[0])
            raise ValueError(f"R[{s}, {j}] = {float(R[s, j])!r} is not a finite reward")
        put(self, "rewards", _readonly(R))
        indptr = np.array(self.indptr, dtype=np.int64)
        indices = np.array(self.indices, dtype=np.int64)
        probs = real_array("probs", self.probs)
        if indptr.shape != (N * J + 1,):
            raise ValueError(f"indptr must have shape ({N * J + 1},) = (N*J + 1,); got {indptr.shape}")
        if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0) or probs.shape != indices.shape:
            raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices) == len(probs)")
        first = _csr_faults(indptr, indices, probs, N, tol)
        if first[0] >= 0:
            e = int(first[0])
            r = int(np.searchsorted(indptr, e, side="right")) - 1
            raise ValueError(f"successor index {int(indices[e])} of (s={r // J}, j={r % J}) "
                             f"is out of range 0..{N - 1}")
        if first[1] >= 0:
            e = int(first[1])
            r = int(np.searchsorted(indptr, e, side="right")) - 1
            raise ValueError(f"P[{r // J}, {r % J}, {int(indices[e])}] = {float(probs[e])!r} is not a positive "
                             "probability (JointMDP stores positive entries only; use from_sparse or from_dense)")
        if first[2] >= 0:
            r = int(first[2])
            raise ValueError(f"successors of (s={r // J}, j={r % J}) must be increasing and distinct "
                             "(use from_sparse, which sorts and merges them)")
        if first[3] >= 0:
            r = int(first[3])
            total = float(np.sum(probs[indptr[r]:indptr[r + 1]]))
            raise ValueError(f"transition row P[{r // J}, {r % J}, :] sums to {total!r}; "
                             f"every row must sum to 1 (within {tol:g})")
        put(self, "indptr", _readonly(indptr))
        put(self, "indices", _readonly(indices))
        put(self, "probs", _readonly(probs))
        obs_arrays = []
        for i, o in enumerate(_obs_arrays(self.obs, N, len(n_actions))):
            bad = np.flatnonzero((o < 0) | (o >= n_obs[i]))
            if bad.size:
                s = int(bad[0])
                raise ValueError(f"obs[{i}][{s}] = {int(o[s])} is out of range for agent {i} (0..{n_obs[i] - 1})")
            obs_arrays.append(_readonly(o))
        put(self, "obs", tuple(obs_arrays))
        put(self, "mu", _readonly(check_distribution("mu", self.mu, N, tol)))
        for key, val in _check_names(dict(state_names=self.state_names, agent_names=self.agent_names,
                                          action_names=self.action_names, obs_names=self.obs_names),
                                     N, n_actions, n_obs).items():
            put(self, key, val)

    def __reduce__(self):
        # rebuild through the constructor: arrays come back read-only and checked
        return (_rebuild, (type(self), {f.name: getattr(self, f.name) for f in fields(self)}))

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
        """All observation maps stacked, shape ``(n, N)`` (a new array)."""
        return np.stack(self.obs).astype(np.int64)

    def joint_index(self, actions: Sequence[int]) -> int:
        """Joint action index of the per-agent actions ``(a_0, ..., a_{n-1})``."""
        if len(actions) != self.n_agents:
            raise ValueError(f"actions must give one action per agent ({self.n_agents}); got {list(actions)}")
        for i, a in enumerate(actions):
            if not 0 <= int(a) < self.n_actions[i]:
                raise ValueError(f"actions[{i}] = {a} is out of range for agent {i} (0..{self.n_actions[i] - 1})")
        return int(np.ravel_multi_index(tuple(int(a) for a in actions), self.n_actions))

    def joint_actions(self) -> np.ndarray:
        """Table of per-agent actions for every joint action, shape ``(J, n)``."""
        return np.stack(np.unravel_index(np.arange(self.n_joint_actions), self.n_actions), axis=1)

    def transition_matrix(self):
        """Sparse matrix of shape ``(N*J, N)`` with row ``s*J + j`` equal to ``P(. | s, j)``
        (a new matrix over copies of the model's arrays)."""
        from scipy import sparse

        return sparse.csr_matrix((self.probs.copy(), self.indices.copy(), self.indptr.copy()),
                                 shape=(self.n_states * self.n_joint_actions, self.n_states))

    def to_dense(self) -> np.ndarray:
        """Dense transition array ``P`` of shape ``(N, J, N)``."""
        return self.transition_matrix().toarray().reshape(self.n_states, self.n_joint_actions, self.n_states)

    def __repr__(self) -> str:
        return (
            f"JointMDP(n_states={self.n_states}, n_agents={self.n_agents}, "
            f"n_actions={self.n_actions}, n_obs={self.n_obs}, "
            f"transitions={self.probs.size}, gamma={self.gamma})"
        )

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_dense(cls, P, R, obs, n_actions: Sequence[int], mu, gamma: float, *,
                   n_obs: Sequence[int] | None = None, **names) -> JointMDP:
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
        P = _uncopied("P", P)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (N, J, N); got shape {P.shape}")
        N, J, _ = P.shape
        R = _uncopied("R", R)
        R_shape = R.shape
        if R_shape != (N, J):
            raise ValueError(
                f"R must have shape (N, J) = ({N}, {J}) to match P of shape {P.shape}; got shape {R_shape}"
            )
        # the dense array, its mask and the sparse copies: about 4 copies of P
        check_model_bytes(32 * P.size, f"a dense P of shape {P.shape}", "build large models with from_sparse")
        P = P.astype(np.float64)
        bad = np.argwhere(~np.isfinite(P) | (P < 0))
        if bad.size:
            s, j, t = (int(x) for x in bad[0])
            raise ValueError(f"P[{s}, {j}, {t}] = {float(P[s, j, t])!r} is not a probability")
        flat = P.reshape(N * J, N)
        nz = flat != 0
        indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
        rows, cols = np.nonzero(nz)
        return cls.from_sparse(indptr, cols, flat[rows, cols], R, obs, n_actions, mu, gamma, n_obs=n_obs, **names)

    @classmethod
    def from_sparse(cls, indptr, indices, probs, R, obs, n_actions: Sequence[int], mu, gamma: float, *,
                    n_obs: Sequence[int] | None = None, **names) -> JointMDP:
        r"""Build from CSR-like transition arrays (never written to; copies are kept).

        Row ``s * J + j`` (``J = prod(n_actions)``) holds the successors of state ``s``
        under joint action ``j``: ``indices[indptr[r]:indptr[r+1]]`` with probabilities
        ``probs[indptr[r]:indptr[r+1]]``. Rows may be unsorted; zero probabilities are
        dropped and duplicate successors within a row are merged (summed in sorted order).

        Parameters are as in :meth:`from_dense` except the three transition arrays.
        """
        n_actions = check_counts("n_actions", n_actions)
        R = _reward_table(R, n_actions)
        N, J = R.shape
        indptr = real_array("indptr", indptr, dtype=None)
        indices = real_array("indices", indices, dtype=None)
        probs = real_array("probs", probs)
        for name, arr in (("indptr", indptr), ("indices", indices)):
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name} must hold integers; got dtype {arr.dtype}")
        if indptr.shape != (N * J + 1,):
            raise ValueError(f"indptr must have shape ({N * J + 1},) = (N*J + 1,) for R of shape {R.shape}; "
                             f"got {indptr.shape}")
        if indices.ndim != 1 or probs.shape != indices.shape:
            raise ValueError(f"indices and probs must be 1-d of equal length; got {indices.shape} and {probs.shape}")
        indptr = indptr.astype(np.int64)
        if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices)")
        indices = indices.astype(np.int64)
        probs = probs.astype(np.float64)
        # negative or NaN entries are named here, before zeros are dropped; successor ranges and
        # row sums are checked by the constructor on the canonical arrays
        bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
        if bad.size:
            r, t = int(_row_of(indptr)[bad[0]]), int(indices[bad[0]])
            raise ValueError(f"P[{r // J}, {r % J}, {t}] = {float(probs[bad[0]])!r} is not a probability")
        indptr, indices, probs = _canonical_csr(indptr, indices, probs, N * J)
        obs = _obs_arrays(obs, N, len(n_actions))
        if n_obs is None:
            n_obs = tuple(int(o.max()) + 1 if o.size and o.max() >= 0 else 1 for o in obs)
        return cls(n_actions=n_actions, n_obs=n_obs, obs=tuple(obs), indptr=indptr, indices=indices, probs=probs,
                   rewards=R, mu=mu, gamma=gamma, **_name_fields(names))


@numba.njit(cache=True)
def _csr_faults(indptr, indices, probs, N, tol):
    """One pass over the CSR rows: the first entry with a successor outside ``0..N-1``, the
    first entry that is not a positive finite probability, the first row whose successors are
    not increasing, the first row not summing to 1 within ``tol`` (-1 where there is none).
    Row sums are taken in stored order."""
    first = np.full(4, -1, np.int64)
    for r in range(indptr.size - 1):
        total = 0.0
        for e in range(indptr[r], indptr[r + 1]):
            t = indices[e]
            p = probs[e]
            if first[0] < 0 and (t < 0 or t >= N):
                first[0] = e
            if first[1] < 0 and not (p > 0.0 and p < np.inf):
                first[1] = e
            if first[2] < 0 and e > indptr[r] and t <= indices[e - 1]:
                first[2] = r
            total += p
        if first[3] < 0 and not abs(total - 1.0) <= tol:
            first[3] = r
    return first


def _obs_arrays(obs, N: int, n_agents: int) -> list[np.ndarray]:
    """The observation maps as int64 arrays of shape ``(N,)`` (new arrays), or a ValueError."""
    obs = check_sequence("obs", obs)
    if len(obs) != n_agents:
        raise ValueError(f"obs must hold one observation map per agent ({n_agents}); got {len(obs)} "
                         f"(the agents are counted by n_actions)")
    out = []
    for i, o in enumerate(obs):
        o = real_array(f"obs[{i}]", o)
        if o.shape != (N,):
            raise ValueError(f"obs[{i}] must have shape ({N},) (N states, from R); got shape {o.shape}")
        if not np.all(np.isfinite(o)) or not np.all(np.equal(np.mod(o, 1), 0)) or np.any(np.abs(o) > 2**62):
            raise ValueError(f"obs[{i}] must hold integer observation ids")
        out.append(o.astype(np.int64))
    return out


def _rebuild(cls, values: dict) -> JointMDP:
    return cls(**values)


def _name_fields(names: dict) -> dict:
    allowed = {"state_names", "agent_names", "action_names", "obs_names"}
    unknown = set(names) - allowed
    if unknown:
        raise ValueError(f"unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return names


def _check_names(names: dict, N: int, n_actions, n_obs) -> dict:
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
            if len(lists) != len(counts) or any(len(n_i) != c for n_i, c in zip(lists, counts, strict=False)):
                raise ValueError(f"{key} must give {list(counts)} names per agent")
            out[key] = lists
    return out
