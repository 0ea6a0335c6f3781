"""Data from code the project does not own (issue 22, causes 4, 9 and 10).

* A user's array model (``VectorisedModel``): every answer it gives is checked before use, on
  the exact build (``compile_arrays`` / ``compile_env``) and on the batched sampled path, so a
  bad answer is a ``ValueError`` naming the method, the state, the joint action and the value,
  never a different number. The per-state protocol gets the same checks.
* Models and settings: sizes refused before anything of that size is allocated, NumPy numbers
  accepted where Python ones are, the PettingZoo adapter's ``state()``, ``step`` and ``reset``.
* The shipped ``.dpomdp`` problems load by name and equal the files they were copied from.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DPOMDP

import marl_kstep as mk
from marl_kstep.envs import compile_env, compile_model, number_matching, two_state
from marl_kstep.envs.base import ScenarioModel
from marl_kstep.envs.pz import ModelParallelEnv, mdp_parallel_env
from marl_kstep.envs.vectorised import CheckedModel, VectorisedModel
from marl_kstep.settings import current

M = 3
SLIP = 0.2


class Ring(ScenarioModel, VectorisedModel):
    """A user's model: two agents on a ring of 3 cells, moves slip with probability 0.2
    (4 outcomes per pair, some repeated, some of probability 0). Both protocols."""

    n_actions = (2, 2)
    n_obs = (M, M)
    gamma = 0.9

    def initial_distribution(self):
        return [((0, 0), 0.5), ((1, 2), 0.25), ((2, 1), 0.25)]

    def transitions(self, state, actions):
        out = []
        for m0, p0 in ((1, 1 - SLIP), (0, SLIP)) if actions[0] else ((1, 0.0), (0, 1.0)):
            for m1, p1 in ((1, 1 - SLIP), (0, SLIP)) if actions[1] else ((1, 0.0), (0, 1.0)):
                out.append((((state[0] + m0 * actions[0]) % M, (state[1] + m1 * actions[1]) % M), p0 * p1))
        return out

    def reward(self, state, actions):
        return float(state[0] == state[1]) * 2.0 + float(state[0] == 2) - 0.1 * sum(actions)

    def observe(self, state, agent):
        return state[agent]

    def estimate_states(self):
        return M * M

    def code_space(self):
        return M * M

    def outcomes(self):
        return 4

    def encode(self, state):
        return state[0] * M + state[1]

    def decode(self, code):
        return (int(code) // M, int(code) % M)

    def initial_codes(self):
        return np.array([0, 5, 7]), np.array([0.5, 0.25, 0.25])

    def step_arrays(self, codes, joint):
        x, y = codes // M, codes % M
        a0, a1 = joint >> 1, joint & 1
        succ, prob = [], []
        for m0 in (1, 0):
            for m1 in (1, 0):
                succ.append(((x + m0 * a0) % M) * M + (y + m1 * a1) % M)
                p0 = np.where(a0 == 1, 1 - SLIP if m0 else SLIP, float(m0 == 0))
                p1 = np.where(a1 == 1, 1 - SLIP if m1 else SLIP, float(m1 == 0))
                prob.append(p0 * p1)
        rew = (x == y) * 2.0 + (x == 2) - 0.1 * (a0 + a1)
        return np.stack(succ, axis=1), np.stack(prob, axis=1), rew

    def observe_arrays(self, codes):
        return np.stack([codes // M, codes % M])


def _fault_step(f, codes, succ, prob, rew):
    """One wrong answer of step_arrays (``f`` names it)."""
    prob, succ = prob.astype(float), succ.copy()
    hit = codes == 5  # state (1, 2)
    if f == "sum 2":
        prob[hit] *= 2
    elif f == "sum 0.5":
        prob[hit] *= 0.5
    elif f == "negative":
        prob[hit, 0] += 0.1
        prob[hit, 1] -= 0.1
    elif f == "nan prob":
        prob[hit, 0] = np.nan
    elif f == "inf prob":
        prob[hit, 0] = np.inf
    elif f == "successor 9":
        succ[hit] = 9
    elif f == "successor -1":
        succ[hit] = -1
    elif f == "float successors":
        succ = succ.astype(float)
    elif f == "nan reward":
        rew = np.where(hit, np.nan, rew)
    elif f == "inf reward":
        rew = np.where(hit, -np.inf, rew)
    elif f == "complex rewards":
        rew = rew + 1j
    elif f == "string rewards":
        rew = rew.astype(str)
    elif f == "None rewards":
        rew = None
    elif f == "short rewards":
        rew = rew[:-1]
    elif f == "outcomes missing":
        succ, prob = succ[:, :3], prob[:, :3]
    return succ, prob, rew


def _fault_obs(f, obs):
    if f == "obs -1":
        return np.where(obs == 2, -1, obs)
    if f == "obs 3":
        return np.where(obs == 2, 3, obs)
    if f == "obs transposed":
        return obs.T
    if f == "obs 1.5":
        return obs + 0.5
    if f == "obs nan":
        return np.where(obs == 2, np.nan, obs)
    if f == "obs strings":
        return obs.astype(str)
    if f == "obs one row":
        return obs[:1]
    return obs


class Faulty(Ring):
    """Ring with one wrong answer."""

    def __init__(self, fault):
        self.fault = fault

    def initial_codes(self):
        codes, p = super().initial_codes()
        f = self.fault
        if f == "start 9":
            codes = np.array([0, 5, 9])
        elif f == "start -1":
            codes = np.array([-1, 5, 7])
        elif f == "start probs 1.5":
            p = p * 1.5
        elif f == "start prob nan":
            p = np.array([0.5, np.nan, 0.25])
        elif f == "start float codes":
            codes = codes.astype(float)
        elif f == "start shapes":
            p = p[:2]
        return codes, p

    def step_arrays(self, codes, joint):
        succ, prob, rew = super().step_arrays(codes, joint)
        return _fault_step(self.fault, codes, succ, prob, rew)

    def observe_arrays(self, codes):
        return _fault_obs(self.fault, super().observe_arrays(codes))


STEP = r"Faulty\.step_arrays gave "
PAIR = r"for \(state \(1, 2\), joint action \d\)"
FAULTS = [
    ("sum 2", STEP + r"probabilities summing to 2\.0+\d* " + PAIR + r"; each pair's must sum to 1 \(within "
     r"Settings\.row_sum_tol = 1e-09\)"),
    ("sum 0.5", STEP + r"probabilities summing to 0\.5"),
    ("negative", STEP + r"probability -0\.1 for outcome 1 of \(state \(1, 2\), joint action [012]\); probabilities "
     r"must be finite and >= 0"),
    ("nan prob", STEP + r"probability nan for outcome 0 of \(state \(1, 2\), joint action \d\)"),
    ("inf prob", STEP + r"probability inf for outcome 0 of \(state \(1, 2\), joint action \d\)"),
    ("successor 9", STEP + r"successor code 9 " + PAIR + r", outside 0\.\.8 \(outcome \d; code_space\(\) = 9\)"),
    ("successor -1", STEP + r"successor code -1 " + PAIR + r", outside 0\.\.8"),
    ("float successors", r"Faulty\.step_arrays successors must hold integer state codes; got an array of dtype "
     r"float64"),
    ("nan reward", STEP + r"reward nan " + PAIR + r"; rewards must be finite"),
    ("inf reward", STEP + r"reward -inf " + PAIR),
    ("complex rewards", r"Faulty\.step_arrays rewards must hold real numbers; got an array of dtype complex128"),
    ("string rewards", r"Faulty\.step_arrays rewards must hold real numbers; got an array of dtype <U"),
    ("None rewards", r"Faulty\.step_arrays rewards must hold real numbers; got an array of dtype object"),
    ("short rewards", STEP + r"rewards of shape \(\d+,\) for a batch of \d+ pairs; expected \(\d+,\) "
     r"\(outcomes\(\) = 4\)"),
    ("outcomes missing", STEP + r"successors of shape \(\d+, 3\) for a batch of \d+ pairs; expected \(\d+, 4\)"),
    ("obs -1", r"Faulty\.observe_arrays gave observation -1 for agent 0 in state \(2, \d\), outside 0\.\.2 "
     r"\(n_obs\[0\] = 3\)"),
    ("obs 3", r"Faulty\.observe_arrays gave observation 3 for agent 0 in state \(2, \d\), outside 0\.\.2"),
    ("obs transposed", r"Faulty\.observe_arrays gave observations of shape \((\d+), 2\) for \1 codes; expected "
     r"\(n_agents, B\) = \(2, \1\) \(one row per code: transposed\?"),
    ("obs 1.5", r"Faulty\.observe_arrays gave observation \d\.5 for agent 0 in state \(\d, \d\); observation ids "
     r"are integers"),
    ("obs nan", r"Faulty\.observe_arrays gave observation nan for agent \d in state"),
    ("obs strings", r"Faulty\.observe_arrays must give integer observation ids; got an array of dtype <U"),
    ("obs one row", r"Faulty\.observe_arrays gave observations of shape \(1, (\d+)\) for \1 codes; expected "
     r"\(n_agents, B\) = \(2, \1\)$"),
    ("start 9", r"Faulty\.initial_codes\(\) gave start code 9 \(entry 2\), outside 0\.\.8 \(code_space\(\) = 9\)"),
    ("start -1", r"Faulty\.initial_codes\(\) gave start code -1 \(entry 0\), outside 0\.\.8"),
    ("start probs 1.5", r"Faulty\.initial_codes\(\) probabilities sum to 1\.5; they must sum to 1 \(within "
     r"Settings\.row_sum_tol = 1e-09\)"),
    ("start prob nan", r"Faulty\.initial_codes\(\) gave probability nan for state \(1, 2\) \(entry 1\)"),
    ("start float codes", r"Faulty\.initial_codes\(\) codes must hold integer state codes; got an array of dtype "
     r"float64"),
    ("start shapes", r"Faulty\.initial_codes\(\) must give 1-d codes and probabilities of equal length >= 1; got "
     r"shapes \(3,\) and \(2,\)"),
]


def exact_value(k=2):
    mdp = compile_model(Ring(), vectorised=False)[0]
    return mdp, mk.value(mdp, mk.Policy.uniform(mdp), k)


# ------------------------------------------------------------------ cause 4: array models
def test_the_user_model_is_valid_and_both_builds_agree():
    a, states = compile_model(Ring(), vectorised=True)
    b, _ = compile_model(Ring(), vectorised=False)
    for field in ("indptr", "indices", "probs", "rewards", "mu"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field
    assert a.n_states == 9 and list(states)[:3] == [(0, 0), (1, 2), (2, 1)]
    # the dense transition array against the definition, entry by entry
    P = a.to_dense()
    for s, st in enumerate(states):
        for j in range(4):
            expect = np.zeros(9)
            for t, p in Ring().transitions(st, divmod(j, 2)):
                expect[list(states).index(t)] += p
            np.testing.assert_allclose(P[s, j], expect, atol=1e-15)


def test_batched_path_on_the_user_model_matches_the_exact_value():
    mdp, J2 = exact_value(2)
    est = mk.SampledKStep(Ring(), 2, episodes=20_000, horizon=150, seed=3)
    assert est.path == "batched"
    e = est.estimate(mk.Policy.uniform(mdp))
    bound = 0.9**150 * 3.0 / 0.1  # truncation
    assert abs(e.J_k - J2) < 4 * e.J_k_se + bound, (e.J_k, e.J_k_se, J2)


@pytest.mark.parametrize("fault,message", FAULTS, ids=[f for f, _ in FAULTS])
def test_a_wrong_answer_is_named_on_the_exact_build(fault, message):
    with pytest.raises(ValueError, match=message):
        compile_model(Faulty(fault))
    env = ModelParallelEnv(Faulty(fault), "faulty_v0")  # compile_env of a user's scenario env
    with pytest.raises(ValueError, match=message):
        compile_env(env)


@pytest.mark.parametrize("fault,message", FAULTS, ids=[f for f, _ in FAULTS])
def test_a_wrong_answer_is_named_on_the_batched_path(fault, message):
    pol = mk.Policy.uniform(compile_model(Ring())[0])
    with pytest.raises(ValueError, match=message):
        mk.SampledKStep(Faulty(fault), 2, episodes=200, horizon=20, seed=0).estimate(pol)


def test_transposed_observations_are_refused_even_when_compile_used_to_reshape_them():
    # (B, n) for B = 9 codes: compile_arrays reshaped it into (n, B), a different phi
    with pytest.raises(ValueError, match=r"shape \(9, 2\) for 9 codes; expected \(n_agents, B\) = \(2, 9\)"):
        compile_model(Faulty("obs transposed"), vectorised=True)


def test_integral_float_observations_and_zero_probability_garbage_are_accepted():
    class Lenient(Ring):
        def observe_arrays(self, codes):
            return super().observe_arrays(codes).astype(float)  # 0.0, 1.0, 2.0: integers

        def step_arrays(self, codes, joint):
            succ, prob, rew = super().step_arrays(codes, joint)
            succ = np.where(prob == 0, -7, succ)  # ignored outcomes may hold anything
            return succ, prob, rew.astype(np.float32).astype(int) * 0 + rew  # any real dtype

    a = compile_model(Lenient())[0]
    b = compile_model(Ring(), vectorised=False)[0]
    assert a.probs.tobytes() == b.probs.tobytes() and all(np.array_equal(x, y) for x, y in zip(a.obs, b.obs,
                                                                                                   strict=True))
    est = mk.SampledKStep(Lenient(), 2, episodes=4000, horizon=80, seed=1)
    ref = mk.SampledKStep(Ring(), 2, episodes=4000, horizon=80, seed=1)
    pol = mk.Policy.uniform(a)
    assert est.estimate(pol).J_k == ref.estimate(pol).J_k  # same streams, same answers: same estimate


def test_sizes_of_the_user_model_are_checked_first():
    for attr, value, message in [
        ("code_space", lambda: 0, r"Ring2\.code_space\(\) must be an integer >= 1; got Ring2\.code_space\(\)=0"),
        ("code_space", lambda: 9.0, r"Ring2\.code_space\(\) must be an integer >= 1; got .*=9\.0"),
        ("outcomes", lambda: "4", r"Ring2\.outcomes\(\) must be an integer >= 1"),
        ("estimate_states", lambda: float("nan"), r"Ring2\.estimate_states\(\) must be an integer >= 1"),
    ]:
        Ring2 = type("Ring2", (Ring,), {attr: lambda self, v=value: v()})
        with pytest.raises(ValueError, match=message):
            compile_model(Ring2())
    Ring3 = type("Ring3", (Ring,), {"n_obs": (3, 2**63)})
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"the policy tables of Ring3 .* would take about"):
        CheckedModel(Ring3())
    with pytest.raises(ValueError, match=r"the policy tables of Ring3"):
        mk.SampledKStep(Ring3(), 2, episodes=10)
    assert time.perf_counter() - t < 1.0
    with pytest.raises(ValueError, match=r"model must implement VectorisedModel; got int"):
        CheckedModel(3)

    class Bare(VectorisedModel):  # the array protocol alone: no sizes, no discount
        code_space = outcomes = lambda self: 1  # noqa: E731
        encode = decode = lambda self, x: x  # noqa: E731
        initial_codes = observe_arrays = step_arrays = lambda self, *a: None  # noqa: E731

    with pytest.raises(ValueError, match=r"Bare has no n_actions, n_obs, gamma: a VectorisedModel needs"):
        mk.SampledKStep(Bare(), 2)
    Bare.n_actions, Bare.n_obs, Bare.gamma = (2,), (1, 1), 0.9
    with pytest.raises(ValueError, match=r"Bare\.n_obs must give one count per agent \(1\); got \(1, 1\)"):
        mk.SampledKStep(Bare(), 2)
    Bare.n_obs, Bare.gamma = (1,), 1.5
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\); got gamma=1\.5"):
        mk.SampledKStep(Bare(), 2)


class PerState(ScenarioModel):
    """A user's per-state model (no array protocol) with one wrong answer."""

    n_actions, n_obs, gamma = (2,), (2,), 0.9

    def __init__(self, fault=None):
        self.fault = fault

    def initial_distribution(self):
        return [(0, 1.0)]

    def transitions(self, s, a):
        if self.fault == "not pairs" and s == 1:
            return None
        p = {"nan prob": np.nan, "negative": -0.5, "string prob": "0.5", "sum 2": 1.5}.get(self.fault, 0.5)
        return [(1 - s, 0.5), (s, p if s == 1 else 0.5)]

    def reward(self, s, a):
        r = {"string": "1", "complex": 1 + 2j, "nan": float("nan"), "None": None, "bool": True}.get(self.fault)
        return r if (r is not None or self.fault == "None") and s == 1 else float(a[0] - s)

    def observe(self, s, i):
        o = {"obs 1.5": 1.5, "obs -1": -1, "obs 2": 2, "obs True": True, "obs str": "1"}.get(self.fault)
        return o if o is not None and s == 1 else s

    def estimate_states(self):
        return 2


