"""Exhaustive deterministic search against plain enumeration."""

import itertools

import numpy as np
import pytest
from helpers import ordinary, small_mdps
from hypothesis import given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.envs import number_matching, two_state
from marl_kstep.search import count_deterministic


@settings(max_examples=30, deadline=None)
@given(mdp=small_mdps(max_states=5))
def test_best_deterministic_equals_brute_force(mdp):
    best = -np.inf
    for tables in itertools.product(*[itertools.product(range(a), repeat=o)
                                      for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)]):
        pol = mk.Policy.deterministic(mdp, [list(t) for t in tables])
        best = max(best, ordinary(mdp, pol.theta)[0])
    val, pol = mk.best_deterministic(mdp)
    assert val == pytest.approx(best, abs=1e-9)
    assert ordinary(mdp, pol.theta)[0] == pytest.approx(val, abs=1e-9)


def test_reference_optima():
    assert mk.best_deterministic(two_state.build_mdp())[0] == pytest.approx(9.0, abs=1e-12)
    val, pol = mk.best_deterministic(number_matching.build_mdp(start="far"))
    assert val == pytest.approx(6.477, abs=1e-12)
    # one agent increments on mismatch, the other keeps; both keep on match
    tables = [list(t) for t in pol.greedy_tables()]
    assert sorted(map(tuple, tables)) == [(0, 0), (1, 0)]


def test_sparse_path_for_larger_state_spaces_agrees():
    mdp = number_matching.build_mdp(observation="match", start="uniform")
    dense = mk.best_deterministic(mdp)[0]
    with mk.configure(dense_search_max_states=0):
        assert mk.best_deterministic(mdp)[0] == pytest.approx(dense, abs=1e-10)


def test_refuses_too_many_policies():
    mdp = number_matching.build_mdp(n_agents=3, observation="own")
    assert count_deterministic(mdp) == 2**18
    with pytest.raises(ValueError, match=r"needs 262,144 deterministic joint tables.*max_policies=1,000"):
        mk.best_deterministic(mdp, max_policies=1000)


@settings(max_examples=25, deadline=None)
@given(mdp=small_mdps(max_states=5), seed=st.integers(0, 10**6))
def test_best_response_equals_brute_force(mdp, seed):
    others = mk.Policy.random(mdp, seed=seed)
    i = seed % mdp.n_agents
    best = -np.inf
    for table in itertools.product(range(mdp.n_actions[i]), repeat=mdp.n_obs[i]):
        theta = [t.copy() for t in others.theta]
        theta[i] = np.eye(mdp.n_actions[i])[list(table)]
        best = max(best, ordinary(mdp, theta)[0])
    val, table = mk.best_response(mdp, others, i)
    assert val == pytest.approx(best, abs=1e-9)
    theta = [t.copy() for t in others.theta]
    theta[i] = np.eye(mdp.n_actions[i])[table]
    assert ordinary(mdp, theta)[0] == pytest.approx(val, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(mdp=small_mdps(max_states=5))
def test_alternating_best_response_ends_at_a_deterministic_equilibrium(mdp):
    val, pol, rounds = mk.alternating_best_response(mdp, rounds=50)
    assert pol.is_deterministic()
    assert mk.value(mdp, pol) == pytest.approx(val, abs=1e-9)
    assert val <= mk.best_deterministic(mdp)[0] + 1e-9
    if rounds < 50:  # converged: nobody can improve alone
        for i in range(mdp.n_agents):
            assert mk.best_response(mdp, pol, i)[0] <= val + 1e-9
