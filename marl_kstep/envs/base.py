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
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence

import numpy as np

from ..model import JointMDP
from ..settings import current

__all__ = ["ScenarioModel", "compile_model", "COLORS", "agent_color"]


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

        The default enumerates :meth:`initial_distribution` once, after checking
        :meth:`estimate_states` against ``Settings.max_states``; scenarios whose start sets
        are large override it to sample directly."""
        cached = getattr(self, "_initial_cache", None)
        if cached is None:
            limit = current().max_states
            est = int(self.estimate_states())
            if est > limit:
                raise ValueError(f"this scenario has up to {est:,} joint states, more than Settings.max_states="
                                 f"{limit:,}, and no direct sampler of its start states; make it smaller or raise "
                                 "the limit with mk.configure(max_states=...)")
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


def compile_model(model: ScenarioModel, *, max_states: int | None = None) -> tuple[JointMDP, list]:
    """Enumerate the reachable joint states of ``model`` and build the exact joint MDP.

    Parameters
    ----------
    model : ScenarioModel
    max_states : int
        Refuse with ``ValueError`` when ``model.estimate_states()`` exceeds it.

    Returns
    -------
    (JointMDP, states)
        ``states[s]`` is the model state with joint index ``s``.
    """
    max_states = current().max_states if max_states is None else max_states
    est = int(model.estimate_states())
    if est > max_states:
        raise ValueError(
            f"this scenario has up to {est:,} joint states, more than max_states={max_states:,}; "
            f"make it smaller (fewer agents, smaller grid) or pass a larger max_states"
        )
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
            row_r.append(model.reward(s, acts))
            for t, p in model.transitions(s, acts):
                if p > 0:
                    succ.append(add(t))
                    prob.append(p)
            indptr.append(len(succ))
        rewards.append(row_r)
        if len(states) > max_states:
            raise ValueError(
                f"more than max_states={max_states:,} reachable joint states; "
                f"make the scenario smaller or pass a larger max_states"
            )
    N = len(states)
    mu = np.zeros(N)
    for s, p in init:
        mu[index[s]] += p
    obs = [np.array([model.observe(s, i) for s in states], dtype=np.int64) for i in range(model.n_agents)]
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
