"""Property-based fuzzing of data from code the project does not own (issue 22, causes 4, 9, 10).

As in ``tests/test_fuzz.py`` (whose harness this file uses): each case starts from a valid
call and replaces one thing with a malformed value drawn by hypothesis; the call must succeed
or raise ``ValueError`` naming the culprit. Here the replaced thing is an *answer* of a user's
array model (a whole array, or one entry of it), a size of a model, a setting given as a NumPy
number, an argument of the PettingZoo adapter, or a problem name for ``load_dpomdp``.
``MARL_KSTEP_FUZZ_EXAMPLES`` sets the number of examples per group, as there.
"""

from __future__ import annotations

import math
import string

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_foreign_models import Ring
from test_fuzz import BAD, FUZZ, check

import marl_kstep as mk
from marl_kstep.envs import compile_model, two_state
from marl_kstep.envs.pz import mdp_parallel_env
from marl_kstep.settings import Settings

#: One entry of an answer: what a buggy model might put there.
ENTRY = st.one_of(
    st.integers(-3, 12), st.just(2**40), st.just(-(2**63)), st.just(2**63 - 1),
    st.floats(-1e300, 1e300), st.sampled_from([np.nan, np.inf, -np.inf]), st.just(0.5), st.just(1.0 + 1e-6),
    st.just(-0.0),
)  # finite rewards near the float limit overflow the sampled sums: issue 22's cause 5, the estimator's
ANSWERS = ("initial codes", "initial probs", "observations", "successors", "probabilities", "rewards")
POLICY = mk.Policy.uniform(compile_model(Ring())[0])


class Fuzzed(Ring):
    """Ring whose answer ``which`` is replaced: by ``whole`` or, at flat position ``pos``, by ``entry``."""

    def __init__(self, which, whole=None, pos=None, entry=None):
        self.which, self.whole, self.pos, self.entry = which, whole, pos, entry

    def _change(self, name, value):
        if name != self.which:
            return value
        if self.pos is None:
            return self.whole
        arr = np.array(value)
        if arr.size == 0:
            return arr
        if isinstance(self.entry, float) and arr.dtype.kind in "iu" or abs(self.entry) > 2**62:
            arr = arr.astype(object if isinstance(self.entry, int) else float)
        arr.flat[self.pos % arr.size] = self.entry
        return arr

    def initial_codes(self):
        codes, p = super().initial_codes()
        return self._change("initial codes", codes), self._change("initial probs", p)

    def observe_arrays(self, codes):
        return self._change("observations", super().observe_arrays(codes))

    def step_arrays(self, codes, joint):
        succ, prob, rew = super().step_arrays(codes, joint)
        return (self._change("successors", succ), self._change("probabilities", prob),
                self._change("rewards", rew))


def _culprit(which):
    return {"initial codes": "Fuzzed.initial_codes()", "initial probs": "Fuzzed.initial_codes()",
            "observations": "Fuzzed.observe_arrays"}.get(which, "Fuzzed.step_arrays")


def _run(model, path):
    if path == "compile":
        mdp = compile_model(model)[0]
        assert mdp.n_states <= 9
    else:
        e = mk.SampledKStep(model, 2, episodes=64, horizon=12, seed=0).estimate(POLICY)
        assert math.isfinite(e.J_k) and all(np.all(np.isfinite(g)) for g in e.grad)


@FUZZ
@given(which=st.sampled_from(ANSWERS), value=BAD, path=st.sampled_from(["compile", "batched"]))
def test_fuzz_a_whole_answer_of_an_array_model(which, value, path):
    check(lambda: _run(Fuzzed(which, whole=value), path), [_culprit(which)])


@FUZZ
@given(which=st.sampled_from(ANSWERS), pos=st.integers(0, 10**6), entry=ENTRY,
       path=st.sampled_from(["compile", "batched"]))
def test_fuzz_one_entry_of_an_answer_of_an_array_model(which, pos, entry, path):
    # a finite reward above about 1e150 is a valid model whose sampled sums of squares overflow: the sampler
    # refuses that by saying so (found by the long run, MARL_KSTEP_FUZZ_EXAMPLES=1000: a reward of 1.0e153)
    names = [_culprit(which)] + (["the sampled returns overflow float64"] if which == "rewards" else [])
    check(lambda: _run(Fuzzed(which, pos=pos, entry=entry), path), names)


