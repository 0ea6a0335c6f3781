"""The .dpomdp loader: every shipped file, hand-checked syntax forms, strict errors."""

import itertools

import numpy as np
import pytest
from helpers import SHARED_DPOMDP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR
from marl_kstep.model.dpomdp import augment, load_dpomdp, parse_dpomdp

DATA = DEFAULT_DATA_DIR
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark folder {DATA} is absent")
FILES = sorted(p.name for p in DATA.glob("*.dpomdp*")) if DATA.is_dir() else []
VALID = [f for f in FILES if not f.startswith("example")]

TINY = """\
# a hand-written problem exercising each syntax form
agents: alice bob
discount: 0.5
values: reward
states: left right
start include: left
actions:
stay go
2
observations:
seeL seeR
2
T: * :
identity
T: go * : left :
0.25 0.75
T: go * : right : left : 1
T: go * : right : right : 0
T: 3 : right :
uniform
T: stay 1 :
0.5 0.5
0.5 0.5
O: * :
uniform
O: * : left : seeL 0 : 0.4
O: * : left : seeL 1 : 0.4
O: * : left : seeR 0 : 0.1
O: * : left : seeR 1 : 0.1
R: * : * : * : * : 1
R: go 1 : left : * : * : 4
R: stay 0 : * : right :
2 2 2 2
R: 2 : left :
0 0 0 0
10 10 10 10
R: 0 : left : left : 1 1 : -3
"""


def test_tiny_file_every_form():
    dec = parse_dpomdp(TINY, "tiny")
    assert dec.agent_names == ("alice", "bob") and dec.action_names == (("stay", "go"), ("a0", "a1"))
    assert dec.obs_names == (("seeL", "seeR"), ("o0", "o1"))
    np.testing.assert_array_equal(dec.start, [1, 0])
    T = np.array([np.eye(2), np.full((2, 2), 0.5), [[0.25, 0.75], [1, 0]], [[0.25, 0.75], [0.5, 0.5]]])
    np.testing.assert_allclose(dec.T, T)
    O = np.empty((4, 2, 4))  # noqa: E741
    O[:, 0] = [0.4, 0.4, 0.1, 0.1]
    O[:, 1] = 0.25
    np.testing.assert_allclose(dec.O, O)
    # r[s, a] = sum_{s', o} T O R, worked out by hand in the module notes above
    np.testing.assert_allclose(dec.expected_reward(), [[0.6, 1, 7.5, 4], [2, 1, 1, 1]])


def brute_augmented_value(dec, tables, gamma):
    """Value of a deterministic policy on the augmented chain, built with plain loops."""
    n_obs = [len(o) for o in dec.obs_names]
    states = [(s, tuple(n_obs)) for s in range(dec.n_states) if dec.start[s] > 0]
    index = {x: i for i, x in enumerate(states)}
    trans, rew = {}, {}
    r_sa = dec.expected_reward()
    q = 0
    while q < len(states):
        s, o = states[q]
        q += 1
        acts = [tables[i][o[i]] for i in range(len(n_obs))]
        a = int(np.ravel_multi_index(acts, [len(x) for x in dec.action_names]))
        rew[(s, o)] = r_sa[s, a]
        out = {}
        for t in range(dec.n_states):
            for jo in range(dec.O.shape[2]):
                p = dec.T[a, s, t] * dec.O[a, t, jo]
                if p > 0:
                    x = (t, tuple(int(v) for v in np.unravel_index(jo, n_obs)))
                    if x not in index:
                        index[x] = len(states)
                        states.append(x)
                    out[x] = out.get(x, 0) + p
        trans[(s, o)] = out
    n = len(states)
    P = np.zeros((n, n))
    r = np.zeros(n)
    for x, out in trans.items():
        r[index[x]] = rew[x]
        for y, p in out.items():
            P[index[x], index[y]] += p
    V = np.linalg.solve(np.eye(n) - gamma * P, r)
    return sum(dec.start[s] * V[index[(s, tuple(n_obs))]] for s in range(dec.n_states) if dec.start[s] > 0)


@pytest.mark.parametrize("tables", [[[0, 0, 0], [0, 0, 0]], [[1, 0, 1], [1, 1, 0]], [[0, 1, 1], [1, 0, 1]]])
def test_tiny_file_augmented_values(tables):
    dec = parse_dpomdp(TINY, "tiny")
    mdp = augment(dec)  # the file's discount 0.5 is below 1
    assert mdp.gamma == 0.5 and mdp.obs_names[0] == ("seeL", "seeR", "start")
    pol = mk.Policy.deterministic(mdp, tables)
    assert mk.value(mdp, pol) == pytest.approx(brute_augmented_value(dec, tables, 0.5), abs=1e-12)


@pytest.mark.parametrize(
    "start,expected",
    [("start:\nuniform", [0.5, 0.5]), ("start: right", [0, 1]), ("start: 1", [0, 1]),
     ("start:\n0.3 0.7", [0.3, 0.7]), ("start exclude: left", [0, 1]), ("start include: 0 right", [0.5, 0.5])],
)
def test_start_forms(start, expected):
    np.testing.assert_allclose(parse_dpomdp(TINY.replace("start include: left", start)).start, expected)


def test_cost_values_negate_rewards():
    dec = parse_dpomdp(TINY.replace("values: reward", "values: cost"))
    np.testing.assert_allclose(dec.expected_reward(), -np.array([[0.6, 1, 7.5, 4], [2, 1, 1, 1]]))


