r"""A small PettingZoo ``ParallelEnv`` over OpenSpiel's turn-based common-payoff games.

Written for the tiny Hanabi suite (OpenSpiel's ``tiny_hanabi``; Foerster et al. 2019, the six
payoff variants A--F of Sokota et al. 2021), and usable for any small turn-based OpenSpiel game
in which every player receives the same return. Needs the optional extra ``open_spiel``
(``pip install marl_kstep[games]``).

Checked on construction (``ValueError``): the game is sequential (turn-based; simultaneous-move
games are refused), has at least two players, provides information-state strings, and its tree
has at most ``max_nodes`` nodes (counted by an iterative walk that stops at the limit, so
``chess`` is refused at once, never a RecursionError). A game whose utility is not
``IDENTICAL`` (zero-sum, constant-sum, general-sum) gives every player its own return and is
marked ``cooperative = False``: :class:`~marl_kstep.SampledKStep` then needs an explicit
``team_reward=``, and the exact search (:func:`best_deterministic_spiel`, :func:`spiel_value`)
refuses it. :meth:`SpielParallelEnv.step` refuses an illegal action, a missing one, and
actions that are not integers (floats, bools).

Every env step is one move of the player to act; the other agents' actions are ignored that
step. An agent's observation id is 0 while it waits and ``1 + q`` when it acts at its
``q``-th information state (OpenSpiel's ``information_state_string``, numbered in the order a
depth-first walk of the game tree meets them), so a memoryless table over these ids is a
deterministic-or-mixed behaviour strategy. The team reward is the common return, paid on the
move that ends the game.

:func:`best_deterministic_spiel` finds the exact optimum by exhaustive search over all
deterministic tables, evaluating each by an exact walk of the game tree (chance included).
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..settings import current
from ..validation import check_int

__all__ = ["SpielParallelEnv", "TINY_HANABI_PAYOFFS", "best_deterministic_spiel", "spiel_value",
           "tiny_hanabi_game"]

#: Payoff tables of the tiny Hanabi suite, ``payoff[c0][c1][a0][a1]`` flattened (cards dealt to
#: players 0 and 1, their actions), with (cards, actions) per variant.
TINY_HANABI_PAYOFFS = {
    "A": ((2, 2), [0, 1, 0, 0, 0, 1, 3, 2, 3, 3, 3, 2, 2, 0, 3, 3]),
    "B": ((2, 2), [1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0]),
    "C": ((2, 2), [3, 0, 0, 3, 2, 0, 3, 3, 2, 2, 3, 0, 0, 1, 0, 2]),
    "D": ((2, 2), [3, 0, 1, 3, 3, 0, 3, 0, 3, 2, 0, 2, 0, 1, 0, 0]),
    "E": ((2, 3), [10, 0, 0, 4, 8, 4, 10, 0, 0, 0, 0, 10, 4, 8, 4, 0, 0, 10,
                   0, 0, 10, 4, 8, 4, 0, 0, 0, 10, 0, 0, 4, 8, 4, 10, 0, 0]),
    "F": ((3, 2), [0, 3, 3, 2, 0, 0, 0, 1, 3, 1, 2, 1, 0, 2, 0, 1, 1, 2, 1, 2, 0, 1, 0, 3,
                   1, 3, 1, 2, 0, 3, 2, 2, 3, 1, 3, 0]),
}


def tiny_hanabi_game(variant: str = "E"):
    """OpenSpiel's ``tiny_hanabi`` with the payoff table of ``variant`` (A--F)."""
    import pyspiel

    if variant not in TINY_HANABI_PAYOFFS:
        raise ValueError(f"variant must be one of {sorted(TINY_HANABI_PAYOFFS)}; got variant={variant!r}")
    (cards, actions), payoff = TINY_HANABI_PAYOFFS[variant]
    if len(payoff) != cards * cards * actions * actions:
        raise ValueError(f"TINY_HANABI_PAYOFFS[{variant!r}] has {len(payoff)} entries")
    return pyspiel.load_game("tiny_hanabi", {"num_players": 2, "num_chance": cards, "num_actions": actions,
                                             "payoff": ";".join(str(x) for x in payoff)})


#: Default limit on the game-tree nodes :class:`SpielParallelEnv` walks.
MAX_NODES = 10**6


