"""The array-built scenario protocol (``envs/vectorised.py``) against the per-state one.

Every built-in scenario is compiled both ways and the two JointMDPs must be identical, array
by array and bit by bit (same state order, same sums in the same order); a model written
here, with repeated and zero-probability outcomes, checks the protocol itself; the memory
estimate refuses before anything large is allocated."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.envs import compile_model
from marl_kstep.envs.aggregated_chain import AggregatedChainModel
from marl_kstep.envs.base import ScenarioModel
from marl_kstep.envs.grid_coordination import TRAP_CONFIG, GridCoordinationModel
from marl_kstep.envs.number_matching import NumberMatchingModel
from marl_kstep.envs.two_state import TwoStateModel
from marl_kstep.envs.vectorised import VectorisedModel, array_build_bytes

ROOM = "#####\n#...#\n#..G#\n#####"
HOLE = "#####\n#.#.#\n#..G#\n#####"

MODELS = [
    ("two_state", lambda: TwoStateModel()),
    ("two_state c=0.3 g=0.5", lambda: TwoStateModel(0.3, 0.5)),
    ("chain L=7", lambda: AggregatedChainModel(length=7, small_reward=0.1)),
    ("nm n=2 m=6", lambda: NumberMatchingModel()),
    ("nm n=3 m=5 far", lambda: NumberMatchingModel(3, 5, start="far")),
    ("nm n=3 m=4 own cost 0.1", lambda: NumberMatchingModel(3, 4, move_cost=0.1, observation="own")),
    ("nm n=1 m=3", lambda: NumberMatchingModel(1, 3)),
    ("grid default", lambda: GridCoordinationModel()),
    ("grid trap", lambda: GridCoordinationModel(**TRAP_CONFIG)),
    ("grid slip", lambda: GridCoordinationModel(slip=0.1)),
    ("grid blocked", lambda: GridCoordinationModel(collisions="blocked")),
    ("grid blocked slip", lambda: GridCoordinationModel(collisions="blocked", slip=0.2, starts=[None, None])),
    ("grid 3 agents blocked", lambda: GridCoordinationModel(ROOM, 3, collisions="blocked", move_cost=0.1,
                                                            decoys=[(1, 1)])),
    ("grid 3 agents position slip", lambda: GridCoordinationModel(HOLE, 3, observation="position", slip=0.05)),
    ("grid 1 agent", lambda: GridCoordinationModel(ROOM, 1, starts=[(1, 1)])),
]


def assert_identical(a: mk.JointMDP, b: mk.JointMDP):
    for field in ("n_actions", "n_obs", "gamma", "state_names", "action_names", "obs_names"):
        assert getattr(a, field) == getattr(b, field), field
    for field in ("indptr", "indices", "probs", "rewards", "mu"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        assert x.tobytes() == y.tobytes(), field  # bit for bit
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.obs, b.obs, strict=True))


@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
def test_both_builds_give_identical_models(name, make):
    model = make()
    assert isinstance(model, VectorisedModel)
    a, states_a = compile_model(model, vectorised=True)
    b, states_b = compile_model(model, vectorised=False)
    assert_identical(a, b)
    assert list(states_a) == list(states_b)
    assert [model.encode(s) for s in states_b] == states_a.codes.tolist()
    assert all(model.decode(model.encode(s)) == s for s in states_b)
    # the default build is the array one
    assert_identical(compile_model(model)[0], a)


def test_array_build_is_not_python_per_state():
    # 3 agents on an open 5x5 room: 15,625 states x 125 joint actions
    layout = "\n".join(["#######"] + ["#.....#"] * 4 + ["#....G#", "#######"])
    model = GridCoordinationModel(layout, 3, starts=[None] * 3)
    t = time.perf_counter()
    a, _ = compile_model(model)
    t_arrays = time.perf_counter() - t
    assert a.n_states == 15_625 and a.probs.size == 15_625 * 125
    assert a.state_names is None  # more than STATE_NAMES_MAX states: no Python string per state
    # 1.95 M pairs: the per-state build takes 10-40 s here; the array build well under 5 s
    assert t_arrays < 5.0


class Coin(ScenarioModel, VectorisedModel):
    """A model written here: a counter 0..3; action 1 flips a biased coin with outcomes listed
    twice and a zero-probability outcome, to pin the merge order and the zero rule."""

    n_actions = (2,)
    n_obs = (2,)
    gamma = 0.9

    def initial_distribution(self):
        return [(2, 0.25), (0, 0.75)]

    def transitions(self, s, a):
        if a[0] == 0:
            return [(s, 1.0)]
        return [((s + 1) % 4, 0.1), ((s + 3) % 4, 0.0), ((s + 1) % 4, 0.2), (s, 0.7)]

    def reward(self, s, a):
        return float(s == 3) - 0.1 * a[0]

    def observe(self, s, i):
        return s % 2

    def estimate_states(self):
        return 4

    def code_space(self):
        return 4

    def outcomes(self):
        return 4

    def encode(self, s):
        return s

    def decode(self, c):
        return int(c)

    def initial_codes(self):
        return np.array([2, 0]), np.array([0.25, 0.75])

    def step_arrays(self, codes, joint):
        B = codes.size
        move = joint == 1
        succ = np.stack([(codes + move) % 4, (codes + 3) % 4, (codes + move) % 4, codes], axis=1)
        prob = np.where(move[:, None], [0.1, 0.0, 0.2, 0.7], [1.0, 0.0, 0.0, 0.0])
        return succ, prob.reshape(B, 4), (codes == 3) - 0.1 * joint

    def observe_arrays(self, codes):
        return (codes % 2)[None, :]


def test_protocol_merges_repeats_in_list_order_and_ignores_zeros():
    a, states = compile_model(Coin(), vectorised=True)
    b, _ = compile_model(Coin(), vectorised=False)
    assert_identical(a, b)
    assert list(states) == [2, 0, 3, 1]  # BFS: starts in list order, then successors in order
    P = a.to_dense()
    assert P[0, 1, 2] == 0.1 + 0.2 and P[0, 1, 0] == 0.7  # state 2 -> 3 (index 2), stays (index 0)
    assert np.count_nonzero(P[:, 1, :]) == 8  # the zero-probability outcome is never stored


def test_estimate_refuses_before_allocating():
    model = NumberMatchingModel(9, 10)  # 10**9 states: about 2.4 TB
    need = array_build_bytes(10**9, 2**9, 1, 10**9, 9)
    assert need > 2**40
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"\(1,000,000,000 joint states, 512 joint actions\) would take about "
                                         rf"{need / 2**30:,.2f} GiB"):
        compile_model(model)
    assert time.perf_counter() - t < 1.0
    # the limit follows the setting, and the estimate is an upper bound of what is used
    small = NumberMatchingModel(3, 6)
    est = array_build_bytes(216, 8, 1, 216, 3)
    with mk.configure(max_model_bytes=est - 1), pytest.raises(ValueError, match="max_model_bytes"):
        compile_model(small)
    with mk.configure(max_model_bytes=est):
        mdp = compile_model(small)[0]
    used = sum(x.nbytes for x in (mdp.indptr, mdp.indices, mdp.probs, mdp.rewards, mdp.mu, *mdp.obs))
    assert used < est and math.prod(mdp.n_actions) == 8


def test_vectorised_needs_the_protocol():
    class Plain(ScenarioModel):
        n_actions, n_obs, gamma = (1,), (1,), 0.5

        def initial_distribution(self):
            return [(0, 1.0)]

        def transitions(self, s, a):
            return [(0, 1.0)]

        def reward(self, s, a):
            return 1.0

        def observe(self, s, i):
            return 0

        def estimate_states(self):
            return 1

    assert compile_model(Plain())[0].n_states == 1
    with pytest.raises(ValueError, match="vectorised=True needs a model implementing VectorisedModel; Plain"):
        compile_model(Plain(), vectorised=True)


class BadCoin(Coin):
    def __init__(self, fault):
        self.fault = fault

    def step_arrays(self, codes, joint):
        succ, prob, rew = super().step_arrays(codes, joint)
        if self.fault == "nan":
            prob = prob.copy()
            prob[codes == 3, 1] = np.nan
        elif self.fault == "code":
            succ = np.where(succ == 3, 7, succ)
        elif self.fault == "shape":
            rew = rew[:-1]
        return succ, prob, rew


@pytest.mark.parametrize("fault,message", [
    ("nan", r"BadCoin.step_arrays gave probability nan for outcome 1 of \(state 3, joint action 0\)"),
    ("code", r"BadCoin.step_arrays gave successor code 7 for \(state 2, joint action 1\), outside 0..3"),
    ("shape", r"BadCoin.step_arrays gave rewards of shape \(3,\) for a batch of 4 pairs; expected \(4,\)"),
])
def test_bad_step_arrays_are_named(fault, message):
    with pytest.raises(ValueError, match=message):
        compile_model(BadCoin(fault))
