r"""A small PettingZoo ``ParallelEnv`` over OpenSpiel's turn-based common-payoff games.

Written for the tiny Hanabi suite (OpenSpiel's ``tiny_hanabi``; Foerster et al. 2019, the six
payoff variants A--F of Sokota et al. 2021), and usable for any small turn-based OpenSpiel game
in which every player receives the same return. Needs the optional extra ``open_spiel``
(``pip install marl_kstep[games]``).

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

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

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


def _info_states(game) -> list[list[str]]:
    """Every player's information-state strings, in depth-first order of the game tree."""
    seen = [dict() for _ in range(game.num_players())]

    def walk(state):
        if state.is_terminal():
            return
        if state.is_chance_node():
            for a, _ in state.chance_outcomes():
                walk(state.child(a))
            return
        p = state.current_player()
        seen[p].setdefault(state.information_state_string(p), len(seen[p]))
        for a in state.legal_actions():
            walk(state.child(a))

    walk(game.new_initial_state())
    return [list(d) for d in seen]


class SpielParallelEnv(ParallelEnv):
    """A turn-based, common-payoff OpenSpiel game as a PettingZoo ParallelEnv (module docstring).

    Parameters
    ----------
    game : pyspiel.Game
        Turn-based, small enough to enumerate its information states.
    """

    metadata = {"name": "spiel_parallel_v0", "is_parallelizable": True}

    def __init__(self, game):
        self.game = game
        n = game.num_players()
        self.possible_agents = [f"player_{p}" for p in range(n)]
        self.info_states = _info_states(game)
        self._ids = [{s: q + 1 for q, s in enumerate(states)} for states in self.info_states]
        self._obs = {a: spaces.Discrete(int(1 + len(self.info_states[p]))) for p, a in enumerate(self.possible_agents)}
        self._act = {a: spaces.Discrete(game.num_distinct_actions()) for a in self.possible_agents}
        self.max_cycles = game.max_game_length()
        self.rng = np.random.default_rng()
        self.state = None

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]

    def _resolve_chance(self):
        while self.state.is_chance_node():
            outcomes = self.state.chance_outcomes()
            p = np.array([q for _, q in outcomes])
            self.state.apply_action(outcomes[self.rng.choice(len(outcomes), p=p / p.sum())][0])

    def _observe(self):
        cur = self.state.current_player()
        return {a: (self._ids[p][self.state.information_state_string(p)] if p == cur else 0)
                for p, a in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.state = self.game.new_initial_state()
        self._resolve_chance()
        self.agents = list(self.possible_agents)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        cur = self.state.current_player()
        a = int(actions[self.possible_agents[cur]])
        legal = self.state.legal_actions()
        if a not in legal:
            # an illegal move is replaced by the first legal one (tiny_hanabi has none: every action is legal)
            a = legal[0]
        self.state.apply_action(a)
        self._resolve_chance()
        agents = list(self.agents)
        done = self.state.is_terminal()
        r = float(self.state.returns()[0]) if done else 0.0
        obs = {ag: 0 for ag in agents} if done else self._observe()
        if done:
            self.agents = []
        return (obs, {ag: r for ag in agents}, {ag: done for ag in agents}, {ag: False for ag in agents},
                {ag: {} for ag in agents})


def spiel_value(game, tables, info_ids) -> float:
    """Exact expected common return of deterministic tables ``tables[p][id]`` (ids as in the env)."""

    def walk(state, prob):
        if state.is_terminal():
            return prob * state.returns()[0]
        if state.is_chance_node():
            return sum(walk(state.child(a), prob * q) for a, q in state.chance_outcomes())
        p = state.current_player()
        a = int(tables[p][info_ids[p][state.information_state_string(p)]])
        return walk(state.child(a), prob)

    return float(walk(game.new_initial_state(), 1.0))


def best_deterministic_spiel(game, max_policies: int = 10**6):
    """Exhaustive search over deterministic tables: ``(best value, tables, number of policies)``."""
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
        v = spiel_value(game, tables, env._ids)
        if v > best + 1e-12:
            best, best_tables = v, tables
    return best, best_tables, count
