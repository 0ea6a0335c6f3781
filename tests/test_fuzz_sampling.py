"""Property-based fuzzing of the data that reaches the sampler from code we do not own (issue 22).

Groups: a user's ParallelEnv whose reset/step outputs are replaced, one field at a time, by
malformed values (cause 1); observation encoders (cause 6), the BoxDiscretiser's cells against
exact rational arithmetic; the OpenSpiel adapter's step (cause 7); SampledKStep's size limits
(cause 5). Every case must either succeed -- and then an independent oracle must say the value
was valid -- or raise a ValueError naming the culprit (the call and step, the agent, the
argument). Any other exception, a hang, or an accepted invalid value is a defect.

``MARL_KSTEP_FUZZ_EXAMPLES`` sets the examples per group (default 150), as in ``test_fuzz.py``.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_foreign_envs import Faulty, Pair
from test_fuzz import BAD, FUZZ, check, time_limit

import marl_kstep as mk
from marl_kstep.sampling import BoxDiscretiser, ObservationIndexer, space_encoder

SECONDS = 20
NASTY = st.one_of(BAD, st.sampled_from([2**70, -(2**70), 1.0, 2.0, 0, 1, 2, np.int64(1), np.array(1), np.array(2.0),
                                         [0, 1], [1, 2], (1, 0), np.array([1, 2]), np.array([1.0, 2.0]), [1],
                                         [[1, 2]], "x", b"1", None, True, np.bool_(False), 1e308, -0.0]))


# ------------------------------------------------------------------ oracles (what a valid value is)
def _integer_value(v):
    """The integer a scalar observation equals exactly, or None."""
    if isinstance(v, np.ndarray):
        return _integer_value(v[()]) if v.shape == () and v.dtype.kind in "biuf" else None
    if isinstance(v, bool | np.bool_ | numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v) == math.floor(float(v)):
        return int(v)
    return None


def valid_discrete(v, n):
    x = _integer_value(v)
    return x is not None and 0 <= x < n


def valid_multi(v, nvec):
    if isinstance(v, str | bytes) or v is None:
        return False
    try:
        a = np.asarray(v)
    except (ValueError, TypeError, OverflowError):
        return False
    if a.shape != (len(nvec),) or a.dtype.kind not in "biuf":
        return False
    return all(valid_discrete(x, n) for x, n in zip(a.tolist(), nvec, strict=True))


def valid_reward(v):
    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def valid_flag(v):
    return isinstance(v, bool | np.bool_) or (isinstance(v, numbers.Integral) and v in (0, 1))


# ------------------------------------------------------------------ cause 1: a user's env
FIELDS = {  # field: (index in the output tuple, agent or None, oracle of a valid value)
    "obs_a": (0, "a", lambda v: valid_discrete(v, 3)),
    "obs_b": (0, "b", lambda v: valid_multi(v, (2, 3))),
    "rew_a": (1, "a", valid_reward),
    "rew_b": (1, "b", valid_reward),
    "term_a": (2, "a", valid_flag),
    "trunc_b": (3, "b", valid_flag),
    "observations": (0, None, lambda v: False),
    "rewards": (1, None, lambda v: False),
    "terminations": (2, None, lambda v: False),
    "truncations": (3, None, lambda v: False),
    "everything": (None, None, lambda v: False),
}


@pytest.mark.filterwarnings("ignore::marl_kstep.NonCooperativeRewardWarning")
@FUZZ
@given(field=st.sampled_from(sorted(FIELDS)), at=st.integers(-1, 3), value=NASTY)
def test_fuzz_user_env_outputs(field, at, value):
    """One output of one call of a user's env replaced: success only when the value is valid."""
    index, agent, valid = FIELDS[field]
    if at == -1 and index not in (0, None):
        at = 0  # reset returns (observations, infos): its other fields come from step

    def fault(out, env):
        out = list(out)
        if index is None:
            return value
        if agent is None:
            out[index] = value
        else:
            out[index] = dict(out[index])
            out[index][agent] = value
        return tuple(out)

    env = Faulty(fault, at=at)
    where = "env.reset()" if at == -1 else f"env.step() at step {at}"
    names = [where]
    with time_limit(SECONDS):
        try:
            est = mk.SampledKStep(env, 2, gamma=0.9, episodes=3, seed=0)
            e = est.estimate(mk.Policy.uniform(est))
        except ValueError as exc:
            msg = str(exc)
            if field.startswith("rew_") and valid(value) and "overflow" in msg:
                return  # a valid reward so large that the returns' squares overflow float64: refused by name
            assert any(n in msg for n in names), f"ValueError does not name {names}: {msg!r}"
            if agent is not None:
                assert repr(agent) in msg, f"ValueError does not name agent {agent!r}: {msg!r}"
            return
    assert valid(value), f"{field} = {value!r} at {where} was accepted"
    assert np.isfinite(e.J_k)