SIZES = st.one_of(st.integers(0, 4), st.integers(2**20, 2**70), st.just(2**63), st.just(2**31),
                  st.builds(np.int64, st.integers(0, 2**62)), st.builds(np.uint64, st.integers(0, 2**64 - 1)))


@FUZZ
@given(key=st.sampled_from(["n_obs", "n_actions"]), agent=st.integers(0, 1), size=SIZES,
       how=st.sampled_from(["dense", "sparse", "init"]))
def test_fuzz_model_sizes(key, agent, size, how):
    P = np.full((2, 4, 2), 0.5)
    kw = dict(R=np.zeros((2, 4)), obs=[np.array([0, 1]), np.array([1, 0])], n_actions=[2, 2], mu=[1.0, 0.0],
              gamma=0.9, n_obs=[2, 2])
    kw[key] = list(kw[key])
    kw[key][agent] = size
    names = [key, "policy tables", "R has", "joint actions", "out of range for agent"]
    if how == "dense":
        check(lambda: mk.JointMDP.from_dense(P, **kw), names)
    else:
        m = mk.JointMDP.from_dense(P, **dict(kw, n_actions=[2, 2], n_obs=[2, 2]))
        if how == "sparse":
            check(lambda: mk.JointMDP.from_sparse(m.indptr, m.indices, m.probs, **kw), names)
        else:
            check(lambda: mk.JointMDP(n_actions=kw["n_actions"], n_obs=kw["n_obs"], obs=m.obs, indptr=m.indptr,
                                      indices=m.indices, probs=m.probs, rewards=m.rewards, mu=m.mu, gamma=0.9),
                  names)


NUMPY_TYPES = [int, float, bool, np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64,
               np.float16, np.float32, np.float64, np.longdouble]
SETTINGS = [f for f in Settings.__dataclass_fields__]


def _as(kind, x):
    with np.errstate(all="ignore"):
        try:
            return kind(x)
        except (OverflowError, ValueError):
            return x


@FUZZ
@given(key=st.sampled_from(SETTINGS), kind=st.sampled_from(NUMPY_TYPES),
       x=st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.just(10**400),
                   st.just(1e-12), st.just(0.5), st.just(2**63 - 1), st.just(2**63)))
def test_fuzz_numpy_numbers_as_settings(key, kind, x):
    value = _as(kind, x)
    mdp = two_state.build_mdp()

    def call():
        with mk.configure(**{key: value}) as s:
            got = getattr(s, key)
            assert type(got) in (int, float, bool), (key, value, got)
            if isinstance(got, float):
                assert 0 <= got < 1
            try:  # the setting reaches the compiled code: no crash there, whatever it is
                mk.value(mdp, mk.Policy.uniform(mdp), 2)
            except ValueError as exc:
                assert "Settings" in str(exc) or key in str(exc) or "singular" in str(exc), str(exc)

    check(call, [key])


@FUZZ
@given(value=BAD, what=st.sampled_from(["seed", "actions", "action"]))
def test_fuzz_the_mdp_env_adapter(value, what):
    env = mdp_parallel_env(two_state.build_mdp(), max_cycles=3)

    def call():
        if what == "seed":
            env.reset(seed=value)
            assert int(env.state()) in (0, 1)
        else:
            env.reset(seed=0)
            env.step(value if what == "actions" else {"agent_0": value})

    check(call, [what])


NAME_CHARS = string.ascii_letters + string.digits + "._-~ \x00\t" + "é∂"
SMALL = ["2generals", "broadcastChannel", "dectiger", "dectiger_skewed", "GridSmall", "prisoners", "recycling",
         "relay4"]  # loaded in a few ms each; the larger ones are loaded in test_foreign_models


@FUZZ
@given(name=st.one_of(st.text(NAME_CHARS, max_size=12), st.sampled_from(SMALL),
                      st.builds(lambda n, s: n + s, st.sampled_from(SMALL),
                                st.sampled_from([".dpomdp", ".dpomdp.gz", ".gz", " ", "X", ""]))))
def test_fuzz_problem_names(name):
    def call():
        mdp = mk.load_dpomdp(name, gamma=0.9)
        assert name in mk.dpomdp_names() and mdp.n_states >= 1

    check(call, [repr(name), "cannot read the file", "path must be"])
