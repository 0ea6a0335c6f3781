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

A user's model is code the project does not own, so every answer is checked before it is
used (:func:`check_initial`, :func:`check_observations`, :func:`check_step`; the sampled
estimator's batched path sees the model through :class:`CheckedModel`): integer codes in
``0..C-1``, probabilities finite, :math:`\ge 0` and summing to one within
``Settings.row_sum_tol`` per pair, finite real rewards, observation ids integers in
``0..O_i-1`` of shape ``(n, B)`` exactly (a transposed ``(B, n)`` array is refused, never
reshaped). A bad answer is a ``ValueError`` naming the method, the state, the joint action,
the outcome or agent and the value.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..model import JointMDP
from ..settings import current
from ..validation import check_counts, check_gamma, check_int, check_model_bytes, check_table_bytes

__all__ = ["VectorisedModel", "compile_arrays", "array_build_bytes", "DecodedStates", "check_model_bytes",
           "CheckedModel", "checked_model", "check_initial", "check_observations", "check_step"]

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


# ------------------------------------------------------------------ checks of a user's answers
def _state(model, code) -> str:
    """``state <decoded>`` for messages; the code when ``decode`` itself fails."""
    try:
        return f"state {model.decode(int(code))!r}"
    except Exception:  # noqa: BLE001 - a label for a message about the same model's bad answer
        return f"state code {int(code)}"


def _real(what: str, x) -> np.ndarray:
    """``x`` as a float64 array; complex, string, None and object answers refused by name."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested sequences
        raise ValueError(f"{what} is not an array of numbers ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers; got an array of dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _codes(what: str, x) -> np.ndarray:
    """``x`` as an int64 array of state codes: integer dtype only (not bool, not float)."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} is not an array of integer codes ({exc})") from None
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer state codes; got an array of dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what} holds code {int(a.max())}, beyond int64")
    return a.astype(np.int64, copy=False)


