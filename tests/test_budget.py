"""All work is bounded: every stage of an exact call is refused up front, or stops after a
bounded amount of work, unless the user allowed more (issue: "no call runs for minutes
without having been allowed to")."""

from __future__ import annotations

import time

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, number_matching, two_state
from marl_kstep.estimators._linalg import iteration_cap

OPEN6 = "\n".join(["########"] + ["#......#"] * 5 + ["#.....G#", "########"])


def fast(fn, seconds=2.0):
    t = time.perf_counter()
    fn()
    assert time.perf_counter() - t < seconds


def test_huge_windows_are_refused_before_walking():
    mdp = two_state.build_mdp()
    pol = mk.Policy.uniform(mdp)
    for k in (10**12, 10**7):
        with pytest.raises(ValueError, match=f"k={k} needs a [\\d,]+ MiB walk stack"):
            fast(lambda k=k: mk.value(mdp, pol, k=k))
    # every start state walks at least k steps: N k over the budget is refused without walking
    with mk.configure(max_path_steps=10**6), pytest.raises(ValueError, match="k=600000 path enumeration on 2 states"):
        fast(lambda: mk.value(mdp, pol, k=600_000))
    # a long window that is allowed is walked in bounded time: 2 states, one observation
    assert np.isfinite(mk.value(mdp, pol, k=5000))


def test_many_start_states_count_in_the_budget():
    mdp = number_matching.build_mdp(n_agents=4, n_numbers=8)  # 4,096 states, 16 joint actions
    pol = mk.Policy.uniform(mdp)
    with mk.configure(max_path_steps=4096 * 16 - 1, lump=False), pytest.raises(ValueError, match="k=1 path"):
        fast(lambda: mk.value(mdp, pol, k=1))
    with mk.configure(max_path_steps=4096 * 16, lump=False):
        assert mk.ExactKStep(mdp, 1).plan.path_steps == 4096 * 16


def test_solver_iterations_are_capped_and_large_fallbacks_refused():
    mdp = grid_coordination.build_mdp(layout=OPEN6, observation="position", starts=[None, None])  # 1296 states
    pol = mk.Policy.uniform(mdp)
    est = mk.ExactKStep(mdp, 1)
    # a residual below rounding is never reached: BiCGSTAB stops at its cap, and the sparse LU fallback
    # is refused for a system over the limit
    with mk.configure(iter_rtol=1e-30, direct_fallback_max_states=1000), pytest.raises(
            ValueError, match=r"1,296-state system .* did not reach the relative residual 1e-30 within [\d,]+ "
                              r"iterations, and the system is larger than Settings.direct_fallback_max_states=1,000"):
        fast(lambda: mk.ExactKStep(mdp, 1).value(pol), seconds=10)
    # under the limit the fallback answers, equal to the iterative answer
    with mk.configure(iter_rtol=1e-30):
        assert mk.ExactKStep(mdp, 1).value(pol) == pytest.approx(est.value(pol), rel=1e-11)


def test_iteration_cap_follows_the_contraction():
    # M = q I on 3 states: Neumann needs log(rtol (1 - q)) / log q terms
    ptr, idx = np.arange(4), np.arange(3)
    for q, rtol in ((0.5, 1e-13), (0.95, 1e-13), (0.999, 1e-10)):
        t = int(np.ceil(np.log(rtol * (1 - q)) / np.log(q)))
        cap = iteration_cap((ptr, idx, np.full(3, q)), rtol)
        assert cap == min(30, max(100, 2 * t))
    big = 10**5
    ptr, idx = np.arange(big + 1), np.arange(big)
    assert iteration_cap((ptr, idx, np.full(big, 0.95)), 1e-13) == 2 * int(np.ceil(np.log(1e-13 * 0.05)
                                                                                    / np.log(0.95)))
    assert iteration_cap((ptr, idx, np.full(big, 1.5)), 1e-13) == 10 * big  # off the simplex