@pytest.mark.parametrize("fault,message", [
    ("string", r"PerState\.reward gave '1' for \(state 1, actions \(0,\)\); rewards must be finite real numbers"),
    ("complex", r"PerState\.reward gave \(1\+2j\) for \(state 1"),
    ("nan", r"PerState\.reward gave nan for \(state 1"),
    ("None", r"PerState\.reward gave None for \(state 1"),
    ("bool", r"PerState\.reward gave True for \(state 1"),
    ("nan prob", r"PerState\.transitions gave probability nan for successor 1 of \(state 1, actions \(0,\)\)"),
    ("negative", r"PerState\.transitions gave probability -0\.5 for successor 1 of \(state 1"),
    ("string prob", r"PerState\.transitions gave probability '0\.5' for successor 1"),
    ("sum 2", r"PerState\.transitions gave probabilities summing to 2\.0 for \(state 1, actions \(0,\)\); they must "
              r"sum to 1 \(within Settings\.row_sum_tol = 1e-09\)"),
    ("not pairs", r"PerState\.transitions must give a list of \(next_state, probability\) pairs for \(state 1, "
                  r"actions \(0,\)\)"),
    ("obs 1.5", r"PerState\.observe gave 1\.5 for agent 0 in state 1; observation ids are integers in 0\.\.1"),
    ("obs -1", r"PerState\.observe gave -1 for agent 0 in state 1"),
    ("obs 2", r"PerState\.observe gave 2 for agent 0 in state 1"),
    ("obs True", r"PerState\.observe gave True for agent 0 in state 1"),
    ("obs str", r"PerState\.observe gave '1' for agent 0 in state 1"),
])
def test_the_per_state_protocol_is_checked_too(fault, message):
    assert compile_model(PerState())[0].n_states == 2
    with pytest.raises(ValueError, match=message):
        compile_model(PerState(fault))
    with pytest.raises(ValueError, match=message):
        compile_env(ModelParallelEnv(PerState(fault), "per_state_v0"))
    # the environment steps the same model through the same checks (state 1 is reached at once or soon)
    env = ModelParallelEnv(PerState(fault), "per_state_v0", max_cycles=50)
    with pytest.raises(ValueError, match=message.replace("actions \\(0,\\)", "actions \\(\\d,\\)")):
        env.reset(seed=0)
        for _ in range(50):
            env.step({"agent_0": 0})