def check_initial(model, codes, probs, space: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Check ``model.initial_codes()``'s answer: codes in ``0..space-1`` and a distribution.

    Returns ``(codes, probs)`` as int64 and float64 arrays of shape ``(m,)``, ``m >= 1``, the
    probabilities finite, non-negative and summing to 1 within ``tol``."""
    name = f"{type(model).__name__}.initial_codes()"
    codes = _codes(f"{name} codes", codes)
    probs = _real(f"{name} probabilities", probs)
    if codes.ndim != 1 or codes.size == 0 or probs.shape != codes.shape:
        raise ValueError(f"{name} must give 1-d codes and probabilities of equal length >= 1; got shapes "
                         f"{codes.shape} and {probs.shape}")
    bad = np.flatnonzero((codes < 0) | (codes >= space))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"{name} gave start code {int(codes[b])} (entry {b}), outside 0..{space - 1} "
                         f"(code_space() = {space})")
    bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"{name} gave probability {float(probs[b])!r} for {_state(model, codes[b])} (entry {b}); "
                         "probabilities must be finite and >= 0")
    total = float(probs.sum())
    if not abs(total - 1.0) <= tol:
        raise ValueError(f"{name} probabilities sum to {total!r}; they must sum to 1 (within "
                         f"Settings.row_sum_tol = {tol:g})")
    return codes, probs


def check_observations(model, codes: np.ndarray, obs, n_obs: Sequence[int]) -> np.ndarray:
    r"""Check ``model.observe_arrays(codes)``'s answer: :math:`\phi_i` of every code.

    Returns an int64 array of shape ``(n, B)`` exactly (``B = codes.size``; a ``(B, n)`` array is
    refused, not reshaped), every entry ``obs[i, b]`` an integer in ``0..n_obs[i]-1``
    (integer-valued floats are accepted; other floats, bools, complex numbers and strings are not)."""
    name = f"{type(model).__name__}.observe_arrays"
    n, B = len(n_obs), codes.size
    try:
        a = np.asarray(obs)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} gave no array of observation ids ({exc})") from None
    if a.shape != (n, B):
        hint = (" (one row per code: transposed? the protocol wants one row per agent)"
                if a.shape == (B, n) else "")
        raise ValueError(f"{name} gave observations of shape {a.shape} for {B} codes; expected (n_agents, B) = "
                         f"({n}, {B}){hint}")
    if a.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(a) | (a != np.floor(a)) | (np.abs(a) > 2**62))
        if bad.size:
            i, b = (int(x) for x in bad[0])
            raise ValueError(f"{name} gave observation {float(a[i, b])!r} for agent {i} in "
                             f"{_state(model, codes[b])}; observation ids are integers")
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{name} must give integer observation ids; got an array of dtype {a.dtype}")
    if B and np.all(a.min(axis=1) >= 0) and np.all(a.max(axis=1) < np.asarray(n_obs)):
        return a.astype(np.int64, copy=False)  # the usual case, in two passes
    for i in range(n):
        bad = np.flatnonzero((a[i] < 0) | (a[i] >= n_obs[i]))
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"{name} gave observation {a[i, b].item()!r} for agent {i} in {_state(model, codes[b])}, "
                             f"outside 0..{n_obs[i] - 1} (n_obs[{i}] = {n_obs[i]})")
    return a.astype(np.int64, copy=False)


def check_step(model, codes: np.ndarray, joint: np.ndarray, succ, probs, rewards, outcomes: int, space: int,
               tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Check ``model.step_arrays(codes, joint)``'s answer for the ``B`` pairs ``(codes[b], joint[b])``.

    Returns ``(succ, probs, rewards)`` as int64 ``(B, K)``, float64 ``(B, K)`` and float64
    ``(B,)`` (``K = outcomes``): every probability finite and :math:`\ge 0`, each pair's summing
    to 1 within ``tol``, every successor with a positive probability in ``0..space-1``
    (zero-probability outcomes are ignored, as the protocol says), every reward a finite real."""
    name = f"{type(model).__name__}.step_arrays"
    B, K = codes.size, outcomes
    succ = _codes(f"{name} successors", succ)
    probs = _real(f"{name} probabilities", probs)
    rewards = _real(f"{name} rewards", rewards)
    for what, arr, shape in (("successors", succ, (B, K)), ("probabilities", probs, (B, K)),
                             ("rewards", rewards, (B,))):
        if arr.shape != shape:
            raise ValueError(f"{name} gave {what} of shape {arr.shape} for a batch of {B} pairs; expected "
                             f"{shape} (outcomes() = {K})")

    def pair(b):
        return f"({_state(model, codes[b])}, joint action {int(joint[b])})"

    total = probs.sum(axis=1)
    # the usual case in a few passes: entries >= 0 with finite sums near 1 are all finite
    good = B == 0 or (probs.min() >= 0 and np.all(np.abs(total - 1.0) <= tol) and np.isfinite(rewards).all()
                      and ((succ.min() >= 0 and succ.max() < space) or not np.any(((succ < 0) | (succ >= space))
                                                                                  & (probs > 0))))
    if good:
        return succ, probs, rewards
    bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
    if bad.size:
        b, o = divmod(int(bad[0]), K)
        raise ValueError(f"{name} gave probability {float(probs[b, o])!r} for outcome {o} of {pair(b)}; "
                         "probabilities must be finite and >= 0")
    bad = np.flatnonzero(~(np.abs(total - 1.0) <= tol))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"{name} gave probabilities summing to {float(total[b])!r} for {pair(b)}; each pair's "
                         f"must sum to 1 (within Settings.row_sum_tol = {tol:g})")
    bad = np.flatnonzero(((succ < 0) | (succ >= space)) & (probs > 0))
    if bad.size:
        b, o = divmod(int(bad[0]), K)
        raise ValueError(f"{name} gave successor code {int(succ[b, o])} for {pair(b)}, outside 0..{space - 1} "
                         f"(outcome {o}; code_space() = {space})")
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"{name} gave reward {float(rewards[b])!r} for {pair(b)}; rewards must be finite")
    return succ, probs, rewards