@pytest.mark.parametrize(
    "old,new,msg",
    [
        ("T: 3 : right :", "T: 4 : right :", r"tiny:19: joint action index 4 is out of range \(0..3\)"),
        ("0.25 0.75", "0.25 0.70", r"tiny:15: T row for joint action 2, start state 'left' sums to 0.95"),
        ("O: * : left : seeR 1 : 0.1", "O: * : left : seeR 1 : x", r"tiny:29: expected probability \(a number\)"),
        ("states: left right", "states: left right left", r"tiny:5: duplicate names among states"),
        ("discount: 0.5", "gamma: 0.5", r"tiny:3: expected 'discount:'"),
        ("R: 0 : left : left : 1 1 : -3", "R: 0 : left : up : 1 1 : -3", r"tiny:37: unknown state 'up'"),
        ("T: go * : right : left : 1", "T: go * : right : left", r"tiny:17: expected 'T: <a> : <s> : <s'> : <p>'"),
        ("2 2 2 2", "2 2 2", r"tiny:33: expected 4 numbers \(rewards\), got 3"),
        ("T: * :\nidentity", "T: * :\nidentity\nQ: 1", r"expected an entry starting with 'T:', 'O:' or 'R:'"),
    ],
)
def test_malformed_lines_name_the_line(old, new, msg):
    assert old in TINY
    with pytest.raises(ValueError, match=msg):
        parse_dpomdp(TINY.replace(old, new), "tiny")


def test_discount_one_needs_gamma():
    text = TINY.replace("discount: 0.5", "discount: 1")
    with pytest.raises(ValueError, match=r"the file's discount is 1.0.*pass gamma"):
        augment(parse_dpomdp(text, "tiny"))
    assert augment(parse_dpomdp(text, "tiny"), gamma=0.9).gamma == 0.9


@needs_data
@pytest.mark.parametrize("name", VALID)
def test_every_shipped_file_loads(name):
    mdp = load_dpomdp(DATA / name, gamma=0.9)
    P = mdp.transition_matrix()
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-9)
    assert mdp.n_states >= 1 and mdp.state_names is not None and mdp.action_names is not None
    assert all(len(n) == o for n, o in zip(mdp.obs_names, mdp.n_obs, strict=True))
    # every kept state is reachable from the start distribution
    from scipy.sparse import csgraph, csr_matrix

    N, J = mdp.n_states, mdp.n_joint_actions
    graph = csr_matrix((np.ones(N * J), (np.repeat(np.arange(N), J), np.arange(N * J))), shape=(N, N * J)) @ P
    graph = csr_matrix(np.vstack([graph.toarray(), mdp.mu[None, :]]))  # extra root -> start states
    graph.resize((N + 1, N + 1))
    reached = csgraph.breadth_first_order(graph, N, return_predecessors=False)
    assert set(reached) == set(range(N + 1))


@pytest.mark.skipif(not (SHARED_DPOMDP / "example.dpomdp").exists(), reason="../shared/benchmarks is absent")
def test_example_file_is_rejected_with_its_line():
    with pytest.raises(ValueError, match=r"example.dpomdp:\d+: "):
        load_dpomdp(SHARED_DPOMDP / "example.dpomdp", gamma=0.9)


@needs_data
def test_dectiger_always_listen_is_minus_20():
    mdp = load_dpomdp(DATA / "dectiger.dpomdp", gamma=0.9)
    listen = mk.Policy.deterministic(mdp, [[0, 0, 0], [0, 0, 0]])
    assert mk.value(mdp, listen) == pytest.approx(-20.0, abs=1e-12)
    for k in (2, 3):
        assert mk.value(mdp, listen, k) == pytest.approx(-20.0, abs=1e-12)


@needs_data
def test_gridsmall_reference_numbers():
    mdp = load_dpomdp(DATA / "GridSmall.dpomdp")  # the file's own discount is 0.9
    assert mk.best_deterministic(mdp)[0] == pytest.approx(6.0627, abs=1e-4)


SMALL = [f for f in VALID if not f.endswith(".gz")]


@needs_data
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_raise_only_value_errors(data):
    name = data.draw(st.sampled_from(SMALL))
    lines = (DATA / name).read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    kind = data.draw(st.sampled_from(["delete", "duplicate", "token", "truncate", "garbage"]))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "truncate":
        lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
    elif kind == "garbage":
        lines[i] = data.draw(st.text(alphabet="ab01:.*-# \t", max_size=20))
    else:
        toks = lines[i].split(" ")
        j = data.draw(st.integers(0, len(toks) - 1))
        toks[j] = data.draw(st.sampled_from(["*", "-1", "1e400", "nan", "99", "0.5", "", ":", "uniform", "x"]))
        lines[i] = " ".join(toks)
    try:
        augment(parse_dpomdp("\n".join(lines), name), gamma=0.9)
    except ValueError as exc:
        assert name in str(exc)


def test_tiny_search_counts_only_seen_observations():
    mdp = augment(parse_dpomdp(TINY, "tiny"))
    # every observation has positive probability after the first step, so all 3 symbols occur
    assert mk.search.count_deterministic(mdp) == 2**3 * 2**3
    best, pol = mk.best_deterministic(mdp)
    brute = max(brute_augmented_value(parse_dpomdp(TINY, "tiny"), [list(t0), list(t1)], 0.5)
                for t0 in itertools.product(range(2), repeat=3) for t1 in itertools.product(range(2), repeat=3))
    assert best == pytest.approx(brute, abs=1e-12)