# ------------------------------------------------------------------ cause 9: models and settings
def small_model(**kw):
    P = np.zeros((3, 2, 3))
    P[:, 0, 0] = 1.0
    P[:, 1, :] = 1 / 3
    args = dict(P=P, R=np.arange(6.0).reshape(3, 2), obs=[np.array([0, 1, 1])], n_actions=[2],
                mu=np.array([1.0, 0.0, 0.0]), gamma=0.9, n_obs=[2])
    args.update(kw)
    return mk.JointMDP.from_dense(**args)


@pytest.mark.parametrize("n_obs", [2**63, 2**62, 10**18, 2**40])
def test_huge_observation_counts_are_refused_before_anything_is_allocated(n_obs):
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"the policy tables of this JointMDP \(n_obs=\(\d+,\), n_actions=\(2,\): "
                                         r"[\d,]+ entries\) would take about"):
        small_model(n_obs=[n_obs])
    m = small_model()
    with pytest.raises(ValueError, match="the policy tables of this JointMDP"):
        mk.JointMDP(n_actions=m.n_actions, n_obs=(n_obs,), obs=m.obs, indptr=m.indptr, indices=m.indices,
                    probs=m.probs, rewards=m.rewards, mu=m.mu, gamma=m.gamma)
    assert time.perf_counter() - t < 1.0
    assert small_model(n_obs=[1000]).n_obs == (1000,)  # large but affordable: kept


