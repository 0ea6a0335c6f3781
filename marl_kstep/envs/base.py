r"""The scenario model protocol and its exact compilation to a :class:`JointMDP`.

A scenario describes its dynamics once, as a :class:`ScenarioModel`:

* ``initial_distribution()`` -> list of ``(state, probability)``;
* ``transitions(state, actions)`` -> list of ``(next_state, probability)``;
* ``reward(state, actions)`` -> team reward of the step taken in ``state``;
* ``observe(state, agent)`` -> agent's observation index :math:`\phi_i(s)`;
* ``n_actions``, ``n_obs``, ``gamma`` and ``estimate_states()``.

States are any hashable Python values. :func:`compile_model` enumerates the states
reachable from the initial distribution (breadth first, in a deterministic order) and
builds the joint MDP; the PettingZoo environments step the *same* model, so what an agent
sees in the environment is exactly :math:`\phi_i(s)` of the compiled MDP.
"""

from __future__ import annotations

import itertools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence

import numpy as np

from ..model import JointMDP
from ..settings import current
from ..validation import check_counts, check_int
from .vectorised import VectorisedModel, check_model_bytes, compile_arrays

__all__ = ["ScenarioModel", "compile_model", "per_state_build_bytes", "COLORS", "agent_color"]


class ScenarioModel(ABC):
    """Dynamics of a cooperative scenario with local observations (see module docstring)."""

    #: Actions per agent.
    n_actions: tuple[int, ...]
    #: Observations per agent.
    n_obs: tuple[int, ...]
    #: Discount used when compiling (the environment itself reports undiscounted rewards).
    gamma: float

    @property
    def n_agents(self) -> int:
        return len(self.n_actions)

    @abstractmethod
    def initial_distribution(self) -> list[tuple[Hashable, float]]:
        """``[(state, probability), ...]`` summing to one."""

    @abstractmethod
    def transitions(self, state, actions: Sequence[int]) -> list[tuple[Hashable, float]]:
        """``[(next_state, probability), ...]`` after joint action ``actions`` in ``state``."""

    @abstractmethod
    def reward(self, state, actions: Sequence[int]) -> float:
        """Team reward of taking ``actions`` in ``state``."""

    @abstractmethod
    def observe(self, state, agent: int) -> int:
        """Observation index of ``agent`` in ``state``."""

    def estimate_states(self) -> int:
        """Upper bound on the number of joint states (checked before compiling)."""
        raise NotImplementedError

    def sample_initial(self, rng: np.random.Generator):
        """One start state drawn from the initial distribution (used by the environments).

        The default enumerates :meth:`initial_distribution` once, after checking that up to
        :meth:`estimate_states` start states fit in ``Settings.max_model_bytes``; scenarios
        whose start sets are large override it to sample directly."""
        cached = getattr(self, "_initial_cache", None)
        if cached is None:
            est = int(self.estimate_states())
            check_model_bytes(est * (PER_STATE_PAIR_BYTES + 8), f"listing this scenario's start states (up to "
                              f"{est:,})", "give the model a direct sampler (override sample_initial)")
            states, p = zip(*self.initial_distribution(), strict=True)
            cached = (states, np.asarray(p, dtype=float))
            self._initial_cache = cached
        states, p = cached
        return states[rng.choice(len(states), p=p)]

    # names for reports and plots (optional)
    def state_name(self, state) -> str:
        return str(state)

    def action_names(self) -> tuple[tuple[str, ...], ...] | None:
        return None

    def obs_names(self) -> tuple[tuple[str, ...], ...] | None:
        return None

    # rendering (used by the PettingZoo environments)
    def render_text(self, state) -> str:
        """One-line text picture of ``state`` (``render_mode="ansi"``)."""
        return self.state_name(state)

    def render_cells(self, state) -> np.ndarray:
        """Colour of every cell of a small picture of ``state``, shape ``(rows, cols, 3)``, uint8."""
        raise NotImplementedError

    def render_rgb(self, state, cell_px: int = 24) -> np.ndarray:
        """``render_cells`` scaled up to ``cell_px`` pixels per cell (``render_mode="rgb_array"``)."""
        cells = np.asarray(self.render_cells(state), dtype=np.uint8)
        return np.repeat(np.repeat(cells, cell_px, axis=0), cell_px, axis=1)


#: Colours used by the cell pictures.
COLORS = {
    "floor": (235, 235, 235),
    "wall": (60, 60, 60),
    "goal": (255, 200, 40),
    "decoy": (250, 235, 170),
    "good": (110, 200, 110),
    "agents": ((40, 90, 220), (220, 60, 60), (40, 160, 80), (150, 70, 190), (240, 140, 30), (30, 170, 190)),
}


def agent_color(i: int) -> tuple[int, int, int]:
    return COLORS["agents"][i % len(COLORS["agents"])]


#: Python memory per (state, joint action) pair of the per-state build (lists of successors,
#: probabilities and rewards, the state index), measured at 150-200 bytes; rounded up.
PER_STATE_PAIR_BYTES = 256


def per_state_build_bytes(n_states: int, n_joint: int, n_agents: int) -> int:
    """Estimated peak bytes of the per-state build of a model with at most ``n_states`` states."""
    return n_states * n_joint * (PER_STATE_PAIR_BYTES + 48) + n_states * (200 + 8 * n_agents)


