r"""Grid coordination (SPEC §7.2): agents must meet on a goal cell.

``n`` agents move on an ``H x W`` grid read from an ASCII map:

====  ===========================================================
char  meaning
====  ===========================================================
``#`` wall / obstacle
``.`` floor
``G`` the goal cell (exactly one, or pass ``goal=(row, col)``)
``D`` a decoy cell (optional; or pass ``decoys=[(row, col), ...]``)
``0``-``9`` start cell of that agent (or pass ``starts=[(row, col), ...]``)
====  ===========================================================

Actions: ``0`` stay, ``1`` up, ``2`` down, ``3`` left, ``4`` right. A move into a wall or
off the grid leaves the agent in place. With probability ``slip`` an agent's action is
replaced by one drawn uniformly from the five actions (its own included).

Collisions: ``"allowed"`` lets agents share cells. ``"blocked"``: agents whose moves
would end in the same cell, or would swap cells, stay where they are (repeated until no
conflict remains); the goal cell is exempt, so agents can meet there.

Reward of a step, paid on the state it starts in: ``goal_reward`` when every agent
stands on the goal, plus ``decoy_reward`` for each agent on a decoy cell, minus
``move_cost`` for each agent whose action is not "stay".

Observations:

* ``"position"``: the index of the agent's own cell among the floor cells (row-major);
* ``"walls"``: the 4-neighbour wall bitmask (up 1, down 2, left 4, right 8; the grid
  border counts as wall) plus 16 when the agent stands on the goal. Corridor cells
  alias, as in state aggregation.

Start: agents without a start cell in the map or in ``starts`` start uniformly at
random on the floor cells that are not the goal (independently; distinct cells under
blocked collisions).

The trap demonstrated in ``scenarios/grid_coordination.py`` (``TRAP_CONFIG``): two agents
start on decoy cells (0.02 per agent and step) at the two ends of a 7-cell corridor and the
goal sits in the middle; ``walls`` observations alias the four inner corridor cells, and
leaving a decoy pays only if the other agent comes too. J* = 17.1875 (both walk to the
goal). From the near-"stay" start (stay 0.8, each move 0.05, every observation) projected
ascent with eta 0.05 ends at 0.8 (both stay on their decoys, 95% below J*) for k = 1,
reaches J* for k = 2 and 3, and falls back to 0.8 for k = 4 and 5: the smallest escaping k
is 2, and a larger window is not always better from a fixed start.
"""

from __future__ import annotations

import itertools
import math
import numbers

import networkx as nx
import numpy as np
from pettingzoo.utils.conversions import parallel_to_aec

from ..model import JointMDP
from ..policy import Policy
from ..validation import check_choice, check_gamma, check_int, check_probability, check_real
from .base import COLORS, ScenarioModel, agent_color, compile_model
from .pz import ModelParallelEnv
from .vectorised import VectorisedModel

__all__ = [
    "GridCoordinationModel",
    "parallel_env",
    "env",
    "raw_env",
    "build_mdp",
    "near_stay_start",
    "DEFAULT_LAYOUT",
    "TRAP_LAYOUT",
    "TRAP_CONFIG",
    "ACTIONS",
]

ACTIONS = ("stay", "up", "down", "left", "right")
_MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
OBSERVATIONS = ("walls", "position")
COLLISIONS = ("allowed", "blocked")
#: Most agents (joint actions are 5**n_agents, indexed in int64).
MAX_AGENTS = 27

#: A small open room with the goal in a corner.
DEFAULT_LAYOUT = """
#####
#0..#
#...#
#1.G#
#####
"""

#: The corridor trap: decoys at both ends, the goal in the middle.
TRAP_LAYOUT = """
#########
#0..G..1#
#########
"""

#: The trap configuration of the demonstration (agents start on the decoys).
TRAP_CONFIG = dict(layout=TRAP_LAYOUT, n_agents=2, observation="walls", gamma=0.95,
                   decoys=[(1, 1), (1, 7)], decoy_reward=0.02, move_cost=0.0)