@pytest.mark.parametrize("n_actions", [(2**16, 2**16), (2**32,), (2**11, 2**11, 2**11)])
def test_from_sparse_checks_the_size_before_copying_R(n_actions):
    J = int(np.prod(n_actions, dtype=object))
    R = np.broadcast_to(np.float64(0.0), (1, J))  # no memory: a copy would take J * 8 bytes
    t = time.perf_counter()
    with pytest.raises(ValueError, match=rf"a JointMDP with 1 states and {J:,} joint actions .* would take about"):
        mk.JointMDP.from_sparse(np.zeros(J + 1, np.int64) if J < 10**7 else np.zeros(2, np.int64), [0], [1.0], R,
                                [np.zeros(1, int)] * len(n_actions), n_actions, [1.0], 0.9)
    assert time.perf_counter() - t < 1.0


def test_from_dense_checks_the_size_before_copying_P():
    P = np.broadcast_to(np.float32(0.5), (2**16, 2, 2**16))  # 32 GiB as float64
    with pytest.raises(ValueError, match=r"a dense P of shape \(65536, 2, 65536\) would take about 256\.00 GiB"):
        mk.JointMDP.from_dense(P, np.zeros((2**16, 2)), [np.zeros(2**16, int)], [2], np.full(2**16, 2.0**-16), 0.9)
    with mk.configure(max_model_bytes=32 * 18 - 1), pytest.raises(ValueError, match="max_model_bytes"):
        small_model()  # 32 bytes per entry of P: the limit is followed exactly
    with mk.configure(max_model_bytes=32 * 18):
        assert small_model().n_states == 3


