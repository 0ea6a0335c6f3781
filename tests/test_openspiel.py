"""OpenSpiel's tiny Hanabi suite through SpielParallelEnv: exact optima and unbiased sampled gradients."""

from __future__ import annotations

import numpy as np
import pytest

import marl_kstep as mk

pyspiel = pytest.importorskip("pyspiel")
from marl_kstep.envs.openspiel import (  # noqa: E402
    TINY_HANABI_PAYOFFS,
    SpielParallelEnv,
    best_deterministic_spiel,
    tiny_hanabi_game,
)

#: Optimal expected payoffs of the six games (Sokota et al. 2021, "Solving common-payoff games with
#: approximate policy iteration", table of the tiny Hanabi suite).
PUBLISHED_OPTIMA = {"A": 2.25, "B": 1.0, "C": 2.5, "D": 2.5, "E": 10.0, "F": 2 + 1 / 3}


@pytest.mark.parametrize("variant", sorted(TINY_HANABI_PAYOFFS))
def test_exhaustive_optimum_matches_the_published_one(variant):
    best, tables, count = best_deterministic_spiel(tiny_hanabi_game(variant))
    assert best == pytest.approx(PUBLISHED_OPTIMA[variant], abs=1e-12)
    cards, actions = TINY_HANABI_PAYOFFS[variant][0]
    assert count == actions ** (cards + cards * actions)


def mixed_value(game, theta, env):
    """Exact expected payoff of mixed tables theta[p][id, a], by a walk of the game tree."""

    def walk(state):
        if state.is_terminal():
            return state.returns()[0]
        if state.is_chance_node():
            return sum(q * walk(state.child(a)) for a, q in state.chance_outcomes())
        p = state.current_player()
        row = theta[p][env._ids[p][state.information_state_string(p)]]
        return sum(row[a] * walk(state.child(a)) for a in state.legal_actions() if row[a] > 0)

    return walk(game.new_initial_state())


@pytest.mark.parametrize("variant,k", [("A", 1), ("E", 2), ("F", 1)])
def test_sampled_estimate_matches_the_exact_value_and_gradient(variant, k):
    game = tiny_hanabi_game(variant)
    env = SpielParallelEnv(game)
    gamma = 0.9
    est = mk.SampledKStep(env, k, gamma=gamma, episodes=4000, seed=1)
    pol = mk.Policy.random(est, 3, concentration=3.0)
    e = est.estimate(pol)
    theta = [t.copy() for t in pol.theta]
    # the payoff is paid on the second move (t = 1), so J = gamma * E[payoff]
    J = gamma * mixed_value(game, theta, env)
    assert abs(e.J_k - J) <= 4.5 * e.J_k_se
    # every slot is visited at most once per game, so the value is linear in each entry: an exact difference
    for p, g in enumerate(e.grad):
        exact = np.zeros_like(g)
        for o in range(g.shape[0]):
            for a in range(g.shape[1]):
                up = [t.copy() for t in theta]
                up[p][o, a] += 1.0
                exact[o, a] = gamma * (mixed_value(game, up, env) - mixed_value(game, theta, env))
        c = exact - exact.mean(axis=1, keepdims=True)
        se = e.grad_se[p]
        ok = se > 0
        np.testing.assert_allclose((g - c)[~ok], 0.0, atol=1e-9)
        assert np.all(np.abs((g - c)[ok]) <= 4.5 * se[ok])
