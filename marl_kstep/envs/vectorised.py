r"""The array-built scenario protocol: whole batches of states in, arrays out.

The per-state protocol (:class:`~marl_kstep.envs.base.ScenarioModel`) costs a few
microseconds of Python per (state, joint action) pair, which stops exact compilation near
:math:`10^5` joint states. A scenario that also implements :class:`VectorisedModel`
describes the same dynamics on integer *state codes* :math:`c \in \{0, \dots, C-1\}`
(``code_space() == C``) and whole batches at once:

* ``initial_codes()`` -> ``(codes, probs)``: the start states, in the order of
  ``initial_distribution()``;
* ``step_arrays(codes, joint)`` -> ``(succ, probs, rewards)`` for a batch of ``B``
  (state code, joint action index) pairs: ``succ`` and ``probs`` of shape ``(B, K)`` (``K``
  outcomes per pair, in the order ``transitions()`` lists them; zero probabilities are
  ignored and repeated successors are summed in outcome order) and ``rewards`` of shape
  ``(B,)``;
* ``observe_arrays(codes)`` -> shape ``(n, B)``: :math:`\phi_i` of every code;
* ``encode(state)`` / ``decode(code)``: between the two protocols' states.

:func:`compile_arrays` enumerates the reachable codes breadth first in batches, in exactly
the order :func:`~marl_kstep.envs.base.compile_model` finds them one state at a time
(queue order; within a state, joint actions in index order and outcomes in list order), so
the two builds give identical :class:`~marl_kstep.model.JointMDP` objects; there is no
Python work per state. Memory is estimated before anything is allocated
(:func:`array_build_bytes`) and a build that would pass ``Settings.max_model_bytes`` is
refused with the estimate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..model import JointMDP
from ..settings import current, model_bytes_limit

__all__ = ["VectorisedModel", "compile_arrays", "array_build_bytes", "DecodedStates", "check_model_bytes"]

#: (state, joint action) pairs handled per batch.
_BATCH_PAIRS = 1 << 20
#: Above this many states the compiled model carries no state names (each is a Python string).
STATE_NAMES_MAX = 10_000


class VectorisedModel(ABC):
    """Batched dynamics over integer state codes (see the module docstring)."""

    @abstractmethod
    def code_space(self) -> int:
        """Number of state codes ``C``: every state has a code in ``0..C-1``."""

    @abstractmethod
    def outcomes(self) -> int:
        """``K``: outcomes per (state, joint action) pair in :meth:`step_arrays`."""

    @abstractmethod
    def encode(self, state) -> int:
        """Code of a state of the per-state protocol."""

    @abstractmethod
    def decode(self, code: int):
        """State (of the per-state protocol) with code ``code``."""

    @abstractmethod
    def initial_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, probs)`` of the start states, in the order of ``initial_distribution()``."""

    @abstractmethod
    def step_arrays(self, codes: np.ndarray, joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(succ, probs, rewards)`` of shapes ``(B, K)``, ``(B, K)``, ``(B,)`` for the pairs
        ``(codes[b], joint[b])`` (joint action index, agent 0 most significant)."""

    @abstractmethod
    def observe_arrays(self, codes: np.ndarray) -> np.ndarray:
        """Observation of every agent for every code, shape ``(n_agents, B)``, int64."""


class DecodedStates(Sequence):
    """The states of a compiled model, decoded on access: ``states[s]`` is the model state
    with joint index ``s`` (``codes[s]`` its code)."""

    def __init__(self, model: VectorisedModel, codes: np.ndarray):
        self.model = model
        self.codes = codes

    def __len__(self) -> int:
        return int(self.codes.size)

    def __getitem__(self, s):
        if isinstance(s, slice):
            return [self.model.decode(int(c)) for c in self.codes[s]]
        return self.model.decode(int(self.codes[s]))


def array_build_bytes(n_states: int, n_joint: int, outcomes: int, code_space: int, n_agents: int) -> int:
    """Estimated peak bytes of :func:`compile_arrays` for at most ``n_states`` reachable states.

    The model keeps ``8 N J`` bytes of row pointers, ``8 N J`` of rewards and 16 bytes per
    stored transition (at most ``N J K``); while it is built and checked, up to two more
    copies of each exist (the batches' pieces, their concatenation, the checked copies the
    model keeps), plus 16 bytes per code (the code -> index map and the queue) and the batch
    work arrays. Measured: the 10^6-state number-matching build peaks at 0.76 of this."""
    rows = n_states * n_joint
    model = 16 * rows + 16 * rows * outcomes + 8 * n_agents * n_states + 8 * n_states
    batch = 64 * _BATCH_PAIRS * max(outcomes, 1) + 8 * n_agents * _BATCH_PAIRS
    return 3 * model + 16 * code_space + batch


def check_model_bytes(need: int, what: str, hint: str) -> None:
    """Refuse with a ``ValueError`` giving the estimate when ``need`` passes the memory limit."""
    limit = model_bytes_limit()
    if need > limit:
        source = ("Settings.max_model_bytes" if current().max_model_bytes
                  else "half of this machine's memory; Settings.max_model_bytes")
        raise ValueError(f"{what} would take about {need / 2**30:,.2f} GiB, more than the limit of "
                         f"{limit / 2**30:,.2f} GiB ({source}); {hint}, or raise the limit with "
                         f"mk.configure(max_model_bytes=...)")


def _first_appearance(codes: np.ndarray) -> np.ndarray:
    """The distinct values of ``codes`` in order of first appearance."""
    uniq, first = np.unique(codes, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


def _merge_rows(row: np.ndarray, succ: np.ndarray, prob: np.ndarray):
    """Sum repeated ``(row, succ)`` entries in entry order (``np.add.at`` is sequential, as a
    per-state model summing into a dict would be) and sort every row by successor."""
    if row.size < 2 or np.all(row[1:] != row[:-1]):  # one successor per row: nothing to merge or sort
        return row, succ, prob
    order = np.lexsort((succ, row))
    r, c = row[order], succ[order]
    start = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1])])
    if start.size == r.size:
        return r, c, prob[order]
    group = np.empty(r.size, np.int64)
    group[order] = np.cumsum(np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1])]) - 1
    acc = np.zeros(start.size)
    np.add.at(acc, group, prob)
    return r[start], c[start], acc


def compile_arrays(model, *, max_states: int | None = None, state_names: bool | None = None):
    """Enumerate the reachable joint states of a :class:`VectorisedModel` and build its JointMDP.

    Parameters
    ----------
    model : VectorisedModel (and ScenarioModel)
    max_states : int, optional
        Also refuse models estimated to have more joint states than this.
    state_names : bool, optional
        Keep ``str(state)`` names in the model (default: when there are at most
        ``STATE_NAMES_MAX`` states).

    Returns
    -------
    (JointMDP, DecodedStates)
        ``states[s]`` is the model state with joint index ``s``; ``states.codes`` the codes.
    """
    n = model.n_agents
    J = math.prod(model.n_actions)
    K = int(model.outcomes())
    space = int(model.code_space())
    est = min(int(model.estimate_states()), space)
    if max_states is not None and est > max_states:
        raise ValueError(f"this scenario has up to {est:,} joint states, more than max_states={max_states:,}; "
                         "make it smaller (fewer agents, smaller grid) or pass a larger max_states")
    check_model_bytes(array_build_bytes(est, J, K, space, n), f"compiling this scenario ({est:,} joint states, "
                      f"{J:,} joint actions)", "make it smaller (fewer agents, smaller grid)")
    codes0, p0 = model.initial_codes()
    codes0 = np.asarray(codes0, np.int64)
    p0 = np.asarray(p0, np.float64)
    index = np.full(space, -1, np.int64)
    queue = np.empty(est, np.int64)
    start = _first_appearance(codes0)
    n_known = start.size
    queue[:n_known] = start
    index[start] = np.arange(n_known)
    chunks_r, chunks_c, chunks_p, chunks_rew = [], [], [], []
    per_batch = max(1, _BATCH_PAIRS // J)
    joint_all = np.arange(J, dtype=np.int64)
    pos = 0
    while pos < n_known:
        hi = min(n_known, pos + per_batch)
        B = hi - pos
        codes = np.repeat(queue[pos:hi], J)
        succ, prob, rew = model.step_arrays(codes, np.tile(joint_all, B))
        succ, prob, rew = np.asarray(succ), np.asarray(prob, np.float64), np.asarray(rew, np.float64)
        for name, arr, shape in (("successors", succ, (B * J, K)), ("probabilities", prob, (B * J, K)),
                                 ("rewards", rew, (B * J,))):
            if arr.shape != shape:
                raise ValueError(f"{type(model).__name__}.step_arrays gave {name} of shape {arr.shape} for a batch of "
                                 f"{B * J} pairs; expected {shape} (outcomes() = {K})")
        if not np.issubdtype(succ.dtype, np.integer):
            raise ValueError(f"{type(model).__name__}.step_arrays gave successor codes of dtype {succ.dtype}; "
                             "expected integers")
        succ = succ.astype(np.int64, copy=False)
        chunks_rew.append(rew.reshape(B, J))
        bad = np.flatnonzero(~(prob >= 0) | ~np.isfinite(prob))
        if bad.size:
            r, o = divmod(int(bad[0]), K)
            raise ValueError(f"{type(model).__name__}.step_arrays gave probability {float(prob.flat[bad[0]])!r} "
                             f"for outcome {o} of (state {model.decode(int(queue[pos + r // J]))!r}, joint action "
                             f"{r % J}); probabilities must be finite and >= 0")
        keep = prob > 0
        row = np.repeat(np.arange(pos * J, hi * J, dtype=np.int64), keep.sum(axis=1))
        succ, prob = succ[keep], prob[keep]  # row-major: pairs in order, outcomes in list order
        bad = np.flatnonzero((succ < 0) | (succ >= space))
        if bad.size:
            r = int(row[bad[0]])
            raise ValueError(f"{type(model).__name__}.step_arrays gave successor code {int(succ[bad[0]])} for "
                             f"(state {model.decode(int(queue[r // J]))!r}, joint action {r % J}), outside "
                             f"0..{space - 1}")
        new = _first_appearance(succ[index[succ] < 0])
        if new.size:
            if n_known + new.size > est:
                raise ValueError(f"{type(model).__name__} reaches more than estimate_states()={est:,} states")
            queue[n_known:n_known + new.size] = new
            index[new] = np.arange(n_known, n_known + new.size)
            n_known += new.size
        r, c, p = _merge_rows(row, index[succ], prob)
        chunks_r.append(r)
        chunks_c.append(c)
        chunks_p.append(p)
        pos = hi
    N = n_known
    codes = queue[:N].copy()
    del queue
    row = np.concatenate(chunks_r)
    indptr = np.zeros(N * J + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=N * J), out=indptr[1:])
    del row, chunks_r
    indices = np.concatenate(chunks_c)
    del chunks_c
    probs = np.concatenate(chunks_p)
    del chunks_p
    rewards = np.concatenate(chunks_rew)
    del chunks_rew
    mu = np.zeros(N)
    np.add.at(mu, index[codes0], p0)
    del index
    obs = np.asarray(model.observe_arrays(codes), np.int64).reshape(n, N)
    keep_names = N <= STATE_NAMES_MAX if state_names is None else bool(state_names)
    names = [model.state_name(model.decode(int(c))) for c in codes] if keep_names else None
    mdp = JointMDP(n_actions=model.n_actions, n_obs=model.n_obs, obs=tuple(obs), indptr=indptr, indices=indices,
                   probs=probs, rewards=rewards, mu=mu, gamma=model.gamma, state_names=names,
                   action_names=model.action_names(), obs_names=model.obs_names())
    return mdp, DecodedStates(model, codes)