def check_game(game, *, cooperative: bool = False) -> None:
    """Refuse games the adapter cannot represent: simultaneous-move or mean-field dynamics,
    fewer than two players, no information-state strings (and, with ``cooperative``, a utility
    other than ``IDENTICAL``)."""
    import pyspiel

    if not isinstance(game, pyspiel.Game):
        raise ValueError(f"game must be a pyspiel.Game (pyspiel.load_game(...)); got {type(game).__name__}")
    t = game.get_type()
    if t.dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        raise ValueError(f"game {t.short_name!r} has {t.dynamics.name.lower()} dynamics; only sequential (turn-based) "
                         "games are supported (pyspiel.convert_to_turn_based(game) turns a simultaneous-move game "
                         "into one)")
    if game.num_players() < 2:
        raise ValueError(f"game {t.short_name!r} has {game.num_players()} player(s); a team needs at least 2")
    if not t.provides_information_state_string:
        raise ValueError(f"game {t.short_name!r} does not provide information-state strings (the observation ids)")
    if cooperative and t.utility != pyspiel.GameType.Utility.IDENTICAL:
        raise ValueError(f"game {t.short_name!r} has {t.utility.name.lower()} utility: its players do not share one "
                         "return, so there is no team optimum to search")


def _children(state) -> list[int]:
    return [a for a, _ in state.chance_outcomes()] if state.is_chance_node() else state.legal_actions()


def probe_tree_size(game, probes: int = 8, stop: float = math.inf, seed: int = 0) -> float:
    r"""The smallest of ``probes`` Knuth estimates of the game tree's node count.

    One probe follows a uniformly random path (chance outcomes included) and returns
    :math:`1 + b_1 + b_1 b_2 + \dots`, :math:`b_d` the branching at depth :math:`d`: an unbiased
    estimate of the tree size (Knuth 1975). By Markov's inequality each probe exceeds
    :math:`c` times the true size with probability at most :math:`1/c`, so the smallest of 8
    exceeds it with probability at most :math:`c^{-8}`. A probe stops once it passes ``stop``.
    """
    rng = np.random.default_rng(seed)
    smallest = math.inf
    for _ in range(probes):
        state = game.new_initial_state()
        total = weight = 1.0
        while not state.is_terminal() and total <= stop:
            acts = _children(state)
            weight *= len(acts)
            total += weight
            state.apply_action(acts[int(rng.integers(len(acts)))])
        smallest = min(smallest, total)
    return smallest


def _info_states(game, max_nodes: int = MAX_NODES) -> list[list[str]]:
    """Every player's information-state strings, in depth-first (preorder) order of the game tree,
    walked with an explicit stack (one state per level); a tree whose size is surely above
    ``max_nodes`` (:func:`probe_tree_size` above 100 times it) is refused before the walk, and
    the walk stops with a ValueError on reaching more than ``max_nodes`` nodes."""
    name = game.get_type().short_name
    probe = probe_tree_size(game, stop=100.0 * max_nodes)
    if probe > 100.0 * max_nodes:
        raise ValueError(f"game {name!r} has about {probe:.3g} or more game-tree nodes (random probes), far more than "
                         f"max_nodes={max_nodes:,}: the adapter enumerates every information state")
    seen = [dict() for _ in range(game.num_players())]
    root = game.new_initial_state()
    stack = [(root, _children(root) if not root.is_terminal() else [], 0)]
    nodes = 1
    while stack:
        state, acts, q = stack[-1]
        if q == 0 and not state.is_terminal() and not state.is_chance_node():
            p = state.current_player()
            seen[p].setdefault(state.information_state_string(p), len(seen[p]))
        if q == len(acts):
            stack.pop()
            continue
        stack[-1] = (state, acts, q + 1)
        child = state.child(acts[q])
        nodes += 1
        if nodes > max_nodes:
            raise ValueError(f"game {name!r} has more than max_nodes={max_nodes:,} game-tree nodes; the adapter "
                             "enumerates every information state (raise max_nodes for a larger game)")
        stack.append((child, _children(child) if not child.is_terminal() else [], 0))
    return [list(d) for d in seen]