@pytest.mark.parametrize("key,value,stored", [
    ("max_path_steps", np.int64(10**9), 10**9),
    ("max_path_steps", np.uint32(7), 7),
    ("max_policies", np.int16(5), 5),
    ("max_path_steps", 2**63 - 1, 2**63 - 1),
    ("lump", np.bool_(False), False),
    ("iter_rtol", np.float32(0.5), float(np.float32(0.5))),
    ("row_sum_tol", 0, 0.0),
    ("singular_rtol", np.float64(1e-12), 1e-12),
    ("simplex_tol", np.int64(0), 0.0),
])
def test_numpy_numbers_are_settings_and_are_stored_as_python_numbers(key, value, stored):
    with mk.configure(**{key: value}) as s:
        got = getattr(s, key)
        assert got == stored and type(got) is type(stored)


@pytest.mark.parametrize("key,value,message", [
    ("max_path_steps", 2**63, r"setting max_path_steps must be an integer in 0\.\.2\*\*63-1; got "
                              r"max_path_steps=9223372036854775808"),
    ("max_path_steps", np.float64(10.0), r"must be an integer"),
    ("max_path_steps", np.bool_(True), r"must be an integer"),
    ("lump", 1, r"setting lump must be True or False"),
    ("iter_rtol", 10**30, rf"setting iter_rtol must be a tolerance in \[0, 1\); got iter_rtol={10**30}$"),
    ("iter_rtol", 10**400, r"got iter_rtol=1000000000000000000000000000000000000\.\.\.$"),
    ("singular_rtol", 1.0, r"tolerance in \[0, 1\)"),
    ("row_sum_tol", float("nan"), r"tolerance in \[0, 1\)"),
    ("simplex_tol", -1e-9, r"tolerance in \[0, 1\)"),
    ("dpomdp_prob_tol", True, r"tolerance in \[0, 1\)"),
    ("lump_stable_tol", "1e-3", r"tolerance in \[0, 1\)"),
    ("lump_stable_tol", 1e-3 + 0j, r"tolerance in \[0, 1\)"),
])
def test_bad_settings_are_refused_by_name(key, value, message):
    with pytest.raises(ValueError, match=message), mk.configure(**{key: value}):
        pass


