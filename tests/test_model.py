"""JointMDP construction and every validation message."""

import numpy as np
import pytest

import marl_kstep as mk


def tiny(**over):
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, 1, 1] = P[1, 0, 0] = 1.0
    args = dict(P=P, R=np.array([[0.5, 0.0], [0.0, 1.0]]), obs=[np.array([0, 0])],
                n_actions=[2], mu=[1.0, 0.0], gamma=0.9)
    args.update(over)
    return args


def test_dense_and_sparse_constructions_agree():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(3), size=(3, 4))
    P[P < 0.2] = 0
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(3, 4))
    obs = [np.array([0, 1, 1]), np.array([0, 0, 1])]
    a = mk.JointMDP.from_dense(P, R, obs, (2, 2), [0.2, 0.3, 0.5], 0.8)
    flat = P.reshape(12, 3)
    indptr = np.concatenate([[0], np.cumsum((flat > 0).sum(1))])
    rows, cols = np.nonzero(flat)
    b = mk.JointMDP.from_sparse(indptr, cols, flat[rows, cols], R, obs, (2, 2), [0.2, 0.3, 0.5], 0.8)
    np.testing.assert_array_equal(a.to_dense(), P)
    np.testing.assert_array_equal(b.to_dense(), P)
    pol = mk.Policy.random(a, seed=4)
    assert mk.value(a, pol, 2) == pytest.approx(mk.value(b, pol, 2), abs=1e-12)


def test_joint_index_is_mixed_radix_agent0_most_significant():
    P = np.ones((1, 12, 1))
    mdp = mk.JointMDP.from_dense(P, np.zeros((1, 12)), [[0]] * 3, (2, 3, 2), [1.0], 0.5)
    assert mdp.joint_index([1, 2, 1]) == (1 * 3 + 2) * 2 + 1 == 11
    assert mdp.joint_index([0, 1, 0]) == 2
    np.testing.assert_array_equal(mdp.joint_actions()[7], [1, 0, 1])
    np.testing.assert_array_equal(mdp.action_strides, [6, 2, 1])
    with pytest.raises(ValueError, match=r"actions\[1\] = 3 is out of range for agent 1"):
        mdp.joint_index([0, 3, 0])


def test_arrays_are_read_only():
    mdp = mk.JointMDP.from_dense(**tiny())
    with pytest.raises(ValueError):
        mdp.rewards[0, 0] = 3.0


@pytest.mark.parametrize(
    "over,msg",
    [
        (dict(gamma=1.0), r"gamma must lie in \[0, 1\); got gamma=1.0"),
        (dict(gamma=-0.1), r"gamma must lie in \[0, 1\); got gamma=-0.1"),
        (dict(mu=[0.5, 0.6]), r"mu must sum to 1 .* sums to 1.1"),
        (dict(mu=[1.5, -0.5]), r"mu\[1\] = -0.5 is not a probability"),
        (dict(mu=[1.0]), r"mu must have shape \(2,\)"),
        (dict(obs=[np.array([0, 2])], n_obs=[2]), r"obs\[0\]\[1\] = 2 is out of range for agent 0"),
        (dict(obs=[np.array([0, -1])]), r"obs\[0\]\[1\] = -1 is out of range"),
        (dict(obs=[np.array([0, 0, 0])]), r"obs\[0\] must have shape \(2,\)"),
        (dict(obs=[np.array([0, 0])] * 2), r"obs must hold one observation map per agent \(1\)"),
        (dict(n_actions=[3]), r"R has 2 joint actions per state but n_actions=\(3,\) gives 3"),
        (dict(n_actions=[0]), r"n_actions\[0\] must be >= 1; got 0"),
        (dict(R=np.array([[0.5, np.nan], [0.0, 1.0]])), r"R\[0, 1\] = nan is not a finite reward"),
        (dict(P=np.zeros((2, 2, 3))), r"P must have shape \(N, J, N\)"),
    ],
)
def test_validation_messages(over, msg):
    with pytest.raises(ValueError, match=msg):
        mk.JointMDP.from_dense(**tiny(**over))


def test_transition_row_sum_and_negative_probability_messages():
    P = tiny()["P"].copy()
    P[1, 0, 1] = 0.1
    with pytest.raises(ValueError, match=r"transition row P\[1, 0, :\] sums to 1.1"):
        mk.JointMDP.from_dense(**tiny(P=P))
    P = tiny()["P"].copy()
    P[0, 1, 0] = -0.5
    P[0, 1, 1] = 1.5
    with pytest.raises(ValueError, match=r"P\[0, 1, 0\] = -0.5 is not a probability"):
        mk.JointMDP.from_dense(**tiny(P=P))
    P = tiny()["P"].copy()
    P[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"P\[0, 1, 0\] = nan is not a probability"):
        mk.JointMDP.from_dense(**tiny(P=P))


def test_sparse_constructor_messages():
    R = np.zeros((2, 2))
    obs = [np.array([0, 0])]
    with pytest.raises(ValueError, match=r"successor index 5 of \(s=0, j=1\) is out of range 0..1"):
        mk.JointMDP.from_sparse([0, 1, 2, 3, 4], [0, 5, 1, 1], [1, 1, 1, 1], R, obs, [2], [1, 0], 0.9)
    with pytest.raises(ValueError, match=r"indptr must have shape \(5,\)"):
        mk.JointMDP.from_sparse([0, 1, 2], [0, 1], [1, 1], R, obs, [2], [1, 0], 0.9)
    with pytest.raises(ValueError, match=r"P\[1, 0, 1\] = -1.0 is not a probability"):
        mk.JointMDP.from_sparse([0, 1, 2, 4, 5], [0, 1, 0, 1, 1], [1, 1, 2, -1, 1], R, obs, [2], [1, 0], 0.9)


def test_duplicate_successors_are_merged():
    R = np.zeros((2, 2))
    obs = [np.array([0, 0])]
    mdp = mk.JointMDP.from_sparse([0, 2, 3, 4, 5], [1, 1, 1, 0, 1], [0.25, 0.75, 1, 1, 1], R, obs,
                                  [2], [1, 0], 0.9)
    assert mdp.to_dense()[0, 0, 1] == 1.0
    assert mdp.probs.size == 4