class CheckedModel(VectorisedModel):
    """A :class:`VectorisedModel` seen through the checks: every answer of the wrapped ``model``
    is checked (:func:`check_initial`, :func:`check_observations`, :func:`check_step`) before it
    is returned; other attributes (names, ``decode``, ``state_name``...) pass through.

    The sizes are checked once, on construction: ``n_actions`` and ``n_obs`` (one positive
    integer per agent), ``gamma`` in ``[0, 1)``, ``code_space()`` and ``outcomes()`` integers
    >= 1, and the policy tables (:math:`\\sum_i O_i A_i` entries) within
    ``Settings.max_model_bytes``."""

    def __init__(self, model: VectorisedModel):
        if not isinstance(model, VectorisedModel):
            raise ValueError(f"model must implement VectorisedModel; got {type(model).__name__}")
        name = type(model).__name__
        missing = [a for a in ("n_actions", "n_obs", "gamma") if not hasattr(model, a)]
        if missing:
            raise ValueError(f"{name} has no {', '.join(missing)}: a VectorisedModel needs n_actions, n_obs and gamma "
                             "(as a ScenarioModel has)")
        self.model = model
        self.n_actions = check_counts(f"{name}.n_actions", model.n_actions)
        self.n_obs = check_counts(f"{name}.n_obs", model.n_obs)
        if len(self.n_obs) != len(self.n_actions):
            raise ValueError(f"{name}.n_obs must give one count per agent ({len(self.n_actions)}); got {self.n_obs}")
        check_table_bytes(self.n_obs, self.n_actions, name)
        self.gamma = check_gamma(model.gamma)
        self._space = check_int(f"{name}.code_space()", model.code_space(), minimum=1)
        self._outcomes = check_int(f"{name}.outcomes()", model.outcomes(), minimum=1)

    @property
    def n_agents(self) -> int:
        return len(self.n_actions)

    def __getattr__(self, attr):  # only for attributes not defined here
        if "model" not in self.__dict__:  # while unpickling
            raise AttributeError(attr)
        return getattr(self.__dict__["model"], attr)

    def code_space(self) -> int:
        return self._space

    def outcomes(self) -> int:
        return self._outcomes

    def encode(self, state) -> int:
        return self.model.encode(state)

    def decode(self, code: int):
        return self.model.decode(code)

    def initial_codes(self):
        codes, probs = self.model.initial_codes()
        return check_initial(self.model, codes, probs, self._space, current().row_sum_tol)

    def step_arrays(self, codes, joint):
        codes, joint = np.asarray(codes, np.int64), np.asarray(joint, np.int64)
        succ, probs, rewards = self.model.step_arrays(codes, joint)
        return check_step(self.model, codes, joint, succ, probs, rewards, self._outcomes, self._space,
                          current().row_sum_tol)

    def observe_arrays(self, codes):
        codes = np.asarray(codes, np.int64)
        return check_observations(self.model, codes, self.model.observe_arrays(codes), self.n_obs)


def checked_model(model) -> CheckedModel:
    """``model`` seen through :class:`CheckedModel` (itself when it already is one)."""
    return model if isinstance(model, CheckedModel) else CheckedModel(model)


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
    model = checked_model(model)
    n = model.n_agents
    J = math.prod(model.n_actions)
    K = model.outcomes()
    space = model.code_space()
    est = min(check_int(f"{type(model.model).__name__}.estimate_states()", model.estimate_states(), minimum=1), space)
    if max_states is not None and est > max_states:
        raise ValueError(f"this scenario has up to {est:,} joint states, more than max_states={max_states:,}; "
                         "make it smaller (fewer agents, smaller grid) or pass a larger max_states")
    check_model_bytes(array_build_bytes(est, J, K, space, n), f"compiling this scenario ({est:,} joint states, "
                      f"{J:,} joint actions)", "make it smaller (fewer agents, smaller grid)")
    codes0, p0 = model.initial_codes()
    index = np.full(space, -1, np.int64)
    queue = np.empty(est, np.int64)
    start = _first_appearance(codes0)
    if start.size > est:
        raise ValueError(f"{type(model.model).__name__} starts in more than estimate_states()={est:,} states")
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
        succ, prob, rew = model.step_arrays(codes, np.tile(joint_all, B))  # checked
        chunks_rew.append(rew.reshape(B, J))
        keep = prob > 0
        row = np.repeat(np.arange(pos * J, hi * J, dtype=np.int64), keep.sum(axis=1))
        succ, prob = succ[keep], prob[keep]  # row-major: pairs in order, outcomes in list order
        new = _first_appearance(succ[index[succ] < 0])
        if new.size:
            if n_known + new.size > est:
                raise ValueError(f"{type(model.model).__name__} reaches more than estimate_states()={est:,} states")
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
    obs = model.observe_arrays(codes)  # checked: shape (n, N) exactly
    keep_names = N <= STATE_NAMES_MAX if state_names is None else bool(state_names)
    names = [model.state_name(model.decode(int(c))) for c in codes] if keep_names else None
    mdp = JointMDP(n_actions=model.n_actions, n_obs=model.n_obs, obs=tuple(obs), indptr=indptr, indices=indices,
                   probs=probs, rewards=rewards, mu=mu, gamma=model.gamma, state_names=names,
                   action_names=model.action_names(), obs_names=model.obs_names())
    return mdp, DecodedStates(model.model, codes)
