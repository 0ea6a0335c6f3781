"""Bad input gets a ValueError naming the culprit, checked before any large allocation or
enumeration: regression tests for the defects of the fuzz campaign (issue 11), by number."""

import time

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, two_state


def test_1_from_dense_checks_R_against_P():
    P = np.full((2, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"R must have shape \(N, J\) = \(2, 2\) to match P of shape \(2, 2, 2\); "
                                         r"got shape \(4, 1\)"):
        mk.JointMDP.from_dense(P, np.zeros((4, 1)), [np.zeros(2, int)], [2], [1, 0], 0.9)


def test_2_joint_action_count_never_overflows():
    with pytest.raises(ValueError, match=r"R has 4 joint actions per state but n_actions=.* "
                                         r"gives 18446744073709551616"):
        mk.JointMDP.from_dense(np.full((2, 4, 2), 0.5), np.zeros((2, 4)), [np.zeros(2, int)] * 64, [2] * 64,
                               [1, 0], 0.9)


def test_3_the_budget_cannot_be_bypassed_through_a_cache():
    mdp = grid_coordination.build_mdp(slip=0.1, observation="position")
    pol = mk.Policy.uniform(mdp)
    for budget in (1000, 2000, 1000):
        with pytest.raises(ValueError, match=f"over the budget max_path_steps={budget:,}"):
            mk.value(mdp, pol, 4, max_path_steps=budget)


def test_4_huge_windows_are_bounded_or_refused_at_once():
    mdp = two_state.build_mdp()
    pol = mk.Policy.from_arrays(mdp, [np.array([[0.5, 0.5]])])
    # a window longer than any visit pattern: one draw for ever, J_k = (5 + 9) / 2
    assert mk.value(mdp, pol, 10**5) == pytest.approx(7.0, abs=1e-9)
    for k in (10**9, 10**12):
        t = time.perf_counter()
        with pytest.raises(ValueError, match=f"k={k} needs a .* MiB walk stack"):
            mk.value(mdp, pol, k)
        assert time.perf_counter() - t < 5  # refused from sizes alone (measured: under a millisecond)
    with pytest.raises(ValueError, match=r"needs more than 100 path steps per pass"):
        mk.value(mdp, pol, 10**4, max_path_steps=100)  # N k > budget: refused before walking