def _parse_layout(layout: str):
    if not isinstance(layout, str):
        raise ValueError(f"layout must be an ASCII map string; got {type(layout).__name__}")
    lines = [ln.rstrip("\n") for ln in layout.strip("\n").splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ValueError("layout is empty")
    width = len(lines[0])
    for r, ln in enumerate(lines):
        if len(ln) != width:
            raise ValueError(f"layout line {r} has {len(ln)} characters; line 0 has {width} (rows must be equal)")
        for c, ch in enumerate(ln):
            if ch not in "#.GD0123456789":
                raise ValueError(f"layout has unknown character {ch!r} at (row {r}, col {c}); use # . G D 0-9")
    return lines


class GridCoordinationModel(ScenarioModel, VectorisedModel):
    r"""Model of grid coordination; states are tuples of flat cell indices ``row * W + col``.

    State code (array protocol): the agents' floor-cell indices ``f_i`` (position of the cell
    in :attr:`floor`) as a mixed-radix number, :math:`\sum_i f_i F^{n-1-i}` with ``F`` floor
    cells (agent 0 most significant)."""

    def __init__(self, layout: str = DEFAULT_LAYOUT, n_agents: int = 2, observation: str = "walls",
                 gamma: float = 0.95, goal=None, decoys=None, starts=None, goal_reward: float = 1.0,
                 decoy_reward: float = 0.2, move_cost: float = 0.0, slip: float = 0.0,
                 collisions: str = "allowed"):
        lines = _parse_layout(layout)
        n_agents = check_int("n_agents", n_agents, minimum=1, maximum=MAX_AGENTS)
        check_choice("observation", observation, OBSERVATIONS)
        check_choice("collisions", collisions, COLLISIONS)
        self.gamma = check_gamma(gamma)
        self.slip = check_probability("slip", slip)
        self.goal_reward = check_real("goal_reward", goal_reward)
        self.decoy_reward = check_real("decoy_reward", decoy_reward)
        self.move_cost = check_real("move_cost", move_cost)
        self.H, self.W = len(lines), len(lines[0])
        self.wall = np.array([[ch == "#" for ch in ln] for ln in lines])
        self.n = n_agents
        self.observation = observation
        self.collisions = collisions

        cells_of = {ch: [(r, c) for r, ln in enumerate(lines) for c, x in enumerate(ln) if x == ch]
                    for ch in "GD0123456789"}
        if goal is None:
            if len(cells_of["G"]) != 1:
                raise ValueError(f"layout must mark exactly one goal 'G' (found {len(cells_of['G'])}); or pass goal=")
            goal = cells_of["G"][0]
        self.goal = self._cell("goal", goal)
        if decoys is not None and (isinstance(decoys, str | bytes | dict) or not isinstance(decoys, list | tuple)):
            raise ValueError(f"decoys must be a list of (row, col) cells; got {decoys!r}")
        self.decoys = frozenset(self._cell(f"decoys[{i}]", d) for i, d in
                                enumerate(cells_of["D"] if decoys is None else decoys))
        if starts is None:
            starts = [cells_of[str(i)][0] if i < 10 and cells_of[str(i)] else None for i in range(self.n)]
        elif isinstance(starts, str | bytes | dict) or not isinstance(starts, list | tuple) or len(starts) != self.n:
            raise ValueError(f"starts must give one cell (or None) per agent ({self.n}); got {starts!r}")
        self.starts = [None if s is None else self._cell(f"starts[{i}]", s) for i, s in enumerate(starts)]
        for i in range(self.n, 10):
            if cells_of[str(i)]:
                raise ValueError(f"layout marks a start for agent {i} but n_agents={self.n}")

        self.floor = [r * self.W + c for r in range(self.H) for c in range(self.W) if not self.wall[r, c]]
        self.floor_index = {cell: k for k, cell in enumerate(self.floor)}
        graph = nx.grid_2d_graph(self.H, self.W)
        graph.remove_nodes_from([(r, c) for r in range(self.H) for c in range(self.W) if self.wall[r, c]])
        g = divmod(self.goal, self.W)
        for i, s in enumerate(self.starts):
            if s is not None and not nx.has_path(graph, divmod(s, self.W), g):
                raise ValueError(f"the goal {g} is unreachable from agent {i}'s start cell {divmod(s, self.W)}")
        if any(s is None for s in self.starts):
            reach = nx.node_connected_component(graph, g)
            if len(reach) < len(self.floor):
                far = sorted(set(map(lambda x: divmod(x, self.W), self.floor)) - reach)[0]
                raise ValueError(f"the goal {g} is unreachable from floor cell {far}, a possible random start")
        self.n_actions = (5,) * self.n
        self.n_obs = (32 if observation == "walls" else len(self.floor),) * self.n
        self._wallbits = np.zeros(self.H * self.W, dtype=np.int64)
        for cell in self.floor:
            r, c = divmod(cell, self.W)
            bits = 0
            for bit, (dr, dc) in zip((1, 2, 4, 8), _MOVES[1:], strict=True):
                if self._blocked(r + dr, c + dc):
                    bits |= bit
            self._wallbits[cell] = bits + (16 if cell == self.goal else 0)

    def _blocked(self, r, c) -> bool:
        return not (0 <= r < self.H and 0 <= c < self.W) or bool(self.wall[r, c])

    def _cell(self, name, rc) -> int:
        try:
            pair = tuple(rc)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in pair):
            raise ValueError(f"{name} must be a (row, col) pair of integers; got {rc!r}")
        r, c = int(pair[0]), int(pair[1])
        if not (0 <= r < self.H and 0 <= c < self.W):
            raise ValueError(f"{name} = {(r, c)} is outside the {self.H} x {self.W} grid")
        if self.wall[r, c]:
            raise ValueError(f"{name} = {(r, c)} is inside a wall")
        return r * self.W + c

    # ------------------------------------------------------------ dynamics
    def initial_distribution(self):
        options = [[s] if s is not None else [c for c in self.floor if c != self.goal] for s in self.starts]
        combos = [t for t in itertools.product(*options)
                  if self.collisions == "allowed" or len(set(t)) == len(t)]
        if not combos:
            raise ValueError("no start configuration is possible: agents' start cells collide")
        p = 1.0 / len(combos)
        return [(t, p) for t in combos]

    def sample_initial(self, rng):
        """Uniform over the start configurations of :meth:`initial_distribution` without
        enumerating them: each free agent draws a floor cell (not the goal); under blocked
        collisions, draws that collide are redrawn (rejection: uniform over distinct cells)."""
        free = [c for c in self.floor if c != self.goal]
        fixed = [s for s in self.starts if s is not None]
        if self.collisions == "blocked" and len(set(fixed)) < len(fixed):
            raise ValueError("no start configuration is possible: agents' start cells collide")
        if self.collisions == "blocked" and len(self.starts) - len(fixed) > len(set(free) - set(fixed)):
            raise ValueError("no start configuration is possible: more agents than free start cells")
        while True:
            t = tuple(s if s is not None else free[int(rng.integers(len(free)))] for s in self.starts)
            if self.collisions == "allowed" or len(set(t)) == len(t):
                return t

    def _move(self, cell, a):
        r, c = divmod(cell, self.W)
        dr, dc = _MOVES[a]
        return cell if self._blocked(r + dr, c + dc) else (r + dr) * self.W + (c + dc)

    def _resolve(self, state, actions):
        target = [self._move(cell, a) for cell, a in zip(state, actions, strict=True)]
        if self.collisions == "allowed":
            return tuple(target)
        while True:
            stuck = set()
            for i, j in itertools.combinations(range(self.n), 2):
                same = target[i] == target[j] and target[i] != self.goal
                swap = target[i] == state[j] and target[j] == state[i] and target[i] != target[j]
                if same or swap:
                    stuck.update(x for x in (i, j) if target[x] != state[x])
            if not stuck:
                return tuple(target)
            for i in stuck:
                target[i] = state[i]

    def transitions(self, state, actions):
        if self.slip == 0.0:
            return [(self._resolve(state, actions), 1.0)]
        per_agent = [[(b, (1 - self.slip) * (b == a) + self.slip / 5) for b in range(5)] for a in actions]
        out: dict = {}
        for combo in itertools.product(*per_agent):
            p = math.prod(q for _, q in combo)
            if p > 0:
                t = self._resolve(state, tuple(b for b, _ in combo))
                out[t] = out.get(t, 0.0) + p
        return list(out.items())

    def reward(self, state, actions):
        r = self.goal_reward if all(c == self.goal for c in state) else 0.0
        r += self.decoy_reward * sum(c in self.decoys for c in state)
        return r - self.move_cost * sum(a != 0 for a in actions)

    def observe(self, state, agent):
        cell = state[agent]
        return int(self._wallbits[cell]) if self.observation == "walls" else self.floor_index[cell]

    def estimate_states(self):
        return len(self.floor) ** self.n

    # ------------------------------------------------------------ array protocol
    def code_space(self):
        return len(self.floor) ** self.n

    def outcomes(self):
        return 1 if self.slip == 0.0 else 5**self.n

    def _radix(self):
        return len(self.floor) ** np.arange(self.n - 1, -1, -1, dtype=np.int64)

    def encode(self, state):
        return int(sum(self.floor_index[c] * int(r) for c, r in zip(state, self._radix(), strict=True)))

    def decode(self, code):
        F = len(self.floor)
        return tuple(self.floor[(int(code) // int(r)) % F] for r in self._radix())

    def _tables(self):
        """Floor-index tables: ``move[f, a]`` (the cell after action ``a``), goal, decoy, obs."""
        cached = getattr(self, "_array_tables", None)
        if cached is None:
            F = len(self.floor)
            move = np.array([[self.floor_index[self._move(c, a)] for a in range(5)] for c in self.floor], np.int64)
            decoy = np.array([c in self.decoys for c in self.floor])
            obs = np.array([self.observe((c,) * self.n, 0) for c in self.floor], np.int64)
            cached = (move, self.floor_index[self.goal], decoy, obs, F)
            self._array_tables = cached
        return cached

    def _floor_indices(self, codes):
        F = len(self.floor)
        return (np.asarray(codes, np.int64)[None, :] // self._radix()[:, None]) % F

    def initial_codes(self):
        F = len(self.floor)
        goal = self.floor_index[self.goal]
        options = [np.array([self.floor_index[s]]) if s is not None else np.delete(np.arange(F), goal)
                   for s in self.starts]
        grids = np.meshgrid(*options, indexing="ij")
        f = np.stack([g.ravel() for g in grids]).astype(np.int64)
        if self.collisions == "blocked":
            distinct = np.ones(f.shape[1], bool)
            for i, j in itertools.combinations(range(self.n), 2):
                distinct &= f[i] != f[j]
            f = f[:, distinct]
        if f.shape[1] == 0:
            raise ValueError("no start configuration is possible: agents' start cells collide")
        return self._radix() @ f, np.full(f.shape[1], 1.0 / f.shape[1])

    def _resolve_arrays(self, f, target):
        """Vectorised :meth:`_resolve` on floor indices (``f``, ``target`` of shape ``(n, B)``)."""
        if self.collisions == "allowed":
            return target
        goal = self._tables()[1]
        target = target.copy()
        while True:
            stuck = np.zeros(target.shape, bool)
            for i, j in itertools.combinations(range(self.n), 2):
                same = (target[i] == target[j]) & (target[i] != goal)
                swap = (target[i] == f[j]) & (target[j] == f[i]) & (target[i] != target[j])
                clash = same | swap
                stuck[i] |= clash & (target[i] != f[i])
                stuck[j] |= clash & (target[j] != f[j])
            if not stuck.any():
                return target
            target[stuck] = f[stuck]

    def step_arrays(self, codes, joint):
        move, goal, decoy, _, _ = self._tables()
        f = self._floor_indices(codes)
        a = (np.asarray(joint, np.int64)[None, :] // (5 ** np.arange(self.n - 1, -1, -1))[:, None]) % 5
        rewards = np.where(np.all(f == goal, axis=0), self.goal_reward, 0.0)
        rewards = rewards + self.decoy_reward * decoy[f].sum(axis=0)
        rewards = rewards - self.move_cost * (a != 0).sum(axis=0)
        radix = self._radix()
        if self.slip == 0.0:
            t = self._resolve_arrays(f, move[f, a])
            return (radix @ t)[:, None], np.ones((t.shape[1], 1)), rewards
        K = 5**self.n
        B = f.shape[1]
        b = (np.arange(K)[None, :] // (5 ** np.arange(self.n - 1, -1, -1))[:, None]) % 5  # (n, K) combos
        succ = np.empty((B, K), np.int64)
        prob = np.empty((B, K))
        stay_p, other_p = (1 - self.slip) * 1 + self.slip / 5, (1 - self.slip) * 0 + self.slip / 5
        for c in range(K):
            t = self._resolve_arrays(f, move[f, b[:, c:c + 1]])
            succ[:, c] = radix @ t
            p = np.ones(B)
            for i in range(self.n):
                p = p * np.where(a[i] == b[i, c], stay_p, other_p)
            prob[:, c] = p
        return succ, prob, rewards

    def observe_arrays(self, codes):
        return self._tables()[3][self._floor_indices(codes)]

    # ------------------------------------------------------------ names and pictures
    def state_name(self, state):
        return "(" + ", ".join(f"{divmod(c, self.W)}" for c in state) + ")"

    def action_names(self):
        return (ACTIONS,) * self.n

    def obs_names(self):
        if self.observation == "position":
            return (tuple(f"{divmod(c, self.W)}" for c in self.floor),) * self.n
        names = []
        for o in range(32):
            sides = "".join(ch for bit, ch in zip((1, 2, 4, 8), "UDLR", strict=True) if o & bit)
            names.append(f"walls:{sides or '-'}" + ("+goal" if o & 16 else ""))
        return (tuple(names),) * self.n

    def render_text(self, state):
        rows = []
        for r in range(self.H):
            line = []
            for c in range(self.W):
                cell = r * self.W + c
                here = [str(i) for i, x in enumerate(state) if x == cell]
                if here:
                    line.append(here[0] if len(here) == 1 else "*")
                elif self.wall[r, c]:
                    line.append("#")
                elif cell == self.goal:
                    line.append("G")
                elif cell in self.decoys:
                    line.append("D")
                else:
                    line.append(".")
            rows.append("".join(line))
        return "\n".join(rows)

    def render_cells(self, state):
        cells = np.empty((self.H, self.W, 3), np.uint8)
        cells[:] = COLORS["floor"]
        cells[self.wall] = COLORS["wall"]
        for d in self.decoys:
            cells[divmod(d, self.W)] = COLORS["decoy"]
        cells[divmod(self.goal, self.W)] = COLORS["goal"]
        for i, c in enumerate(state):
            cells[divmod(c, self.W)] = agent_color(i)
        if all(c == self.goal for c in state):
            cells[divmod(self.goal, self.W)] = COLORS["good"]
        return cells


def parallel_env(layout: str = DEFAULT_LAYOUT, n_agents: int = 2, observation: str = "walls", gamma: float = 0.95,
                 goal=None, decoys=None, starts=None, goal_reward: float = 1.0, decoy_reward: float = 0.2,
                 move_cost: float = 0.0, slip: float = 0.0, collisions: str = "allowed", max_cycles: int = 200,
                 render_mode: str | None = None) -> ModelParallelEnv:
    """Grid coordination as a PettingZoo ParallelEnv (see the module docstring for every parameter)."""
    model = GridCoordinationModel(layout, n_agents, observation, gamma, goal, decoys, starts, goal_reward,
                                  decoy_reward, move_cost, slip, collisions)
    return ModelParallelEnv(model, "grid_coordination_v0", max_cycles, render_mode)


def raw_env(**config):
    """AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env


def near_stay_start(mdp: JointMDP, stay: float = 0.8) -> Policy:
    """Every row: ``stay`` on "stay", the rest spread evenly over the four moves."""
    row = [stay] + [(1.0 - stay) / 4] * 4
    return Policy.from_arrays(mdp, [np.tile(row, (o, 1)) for o in mdp.n_obs])


def build_mdp(**config) -> JointMDP:
    """The compiled grid-coordination MDP for ``GridCoordinationModel(**config)``."""
    return compile_model(GridCoordinationModel(**config))[0]
