"""Random problem families (marl_kstep.model.random_models): sizes, stochasticity, seeds, the folded noise."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.model.random_models import FAMILIES, random_model_args

FAMILY_NAMES = tuple(FAMILIES)


def test_public_names():
    assert mk.random_model is mk.model.random_model
    assert mk.random_model_args is random_model_args


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_args_are_resolved_json(family):
    args = random_model_args(family, seed=3)
    assert set(args) == {"family", "n_agents", "n_states", "n_obs", "n_actions", "branching", "obs_noise",
                         "gamma", "seed"}
    assert json.loads(json.dumps(args)) == args  # plain JSON
    assert random_model_args(**args) == args  # resolving twice changes nothing
    for key, default in FAMILIES[family].items():
        assert args[key] == default


@pytest.mark.parametrize("family", ["aggregation", "decentralized"])
def test_sizes_and_stochasticity(family):
    n_agents = 1 if family == "aggregation" else 3
    mdp = mk.random_model(family, seed=5, n_agents=n_agents, n_states=7, n_obs=4, n_actions=3, branching=3,
                          gamma=0.8)
    J = 3**n_agents
    assert mdp.n_states == 7 and mdp.n_actions == (3,) * n_agents and mdp.n_obs == (4,) * n_agents
    assert mdp.gamma == 0.8
    P = mdp.to_dense()
    assert P.shape == (7, J, 7)
    np.testing.assert_allclose(P.sum(axis=2), 1.0, atol=1e-12)
    assert np.all((P > 0).sum(axis=2) == 3)  # exactly `branching` successors per (s, j)
    R = np.asarray(mdp.rewards)
    assert R.shape == (7, J) and R.min() >= 0.0 and R.max() < 1.0 and R.std() > 0.1
    np.testing.assert_allclose(mdp.mu, np.full(7, 1 / 7))
    for o in mdp.obs:  # a surjective aliasing map: every observation seen, some states aliased
        assert sorted(set(o.tolist())) == [0, 1, 2, 3]


def test_decentralized_agents_alias_differently():
    mdp = mk.random_model("decentralized", seed=0, n_agents=2, n_states=12, n_obs=3)
    assert not np.array_equal(mdp.obs[0], mdp.obs[1])


def test_dec_pomdp_is_the_folded_noisy_model():
    """Rebuild the augmented model by brute force from the hidden one (SPEC §6) and compare."""
    eps, N, O, A = 0.3, 3, 2, 2  # noqa: E741
    mdp = mk.random_model("dec-pomdp", seed=2, n_agents=2, n_states=N, n_obs=O, n_actions=A, branching=2,
                          obs_noise=eps)
    assert mdp.n_obs == (O + 1, O + 1)  # the start symbol
    # recover the hidden parts from the same draws
    rng = np.random.default_rng(2)
    from marl_kstep.model.random_models import _surjection, _transitions

    f = [_surjection(rng, N, O) for _ in range(2)]
    indptr, succ, probs = _transitions(rng, N * A * A, N, 2)
    R = rng.random((N, A * A))
    T = np.zeros((N, A * A, N))
    for row in range(N * A * A):
        T[row // (A * A), row % (A * A), succ[2 * row:2 * row + 2]] = probs[2 * row:2 * row + 2]

    def p_obs(i, o, s):
        return (1 - eps) * (o == f[i][s]) + eps / O

    names = mdp.state_names
    index = {name: x for x, name in enumerate(names)}
    P = mdp.to_dense()
    for x, name in enumerate(names):
        s = int(name.split("|")[0][1:])
        np.testing.assert_allclose(mdp.rewards[x], R[s])
        for j in range(A * A):
            expect = np.zeros(mdp.n_states)
            for t in range(N):
                for o0 in range(O):
                    for o1 in range(O):
                        expect[index[f"s{t}|o{o0},o{o1}"]] += T[s, j, t] * p_obs(0, o0, t) * p_obs(1, o1, t)
            np.testing.assert_allclose(P[x, j], expect, atol=1e-12)
    start = [x for x, name in enumerate(names) if name.endswith("|start,start")]
    assert len(start) == N and math.isclose(mdp.mu[start].sum(), 1.0)
    np.testing.assert_allclose(mdp.mu[start], 1 / N)


def test_dec_pomdp_without_noise_sees_the_signal():
    mdp = mk.random_model("dec-pomdp", seed=1, n_agents=2, n_states=5, n_obs=3, obs_noise=0.0)
    # every non-start state's observation pair is determined by its hidden state
    seen = {}
    for name in mdp.state_names:
        s, o = name.split("|")
        if o != "start,start":
            assert seen.setdefault(s, o) == o
    assert len(seen) == 5


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_same_seed_same_model_other_seed_another(family):
    a, b, c = (mk.random_model(family, seed=s) for s in (4, 4, 5))
    for name in ("indptr", "indices", "probs", "rewards", "mu"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert all(np.array_equal(x, y) for x, y in zip(a.obs, b.obs, strict=True))
    assert a.n_states != c.n_states or not np.array_equal(a.rewards, c.rewards)
    assert mk.random_model(**random_model_args(family, seed=4)).probs.tobytes() == a.probs.tobytes()


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(family="bogus"), "family"),
    (dict(family="aggregation", n_agents=2), "n_agents"),
    (dict(family="decentralized", n_agents=0), "n_agents"),
    (dict(family="aggregation", n_states=0), "n_states"),
    (dict(family="aggregation", n_states=4, n_obs=5), "n_obs"),
    (dict(family="aggregation", n_obs=0), "n_obs"),
    (dict(family="aggregation", n_actions=0), "n_actions"),
    (dict(family="aggregation", n_states=4, branching=5), "branching"),
    (dict(family="aggregation", obs_noise=0.1), "obs_noise"),
    (dict(family="dec-pomdp", obs_noise=1.5), "obs_noise"),
    (dict(family="aggregation", gamma=1.0), "gamma"),
    (dict(family="aggregation", n_states=2.5), "n_states"),
])
def test_bad_sizes_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mk.random_model(seed=0, **kwargs)


def test_bad_seed_is_named():
    with pytest.raises(ValueError, match="seed"):
        mk.random_model("aggregation", seed=-1)


def test_too_large_is_refused_before_drawing():
    with mk.configure(max_model_bytes=10**6), pytest.raises(ValueError, match="GiB"):
        mk.random_model("decentralized", seed=0, n_agents=4, n_states=2000, n_actions=3)


BAD = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.just(float("nan")), st.just(float("inf")),
    st.integers(-10, 10), st.floats(-1e3, 1e3), st.just(10**30), st.just(2.5), st.complex_numbers(max_magnitude=10),
    st.just(object()), st.just(np.array([1, 2])), st.just({}), st.lists(st.integers(0, 3), max_size=3),
)


@pytest.mark.parametrize("name", ["family", "seed", "n_agents", "n_states", "n_obs", "n_actions", "branching",
                                  "obs_noise", "gamma"])
@settings(max_examples=60, deadline=None)
@given(value=BAD)
def test_fuzz_one_bad_argument_is_named(name, value):
    """A valid call with one argument replaced: success, or a ValueError naming that argument."""
    kwargs = dict(family="dec-pomdp", seed=1, n_agents=2, n_states=3, n_obs=2, n_actions=2, branching=1,
                  obs_noise=0.1, gamma=0.9)
    kwargs[name] = value
    try:
        mdp = mk.random_model(**kwargs)
    except ValueError as exc:
        assert name in str(exc)
    else:
        assert isinstance(mdp, mk.JointMDP)