# ------------------------------------------------------------------ cause 6: encoders
def cell_exact(v, lo, hi, bins):
    """``min(floor(bins * (clip(v) - lo) / (hi - lo)), bins - 1)`` in exact rational arithmetic."""
    v = min(max(v, lo), hi)
    f = Fraction(v) - Fraction(lo) if math.isfinite(v) else (Fraction(0) if v < 0 else Fraction(hi) - Fraction(lo))
    return min(math.floor(bins * f / (Fraction(hi) - Fraction(lo))), bins - 1), bins * f / (Fraction(hi) - Fraction(lo))


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@FUZZ
@given(lo=FINITE, hi=FINITE, bins=st.integers(1, 2**20), v=st.one_of(FINITE, st.sampled_from([np.inf, -np.inf])))
def test_fuzz_box_cells_against_exact_arithmetic(lo, hi, bins, v):
    if not lo < hi:
        with pytest.raises(ValueError, match="low"):
            BoxDiscretiser([lo], [hi], bins)
        return
    enc = BoxDiscretiser([lo], [hi], bins)
    got = enc(np.array([v]))
    want, exact = cell_exact(v, lo, hi, bins)
    # float rounding may only move a value that lies within a relative 1e-9 of a cell boundary
    if got != want:
        assert abs(got - want) == 1 and abs(exact - round(exact)) <= 1e-9 * max(1, abs(exact)), (got, want, exact)
    assert 0 <= got < bins
    if v == np.inf:
        assert got == bins - 1
    if v == -np.inf:
        assert got == 0


@FUZZ
@given(value=NASTY)
def test_fuzz_box_observations(value):
    enc = BoxDiscretiser([-1e308, 0.0], [1e308, 1.0], [5, 3])
    with time_limit(SECONDS):
        try:
            got = enc(value)
        except ValueError as exc:
            assert "observation" in str(exc), str(exc)
            return
    a = np.asarray(value, dtype=float).ravel()
    assert a.size >= 2 and not np.isnan(a[:2]).any() and 0 <= got < 15


@FUZZ
@given(bins=st.lists(st.integers(1, 2**40), min_size=1, max_size=4))
def test_fuzz_box_bin_counts(bins):
    n = math.prod(bins)
    try:
        enc = BoxDiscretiser([0.0] * len(bins), [1.0] * len(bins), bins)
    except ValueError as exc:
        assert n >= 2**62 and "bins" in str(exc)
        return
    assert enc.n == n < 2**62
    assert enc(np.ones(len(bins))) == n - 1 and enc(np.zeros(len(bins))) == 0


@FUZZ
@given(value=NASTY, decimals=st.one_of(st.none(), st.integers(-5, 400), st.just(10**30)))
def test_fuzz_observation_indexer(value, decimals):
    try:
        ix = ObservationIndexer(4, decimals=decimals)
    except ValueError as exc:
        assert "decimals" in str(exc) and not 0 <= decimals <= 300
        return
    with time_limit(SECONDS):
        try:
            first = ix(value)
        except ValueError as exc:
            assert "observation" in str(exc), str(exc)
            return
    assert ix(value) == first == 0  # the same observation, the same id
    a = np.asarray(value, dtype=object).ravel()
    assert not any(isinstance(x, float) and math.isnan(x) for x in a)


@FUZZ
@given(value=NASTY, multi=st.booleans())
def test_fuzz_space_encoders(value, multi):
    from gymnasium import spaces
    space = spaces.MultiDiscrete([2, 3]) if multi else spaces.Discrete(3, start=-1)
    enc = space_encoder(space)
    try:
        got = enc(value)
    except ValueError as exc:
        assert "is not in" in str(exc), str(exc)
        assert not (valid_multi(value, (2, 3)) if multi else valid_discrete(_shift(value), 3))
        return
    if multi:
        assert valid_multi(value, (2, 3))
        a = np.asarray(value).astype(int)
        assert got == a[0] * 3 + a[1]
    else:
        assert valid_discrete(_shift(value), 3) and got == _integer_value(value) + 1


def _shift(v):
    x = _integer_value(v)
    return None if x is None else x + 1


# ------------------------------------------------------------------ cause 7: the OpenSpiel adapter's step
@FUZZ
@given(value=NASTY)
def test_fuzz_spiel_step(value):
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv
    env = SpielParallelEnv(pyspiel.load_game("leduc_poker"))
    env.reset(seed=1)
    cur = f"player_{env.spiel_state.current_player()}"
    legal = env.spiel_state.legal_actions()
    try:
        env.step({cur: value})
    except ValueError as exc:
        assert cur in str(exc), str(exc)
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_) and value in legal
        assert not ok
        return
    assert isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_) and value in legal


# ------------------------------------------------------------------ cause 5: SampledKStep's limits
HUGE = st.one_of(st.integers(1, 2**70), st.sampled_from([2**31 - 1, 2**31, 2**62, 2**63, 10**30]))


@FUZZ
@given(key=st.sampled_from(["episodes", "horizon", "tail", "gamma_horizon"]), value=st.one_of(HUGE, BAD),
       env=st.booleans())
def test_fuzz_sampled_sizes(key, value, env):
    """Any size is refused by name before work, or runs within the (lowered) budget."""
    def model(gamma):
        P = np.zeros((2, 2, 2))
        P[:, :, 0] = 1.0
        return mk.JointMDP.from_dense(P, np.ones((2, 2)), [np.array([0, 1])], (2,), np.array([1.0, 0.0]), gamma)

    kw = dict(episodes=5)
    if key == "gamma_horizon":  # the default horizon at a discount close to 1
        gamma = 1 - 10.0 ** -(value % 17) if isinstance(value, int) and not isinstance(value, bool) else 0.5
        target, names = model(gamma), ["horizon", "max_sample_steps"]
    else:
        target = Pair() if env else model(0.9)
        kw[key] = value
        names = [key, "max_sample_steps", "scratch memory"]
        if env:
            kw["gamma"] = 0.9
    policy = mk.Policy.uniform(target if isinstance(target, mk.JointMDP) else mk.SampledKStep(Pair(), 1, gamma=0.9))
    with mk.configure(max_sample_steps=20_000):
        check(lambda: mk.SampledKStep(target, 2, **kw).estimate(policy), names)