class SpielParallelEnv(ParallelEnv):
    """A turn-based, common-payoff OpenSpiel game as a PettingZoo ParallelEnv (module docstring).

    Parameters
    ----------
    game : pyspiel.Game
        Turn-based, with at least two players, small enough to enumerate its information states.
    max_nodes : int
        Largest game tree walked (default :data:`MAX_NODES`).

    Attributes
    ----------
    cooperative : bool
        Whether the game's utility is ``IDENTICAL`` (every player gets the same return). If not,
        each player is paid its own return and samplers need an explicit ``team_reward``.
    utility : str
        OpenSpiel's utility of the game, e.g. ``"identical utility"`` or ``"zero_sum utility"``.
    """

    metadata = {"name": "spiel_parallel_v0", "is_parallelizable": True}

    def __init__(self, game, max_nodes: int = MAX_NODES):
        import pyspiel

        check_game(game)
        max_nodes = check_int("max_nodes", max_nodes, minimum=1)
        self.game = game
        utility = game.get_type().utility
        self.cooperative = utility == pyspiel.GameType.Utility.IDENTICAL
        self.utility = f"{utility.name.lower()} utility"
        n = game.num_players()
        self.possible_agents = [f"player_{p}" for p in range(n)]
        self.info_states = _info_states(game, max_nodes)
        self._ids = [{s: q + 1 for q, s in enumerate(states)} for states in self.info_states]
        self._obs = {a: spaces.Discrete(int(1 + len(self.info_states[p]))) for p, a in enumerate(self.possible_agents)}
        self._act = {a: spaces.Discrete(game.num_distinct_actions()) for a in self.possible_agents}
        self.max_cycles = game.max_game_length()
        self.rng = np.random.default_rng()
        self.spiel_state = None

    def state(self):
        """PettingZoo's global state: the game's history (every action, chance outcomes
        included) as an int64 array. The OpenSpiel state object itself is ``spiel_state``."""
        if self.spiel_state is None:
            raise ValueError("state() needs a running game: call reset() first")
        return np.asarray(self.spiel_state.history(), dtype=np.int64)

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]

    def _resolve_chance(self):
        while self.spiel_state.is_chance_node():
            outcomes = self.spiel_state.chance_outcomes()
            p = np.array([q for _, q in outcomes])
            self.spiel_state.apply_action(outcomes[self.rng.choice(len(outcomes), p=p / p.sum())][0])

    def _observe(self):
        cur = self.spiel_state.current_player()
        return {a: (self._ids[p][self.spiel_state.information_state_string(p)] if p == cur else 0)
                for p, a in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(check_int("seed", seed, minimum=0))
        self.spiel_state = self.game.new_initial_state()
        self._resolve_chance()
        self.agents = list(self.possible_agents)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        """One move of the player to act (the others' actions are ignored). An action that is
        missing, not an integer (floats and bools too) or illegal in this state is refused."""
        if self.spiel_state is None or not self.agents:
            raise ValueError("step() needs a running game: call reset() first")
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict keyed by agent; got {type(actions).__name__}")
        cur = self.spiel_state.current_player()
        name = self.possible_agents[cur]
        if name not in actions:
            raise ValueError(f"actions has no action for {name!r}, the player to move")
        a = actions[name]
        if isinstance(a, bool | np.bool_) or not isinstance(a, numbers.Integral):
            raise ValueError(f"the action of {name!r} must be an integer; got {a!r}")
        legal = self.spiel_state.legal_actions()
        if int(a) not in legal:
            raise ValueError(f"action {int(a)} of {name!r} is illegal here; the legal actions are {legal}")
        self.spiel_state.apply_action(int(a))
        self._resolve_chance()
        agents = list(self.agents)
        done = self.spiel_state.is_terminal()
        returns = self.spiel_state.returns() if done else [0.0] * len(self.possible_agents)
        if self.cooperative:
            rew = {ag: float(returns[0]) for ag in agents}
        else:
            rew = {ag: float(returns[self.possible_agents.index(ag)]) for ag in agents}
        obs = {ag: 0 for ag in agents} if done else self._observe()
        if done:
            self.agents = []
        return (obs, rew, {ag: done for ag in agents}, {ag: False for ag in agents},
                {ag: {} for ag in agents})


def spiel_value(game, tables, info_ids) -> float:
    """Exact expected common return of deterministic tables ``tables[p][id]`` (ids as in the env);
    the game must be sequential with identical utility (:func:`check_game`)."""
    check_game(game, cooperative=True)
    return _value(game, tables, info_ids)


def _value(game, tables, info_ids) -> float:
    """:func:`spiel_value` without the game's check (the exhaustive search checks it once)."""

    def walk(state, prob):
        if state.is_terminal():
            return prob * state.returns()[0]
        if state.is_chance_node():
            return sum(walk(state.child(a), prob * q) for a, q in state.chance_outcomes())
        p = state.current_player()
        a = int(tables[p][info_ids[p][state.information_state_string(p)]])
        return walk(state.child(a), prob)

    return float(walk(game.new_initial_state(), 1.0))


def best_deterministic_spiel(game, max_policies: int | None = None):
    """Exhaustive search over deterministic tables: ``(best value, tables, number of policies)``.

    The game must be sequential with identical utility (:func:`check_game`); ``max_policies``
    (default ``Settings.max_policies``) bounds the number of tables, checked before the search.
    """
    check_game(game, cooperative=True)
    max_policies = check_int("max_policies", current().max_policies if max_policies is None else max_policies,
                             minimum=1)
    env = SpielParallelEnv(game)
    A = game.num_distinct_actions()
    sizes = [len(s) for s in env.info_states]
    count = A ** sum(sizes)
    if count > max_policies:
        raise ValueError(f"{count:,} deterministic policies exceed max_policies={max_policies:,}")
    best, best_tables = -np.inf, None
    for flat in itertools.product(range(A), repeat=sum(sizes)):
        tables, off = [], 0
        for sz in sizes:
            tables.append((0,) + flat[off:off + sz])  # id 0 (waiting) never acts
            off += sz
        v = _value(game, tables, env._ids)
        if v > best + 1e-12:
            best, best_tables = v, tables
    return best, best_tables, count