def test_a_huge_integer_tolerance_no_longer_reaches_the_solver():
    mdp = number_matching.build_mdp()
    pol = mk.Policy.uniform(mdp)
    J = mk.value(mdp, pol, 2)
    # iter_rtol=1e30 used to stop BiCGSTAB before its first iteration: J_2 = -0.2533 instead of -0.8032
    with pytest.raises(ValueError, match="iter_rtol"), mk.configure(iter_rtol=10**30):
        pass
    with mk.configure(iter_rtol=np.float64(1e-12), direct_solve_max_states=1, fused_max_states=1):
        assert mk.value(mdp, pol, 2, lump=False) == pytest.approx(J, abs=1e-10)


def test_the_path_budget_from_the_environment_is_bounded(monkeypatch):
    monkeypatch.setenv("MARL_KSTEP_MAX_PATH_STEPS", str(2**63))
    with pytest.raises(ValueError, match=r"MARL_KSTEP_MAX_PATH_STEPS must be an integer in 0\.\.2\*\*63-1"):
        current()


def mdp_env(**kw):
    return mdp_parallel_env(two_state.build_mdp(), max_cycles=5, **kw)


@pytest.mark.parametrize("actions,message", [
    (None, r"actions must be a dict from agent name to action; got NoneType"),
    ([0, 1], r"actions must be a dict from agent name to action; got list"),
    ("agent_0", r"actions must be a dict from agent name to action; got str"),
    (np.array([0]), r"actions must be a dict from agent name to action; got ndarray"),
    ({"agent_0": None}, r"actions\['agent_0'\] = None is not an action of agent_0 \(0\.\.1\)"),
    ({"agent_0": 1.0}, r"actions\['agent_0'\] = 1\.0 is not an action"),
    ({"ghost": 0}, r"actions names unknown agent\(s\) \['ghost'\]"),
])
def test_mdp_env_step_refuses_bad_actions_by_name(actions, message):
    env = mdp_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(actions)


@pytest.mark.parametrize("seed", ["3", -1, float("nan"), 1.5, True, np.float64(2.0), [1], b"3"])
def test_mdp_env_reset_refuses_bad_seeds_by_name(seed):
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer; got seed="):
        mdp_env().reset(seed=seed)


def test_mdp_env_reset_takes_numpy_and_huge_integer_seeds_reproducibly():
    for seed in (np.int64(3), 2**70, np.uint64(2**63)):
        runs = []
        for _ in range(2):
            env = mdp_env()
            env.reset(seed=seed)
            states = [int(env.state())]
            for _ in range(4):
                env.step({"agent_0": 1})
                states.append(int(env.state()))
            runs.append(states)
        assert runs[0] == runs[1]


def test_render_modes_follow_what_the_model_can_draw():
    assert mdp_env().metadata["render_modes"] == ["ansi"]
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['ansi'\] \(JointMDPModel draws no "
                                         r"pictures: no rgb_array\); got render_mode='rgb_array'"):
        mdp_env(render_mode="rgb_array")
    env = mdp_env(render_mode="ansi")
    env.reset(seed=0)
    assert env.render() in two_state.build_mdp().state_names
    drawn = number_matching.parallel_env(render_mode="rgb_array")  # a scenario that draws itself
    assert drawn.metadata["render_modes"] == ["ansi", "rgb_array"]
    drawn.reset(seed=0)
    assert drawn.render().ndim == 3


def test_state_is_pettingzoos_global_state_method():
    env = mdp_env()
    with pytest.raises(ValueError, match=r"state\(\) called before reset\(\)"):
        env.state()
    env.reset(seed=1)
    mdp = env.unwrapped.model.mdp
    for _ in range(4):
        s = env.state()
        assert isinstance(s, np.ndarray) and s.shape == () and int(s) == env.model_state
        assert 0 <= int(s) < mdp.n_states
        env.step({"agent_0": 1})
    nm = number_matching.parallel_env()
    nm.reset(seed=2)
    assert int(nm.state()) == nm.unwrapped.model.encode(nm.unwrapped.model_state)
    ps = ModelParallelEnv(PerState(), "per_state_v0")
    ps.reset(seed=0)
    assert ps.state().tolist() == 0


def test_the_envs_still_pass_pettingzoos_api_test():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(mdp_env(), num_cycles=20)
    parallel_api_test(ModelParallelEnv(Ring(), "ring_v0", max_cycles=10), num_cycles=20)


def test_rollouts_still_record_model_states():
    env = number_matching.parallel_env(max_cycles=6)
    pol = mk.Policy.uniform(compile_env(env))
    from marl_kstep.sampling.execution import KCoupledAgent, k_coupled_episode

    agents = [KCoupledAgent(t, 2, np.random.default_rng(i)) for i, t in enumerate(pol.theta)]
    ep = k_coupled_episode(env, agents, horizon=6, reset_seed=0, record_states=True)
    assert len(ep.states) == 7 and all(isinstance(s, tuple) and len(s) == 2 for s in ep.states)