def compile_model(model: ScenarioModel, *, max_states: int | None = None,
                  vectorised: bool | None = None) -> tuple[JointMDP, Sequence]:
    """Enumerate the reachable joint states of ``model`` and build the exact joint MDP.

    States are numbered breadth first from the initial distribution: in queue order, each
    state's joint actions in index order, each pair's successors in the order
    ``transitions`` lists them (repeated successors are summed in that order).

    Parameters
    ----------
    model : ScenarioModel
    max_states : int, optional
        Also refuse with ``ValueError`` when ``model.estimate_states()`` exceeds it.
    vectorised : bool, optional
        Build through the array protocol (:mod:`marl_kstep.envs.vectorised`, no Python work
        per state); default: whenever ``model`` implements it. ``False`` forces the
        per-state protocol.

    Both builds estimate their peak memory first and refuse, with the estimate, to pass
    ``Settings.max_model_bytes`` (default: half of this machine's memory).

    Returns
    -------
    (JointMDP, states)
        ``states[s]`` is the model state with joint index ``s``.
    """
    if max_states is not None:
        max_states = check_int("max_states", max_states, minimum=1)
    if vectorised is None:
        vectorised = isinstance(model, VectorisedModel)
    elif vectorised and not isinstance(model, VectorisedModel):
        raise ValueError(f"vectorised=True needs a model implementing VectorisedModel; "
                         f"{type(model).__name__} does not")
    if vectorised:
        return compile_arrays(model, max_states=max_states)
    check_counts(f"{type(model).__name__}.n_actions", model.n_actions)
    check_counts(f"{type(model).__name__}.n_obs", model.n_obs)
    est = check_int(f"{type(model).__name__}.estimate_states()", model.estimate_states(), minimum=1)
    if max_states is not None and est > max_states:
        raise ValueError(
            f"this scenario has up to {est:,} joint states, more than max_states={max_states:,}; "
            f"make it smaller (fewer agents, smaller grid) or pass a larger max_states"
        )
    check_model_bytes(per_state_build_bytes(est, math.prod(model.n_actions), model.n_agents),
                      f"compiling this scenario state by state ({est:,} joint states)",
                      "make it smaller, or give the model the array protocol (VectorisedModel)")
    init = model.initial_distribution()
    index: dict = {}
    states: list = []

    def add(s):
        if s not in index:
            index[s] = len(states)
            states.append(s)
        return index[s]

    for s, _ in init:
        add(s)
    joint = list(itertools.product(*[range(a) for a in model.n_actions]))
    indptr, succ, prob, rewards = [0], [], [], []
    pos = 0
    while pos < len(states):
        s = states[pos]
        pos += 1
        row_r = []
        for acts in joint:
            row_r.append(checked_reward(model, s, acts))
            acc: dict = {}
            for t, p in checked_transitions(model, s, acts):
                if p > 0:
                    t = add(t)
                    acc[t] = acc.get(t, 0.0) + p
            succ.extend(acc)
            prob.extend(acc.values())
            indptr.append(len(succ))
        rewards.append(row_r)
        if len(states) > est:
            raise ValueError(f"{type(model).__name__} reaches more than estimate_states()={est:,} states")
    N = len(states)
    mu = np.zeros(N)
    for s, p in init:
        mu[index[s]] += p
    obs = [np.array([checked_observation(model, s, i) for s in states], dtype=np.int64) for i in range(model.n_agents)]
    mdp = JointMDP.from_sparse(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(succ, dtype=np.int64),
        np.asarray(prob, dtype=float),
        np.asarray(rewards, dtype=float),
        obs,
        model.n_actions,
        mu,
        model.gamma,
        n_obs=model.n_obs,
        state_names=[model.state_name(s) for s in states],
        action_names=model.action_names(),
        obs_names=model.obs_names(),
    )
    return mdp, states


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


def checked_reward(model: ScenarioModel, state, actions) -> float:
    """``model.reward(state, actions)``, checked: a finite real number (not bool, str, complex, None)."""
    r = model.reward(state, actions)
    if not _is_real(r) or not math.isfinite(r):
        raise ValueError(f"{type(model).__name__}.reward gave {r!r} for (state {state!r}, actions {actions}); "
                         "rewards must be finite real numbers")
    return float(r)


def checked_transitions(model: ScenarioModel, state, actions) -> list:
    """``model.transitions(state, actions)``, checked: ``(next_state, p)`` pairs, every ``p`` a finite
    real >= 0, together summing to 1 within ``Settings.row_sum_tol``."""
    name = f"{type(model).__name__}.transitions"
    where = f"(state {state!r}, actions {actions})"
    try:
        pairs = [(t, p) for t, p in model.transitions(state, actions)]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must give a list of (next_state, probability) pairs for {where}") from None
    for t, p in pairs:
        if not _is_real(p) or not 0 <= p < math.inf:
            raise ValueError(f"{name} gave probability {p!r} for successor {t!r} of {where}; probabilities must be "
                             "finite and >= 0")
    total = math.fsum(p for _, p in pairs)
    tol = current().row_sum_tol
    if not abs(total - 1.0) <= tol:
        raise ValueError(f"{name} gave probabilities summing to {total!r} for {where}; they must sum to 1 (within "
                         f"Settings.row_sum_tol = {tol:g})")
    return pairs


def checked_observation(model: ScenarioModel, state, agent: int) -> int:
    """``model.observe(state, agent)``, checked: an integer (or integer-valued float) in ``0..O_i-1``."""
    o = model.observe(state, agent)
    n = model.n_obs[agent]
    if not _is_real(o) or not (isinstance(o, numbers.Integral) or (math.isfinite(o) and float(o).is_integer())) \
            or not 0 <= o < n:
        raise ValueError(f"{type(model).__name__}.observe gave {o!r} for agent {agent} in state {state!r}; "
                         f"observation ids are integers in 0..{n - 1}")
    return int(o)
