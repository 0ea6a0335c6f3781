"""Exact lumping (bisimulation quotient) of the joint MDP and the kernel on the quotient."""

import numpy as np
import pytest
from helpers import naive_lumping, path_formula, random_thetas, small_mdps, split_mdps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, number_matching, two_state

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blocks_of(lumping):
    out = {}
    for s, b in enumerate(lumping.block.tolist()):
        out.setdefault(b, []).append(s)
    return sorted(out.values())


@SETTINGS
@given(mdp=small_mdps())
def test_lumping_equals_naive_refinement(mdp):
    expected, _ = naive_lumping(mdp)
    assert blocks_of(mk.lump(mdp)) == expected


@SETTINGS
@given(data=split_mdps())
def test_split_twins_are_lumped_back_and_match_naive(data):
    base, split, twin_of = data
    lumping = mk.lump(split)
    # twins are never told apart, so there are at most as many blocks as base states
    assert lumping.n_blocks <= base.n_states
    for t1 in range(split.n_states):
        for t2 in range(split.n_states):
            if twin_of[t1] == twin_of[t2]:
                assert lumping.block[t1] == lumping.block[t2]
    assert blocks_of(lumping) == naive_lumping(split)[0]


@SETTINGS
@given(data=split_mdps(), k=st.integers(1, 3), seed=st.integers(0, 10**6), on_simplex=st.booleans())
def test_kernel_on_quotient_equals_full_model_and_base(data, k, seed, on_simplex):
    base, split, twin_of = data
    rng = np.random.default_rng(seed)
    th = random_thetas(split, seed) if on_simplex else [
        rng.uniform(-1, 2, size=(o, a)) for o, a in zip(split.n_obs, split.n_actions, strict=True)
    ]
    pol = mk.Policy.from_arrays(split, th, check_simplex=on_simplex)
    J1, g1, V1 = mk.values_and_grad(split, pol, k, lump=True)
    J0, g0, V0 = mk.values_and_grad(split, pol, k, lump=False)
    scale = 1.0 + np.abs(V0).max()
    assert J1 == pytest.approx(J0, rel=1e-11, abs=1e-11 * scale)
    np.testing.assert_allclose(V1, V0, rtol=1e-11, atol=1e-11 * scale)
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * scale)
    # the split model's values are the base model's, state by twin (independent recursion)
    _, Vb = path_formula(base, th, k)
    np.testing.assert_allclose(V1, Vb[twin_of], rtol=1e-10, atol=1e-10 * scale)


@SETTINGS
@given(mdp=small_mdps(), k=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_lumped_states_are_indistinguishable(mdp, k, seed):
    """Bisimulation property, checked on the dense model: same observations, rewards and
    block probabilities within a block; and V_k (from plain recursion) constant on blocks."""
    lumping = mk.lump(mdp)
    P = mdp.to_dense()
    B = np.eye(lumping.n_blocks)[lumping.block]  # (N, n_blocks) indicator
    PB = P @ B
    for members in blocks_of(lumping):
        s0 = members[0]
        for s in members[1:]:
            assert all(o[s] == o[s0] for o in mdp.obs)
            np.testing.assert_array_equal(mdp.rewards[s], mdp.rewards[s0])
            np.testing.assert_allclose(PB[s], PB[s0], rtol=0, atol=1e-15)
    _, V = path_formula(mdp, random_thetas(mdp, seed), k)
    for members in blocks_of(lumping):
        np.testing.assert_allclose(V[members], V[members[0]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,m", [(2, 6), (3, 6), (3, 4), (4, 3)])
def test_number_matching_lumps_to_differences(n, m):
    """Rewards and `match` observations depend only on the differences x_{i+1} - x_i, and
    increments move the differences alike: m^(n-1) blocks, values equal to the full model."""
    mdp = number_matching.build_mdp(n_agents=n, n_numbers=m, observation="match")
    lumping = mk.lump(mdp)
    assert lumping.n_blocks == m ** (n - 1)
    q = lumping.quotient
    assert q.mu.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(q.mu, np.bincount(lumping.block, weights=mdp.mu))
    pol = mk.Policy.random(mdp, seed=n * m)
    for k in (1, 2, 3):
        J1, g1 = mk.value_and_grad(mdp, pol, k)
        J0, g0 = mk.value_and_grad(mdp, pol, k, lump=False)
        assert J1 == pytest.approx(J0, rel=1e-12)
        for a, b in zip(g1, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_models_without_twins_are_left_alone():
    for mdp in (two_state.build_mdp(), grid_coordination.build_mdp(observation="position")):
        lumping = mk.lump(mdp)
        assert lumping.is_trivial and lumping.quotient is mdp
        np.testing.assert_array_equal(lumping.block, np.arange(mdp.n_states))


def test_own_observations_break_the_symmetry():
    """With `own` observations every agent sees its number, so no two states are twins."""
    mdp = number_matching.build_mdp(n_agents=2, n_numbers=4, observation="own")
    assert mk.lump(mdp).is_trivial


def test_rounding_differences_are_never_lumped():
    """Block probabilities 0.1 + 0.2 and 0.3 differ in the last bit: the states stay apart."""
    P = np.zeros((4, 1, 4))
    P[0, 0, [2, 3]] = [0.1, 0.2]
    P[0, 0, 0] = 0.7
    P[1, 0, 2] = 0.3
    P[1, 0, 1] = 0.7
    P[2, 0, 2] = P[3, 0, 3] = 1.0
    R = np.array([[1.0], [1.0], [0.0], [0.0]])
    mdp = mk.JointMDP.from_dense(P, R, [np.array([0, 0, 1, 1])], [1], np.full(4, 0.25), 0.9)
    assert 0.1 + 0.2 != 0.3
    assert mk.lump(mdp).block.tolist() == [0, 1, 2, 2]


def test_the_budget_applies_to_the_quotient():
    mdp = number_matching.build_mdp(n_agents=3, n_numbers=6, observation="match")
    pol = mk.Policy.uniform(mdp)
    full = mk.estimate_path_steps(mdp, 2)
    quotient = mk.estimate_path_steps(mk.lump(mdp).quotient, 2)
    assert quotient * 6 == full  # 216 states against 36, the same branching
    mk.value(mdp, pol, 2, max_path_steps=quotient)
    with pytest.raises(ValueError, match="max_path_steps"):
        mk.value(mdp, pol, 2, max_path_steps=quotient, lump=False)