# ------------------------------------------------------------------ cause 10: shipped problems
NAMES = ["2generals", "boxPushingUAI07", "broadcastChannel", "dectiger", "dectiger_skewed", "fireFighting_2_3_3",
         "Grid3x3corners", "GridSmall", "Mars", "oneDoor_2_7_0.20_0.00_0_2", "prisoners", "recycling", "relay4"]
PKG = Path(mk.__file__).parent


def test_thirteen_problems_are_shipped():
    assert mk.dpomdp_names() == NAMES
    files = sorted(p.name for p in (PKG / "data" / "dpomdp").iterdir())
    assert len([f for f in files if ".dpomdp" in f]) == 13 and "README.md" in files and "README.upstream" in files


@pytest.mark.skipif(not SHARED_DPOMDP.is_dir(), reason="the shared benchmark folder is absent")
@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_problem_by_name_is_the_shared_file(name):
    shared = next(p for p in SHARED_DPOMDP.iterdir() if p.name in (name + ".dpomdp", name + ".dpomdp.gz"))
    assert (PKG / "data" / "dpomdp" / shared.name).read_bytes() == shared.read_bytes()
    if name in ("Mars", "boxPushingUAI07", "fireFighting_2_3_3", "Grid3x3corners", "oneDoor_2_7_0.20_0.00_0_2"):
        return  # larger problems: the bytes are equal, and the loader is tested on them in test_dpomdp
    a, b = mk.load_dpomdp(name, gamma=0.9), mk.load_dpomdp(shared, gamma=0.9)
    assert a.state_names == b.state_names
    for field in ("indptr", "indices", "probs", "rewards", "mu"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes()


def test_dectiger_by_name_listens_for_minus_20():
    mdp = mk.load_dpomdp("dectiger", gamma=0.9)
    listen = mk.Policy.deterministic(mdp, [[0, 0, 0], [0, 0, 0]])
    assert mdp.action_names[0][0] == "listen"
    assert mk.value(mdp, listen) == pytest.approx(-20.0, abs=1e-12)  # -2 per step: -2 / (1 - 0.9)


def test_a_gzipped_problem_loads_by_name():
    mdp = mk.load_dpomdp("Grid3x3corners", gamma=0.9)
    assert mdp.n_agents == 2 and mdp.n_actions == (5, 5)


@pytest.mark.parametrize("name", ["dectigerr", "DecTiger", "Mars.gz", "example", "x y", "a\x00b", "..", "~"])
def test_an_unknown_name_lists_the_known_ones(name):
    with pytest.raises(ValueError) as exc:
        mk.load_dpomdp(name, gamma=0.9)
    msg = str(exc.value)
    if name == "..":  # a folder: read as a path, as before
        assert "cannot read the file" in msg
        return
    assert msg.startswith(f"no shipped .dpomdp problem is named {name!r}; the shipped problems are 2generals, ")
    assert all(n in msg for n in NAMES)


def test_paths_load_as_before(tmp_path, monkeypatch):
    text = (PKG / "data" / "dpomdp" / "dectiger.dpomdp").read_text()
    (tmp_path / "dectiger").write_text(text.replace("listen", "hark"))
    monkeypatch.chdir(tmp_path)
    assert mk.load_dpomdp("dectiger", gamma=0.9).action_names[0][0] == "listen"  # a name: the shipped problem
    for path in ("./dectiger", tmp_path / "dectiger", str(tmp_path / "dectiger")):  # a path: the file
        assert mk.load_dpomdp(path, gamma=0.9).action_names[0][0] == "hark"
    with pytest.raises(ValueError, match=r"dectiger\.dpomdp: cannot read the file \(.*\); the shipped problem is "
                                         r"load_dpomdp\('dectiger'\)"):
        mk.load_dpomdp("dectiger.dpomdp", gamma=0.9)
    for bad in (None, 3, "", b"dectiger"):
        with pytest.raises(ValueError, match=r"path must be a file path or a problem name; got "):
            mk.load_dpomdp(bad, gamma=0.9)


def test_package_data_and_py_typed_are_declared():
    assert (PKG / "py.typed").is_file()
    config = tomllib.loads((PKG.parent / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["marl_kstep"]
    assert "py.typed" in patterns
    shipped = {p.relative_to(PKG).as_posix() for p in (PKG / "data" / "dpomdp").iterdir()}
    covered = {f for f in shipped if any(Path(f).match(p) for p in patterns)}
    assert covered == shipped


def test_the_singular_system_message_tells_when_it_happens_on_the_simplex():
    mdp = two_state.build_mdp(gamma=1 - 1e-12)
    pol = mk.Policy.uniform(mdp)
    assert all(np.allclose(t.sum(axis=1), 1) for t in pol.theta)  # on the simplex
    with pytest.raises(mk.SingularSystemError) as exc:
        mk.value(mdp, pol, 1)
    msg = str(exc.value)
    assert "only off the simplex" not in msg and "can happen only" not in msg
    assert "on the simplex only when gamma^k is so close to 1 that 1 - gamma^k is about Settings.singular_rtol" in msg
    # and it does not happen when 1 - gamma^k is well above singular_rtol
    assert np.isfinite(mk.value(two_state.build_mdp(gamma=1 - 1e-8), pol, 1))


def test_the_checked_model_pickles_and_passes_everything_else_through():
    import pickle

    c = CheckedModel(Ring())
    d = pickle.loads(pickle.dumps(c))
    assert isinstance(d, CheckedModel) and d.n_obs == (3, 3) and d.code_space() == 9 and d.outcomes() == 4
    assert d.state_name((1, 2)) == "(1, 2)" and d.decode(5) == (1, 2) and d.encode((1, 2)) == 5
    est = pickle.loads(pickle.dumps(mk.SampledKStep(Ring(), 2, episodes=50, horizon=10, seed=4)))
    ref = mk.SampledKStep(Ring(), 2, episodes=50, horizon=10, seed=4)
    assert est.estimate(POLICY_RING).J_k == ref.estimate(POLICY_RING).J_k


POLICY_RING = mk.Policy.uniform(compile_model(Ring())[0])


class BadTwoState(two_state.TwoStateModel):
    """The two-state trap (exact J_2 = 5.401 at the uniform policy) with one wrong answer; before the
    checks the batched path gave J_2 = 0.813 for successor 5 and 5.393 (the right number for a model
    it was not given) for the probabilities, with no error."""

    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def step_arrays(self, codes, joint):
        s, p, r = (np.array(x, dtype=float if i else None) for i, x in enumerate(super().step_arrays(codes, joint)))
        if self.fault == "successor 5":
            s = np.where(s == 1, 5, s)
        elif self.fault in ("probability 2", "probability -1", "probability nan"):
            p[:] = float(self.fault.split()[1])
        elif self.fault == "reward nan":
            r = np.where(codes == 1, np.nan, r)
        return s, p, r

    def observe_arrays(self, codes):
        o = np.array(super().observe_arrays(codes))
        return o - 1 if self.fault == "observation -1" else o


@pytest.mark.parametrize("fault,message", [
    ("successor 5", r"BadTwoState\.step_arrays gave successor code 5 for \(state 0, joint action \d\), outside 0\.\.1"),
    ("probability 2", r"BadTwoState\.step_arrays gave probabilities summing to 2\.0 for \(state 0, joint action \d\)"),
    ("probability -1", r"BadTwoState\.step_arrays gave probability -1\.0 for outcome 0 of \(state 0, joint "
                       r"action \d\)"),
    ("probability nan", r"BadTwoState\.step_arrays gave probability nan for outcome 0 of \(state 0"),
    ("reward nan", r"BadTwoState\.step_arrays gave reward nan for \(state 1, joint action \d\)"),
    ("observation -1", r"BadTwoState\.observe_arrays gave observation -1 for agent 0 in state 0, outside 0\.\.0"),
])
def test_the_issues_two_state_examples_are_errors_not_numbers(fault, message):
    mdp = two_state.build_mdp()
    pol = mk.Policy.uniform(mdp)
    assert mk.value(mdp, pol, 2) == pytest.approx(5.401, abs=1e-3)
    good = mk.SampledKStep(two_state.TwoStateModel(), 2, episodes=20_000, seed=0).estimate(pol)
    assert abs(good.J_k - mk.value(mdp, pol, 2)) < 4 * good.J_k_se + 0.9 ** good_horizon() * 2 / 0.1
    with pytest.raises(ValueError, match=message):
        mk.SampledKStep(BadTwoState(fault), 2, episodes=20_000, seed=0).estimate(pol)
    with pytest.raises(ValueError, match=message):
        compile_model(BadTwoState(fault))


def good_horizon():
    return mk.SampledKStep(two_state.TwoStateModel(), 2, episodes=1).horizon


class Padded(Ring):
    """Ring whose rows carry a trailing padding outcome of probability 0 with a garbage successor (-1),
    and whose other probabilities sum to ``1 - short`` (within the row tolerance the test sets)."""

    short = 0.05

    def outcomes(self):
        return 5

    def step_arrays(self, codes, joint):
        succ, prob, rew = super().step_arrays(codes, joint)
        succ = np.concatenate([succ, np.full((len(codes), 1), -1)], axis=1)
        prob = np.concatenate([prob * (1 - self.short), np.zeros((len(codes), 1))], axis=1)
        return succ, prob, rew


def test_the_batched_path_never_picks_a_zero_probability_outcome():
    """A row summing to just under 1 (allowed within Settings.row_sum_tol): drawing u against the raw
    cumulative sums picked the trailing padding outcome (successor -1) whenever u passed the row's total;
    u is scaled by the row's own total instead."""
    with mk.configure(row_sum_tol=0.1):
        est = mk.SampledKStep(Padded(), 2, episodes=4000, horizon=60, seed=0)
        assert est.path == "batched"
        e = est.estimate(mk.Policy.uniform(est))  # 240,000 steps: about 12,000 draws past 0.95 before the fix
    assert np.isfinite(e.J_k) and e.J_k_se > 0
