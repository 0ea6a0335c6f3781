"""Policy files (Policy.save / load / to_dict / from_dict, marl_kstep.policy_io) and evaluate_policy."""

import contextlib
import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from test_architecture import import_graph
from test_fuzz import BAD, FUZZ, check

import marl_kstep as mk
from marl_kstep import policy_io
from marl_kstep.envs.pz import mdp_parallel_env
from marl_kstep.experiments.scenarios import SCENARIOS
from marl_kstep.sampling.evaluate import Evaluation, evaluate

DECTIGER = mk.dpomdp_path("dectiger")  # the shipped copy


def bits(policy):
    return [t.view(np.uint64).copy() for t in policy.theta]


def same_bits(p, q) -> bool:
    return len(p.theta) == len(q.theta) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(bits(p), bits(q), strict=True))


def scenario_mdp(name, **override):
    module, config, _ = SCENARIOS[name]
    return mk.compile_env(module.parallel_env(**{**config, **override}))


def problems():
    """Every registry scenario (its default config) and a .dpomdp model."""
    out = {name: scenario_mdp(name) for name in SCENARIOS}
    if DECTIGER.exists():
        out["dectiger"] = mk.load_dpomdp(DECTIGER, gamma=0.9)
    return out


PROBLEMS = problems()


@pytest.fixture(params=sorted(PROBLEMS))
def problem(request):
    return request.param, PROBLEMS[request.param]


def test_the_dpomdp_benchmark_is_there():
    assert "dectiger" in PROBLEMS, f"{DECTIGER} is missing"


# ------------------------------------------------------------------------------------ round trips
def test_round_trip_is_bitwise_for_every_problem(problem, tmp_path):
    name, mdp = problem
    starts = [mk.Policy.random(mdp, seed=3), mk.Policy.near_uniform(mdp, seed=1),
              mk.Policy.deterministic(mdp, [np.arange(o) % a for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])]
    if name in SCENARIOS:
        starts.append(SCENARIOS[name][2](mdp))
    for j, pol in enumerate(starts):
        path = tmp_path / f"{name}_{j}.json"
        assert pol.save(path, mdp, metadata={"scenario": name, "j": j}) == path
        back = mk.Policy.load(path, mdp)
        assert same_bits(pol, back)
        assert same_bits(pol, mk.Policy.load(path))  # without a model: shapes from the file
        assert mk.value(mdp, back, 2) == mk.value(mdp, pol, 2)
        doc = json.loads(path.read_text())
        assert doc == pol.to_dict(mdp, metadata={"scenario": name, "j": j})  # the file is to_dict, nothing else
        assert doc["schema"] == "marl_kstep.policy/1"
        assert doc["metadata"] == {"scenario": name, "j": j}
        assert doc["model"]["fingerprint"] == policy_io.model_fingerprint(mdp)["fingerprint"]
        assert doc["model"]["n_states"] == mdp.n_states and doc["model"]["gamma"] == mdp.gamma
        assert [ag["shape"] for ag in doc["agents"]] == [[o, a] for o, a in zip(mdp.n_obs, mdp.n_actions,
                                                                                  strict=True)]
        assert same_bits(pol, mk.Policy.from_dict(doc, mdp))


def test_names_come_from_the_model_or_are_generic(tmp_path):
    tiger = PROBLEMS["dectiger"]
    doc = mk.Policy.uniform(tiger).to_dict(tiger)
    assert doc["names_from_model"] == {"agents": True, "observations": True, "actions": True}
    assert [ag["name"] for ag in doc["agents"]] == list(tiger.agent_names)
    assert doc["agents"][1]["actions"] == list(tiger.action_names[1])
    assert doc["agents"][0]["observations"] == list(tiger.obs_names[0])
    bare = mk.Policy.uniform(tiger).to_dict()
    assert bare["names_from_model"] == {"agents": False, "observations": False, "actions": False}
    assert bare["model"] is None and bare["metadata"] is None
    assert [ag["name"] for ag in bare["agents"]] == ["agent_0", "agent_1"]
    assert bare["agents"][0]["observations"] == ["obs_0", "obs_1", "obs_2"]
    assert bare["agents"][0]["actions"] == ["a_0", "a_1", "a_2"]
    # a file without a model still loads for the model (no names or fingerprint to compare)
    mk.Policy.uniform(tiger).save(tmp_path / "bare.json")
    assert same_bits(mk.Policy.load(tmp_path / "bare.json", tiger), mk.Policy.uniform(tiger))
    # a scenario environment gives its model's names (its agent ids agent_i are generated, not names)
    module, config, _ = SCENARIOS["number_matching"]
    doc = mk.Policy.uniform(PROBLEMS["number_matching"]).to_dict(module.parallel_env(**config))
    assert doc["names_from_model"] == {"agents": False, "observations": True, "actions": True}
    assert doc["agents"][0]["actions"] == ["keep", "inc"] and doc["model"] is None
    # the environment of a JointMDP stands for the JointMDP: names and fingerprint
    path = tmp_path / "tiger.json"
    mk.Policy.uniform(tiger).save(path, mdp_parallel_env(tiger))
    assert json.loads(path.read_text()) == mk.Policy.uniform(tiger).to_dict(tiger)
    assert same_bits(mk.Policy.load(path, mdp_parallel_env(tiger)), mk.Policy.uniform(tiger))
    with pytest.raises(ValueError, match="fingerprint differs in gamma"):
        mk.Policy.load(path, mdp_parallel_env(dataclasses.replace(tiger, gamma=0.5)))


def test_special_floats_round_trip_bitwise(tmp_path):
    mdp = PROBLEMS["grid_coordination"]  # 5 actions
    sub = 5e-324
    rows = [[sub, 0.0, -0.0, 2.2250738585072014e-308 / 3, 1.0 - sub - 2.2250738585072014e-308 / 3],
            [1.0 - 2.0**-53, 2.0**-53, 0.0, 0.0, 0.0],
            [0.1 + 0.2, 1.0 - (0.1 + 0.2), 0.0, 0.0, 0.0],
            [0.2, 0.2, 0.2, 0.2, 0.2]]
    base = mk.Policy.uniform(mdp)
    theta = [t.copy() for t in base.theta]
    theta[0][:4] = rows
    theta[1][-4:] = rows[::-1]
    pol = mk.Policy.from_arrays(mdp, theta)
    assert np.signbit(pol.theta[0][0, 2]) and pol.theta[0][2, 0] == 0.30000000000000004
    pol.save(tmp_path / "p.json", mdp)
    back = mk.Policy.load(tmp_path / "p.json", mdp)
    assert same_bits(pol, back)
    assert np.signbit(back.theta[0][0, 2]) and back.theta[0][0, 0] == sub and back.theta[0][1, 0] == 1.0 - 2.0**-53


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
                min_size=1, max_size=4))
def test_any_finite_table_round_trips_bitwise_as_free_entries(rows):
    pol = mk.Policy([np.array(rows), np.array(rows)[::-1].copy()], free_entries=True)
    text = policy_io.dumps(pol.to_dict(metadata={"x": rows[0][0]}))
    back = mk.Policy.from_dict(json.loads(text))
    assert back.free_entries and same_bits(pol, back)


def test_metadata_keeps_a_run_spec_and_refuses_what_is_not_json(tmp_path):
    mdp = PROBLEMS["two_state"]
    spec = {"target": {"scenario": "two_state"}, "k": np.int64(2), "step": np.float64(0.5),
            "seeds": np.arange(3), "tags": ("a", "b"), "nested": {"ok": None, "flag": True}}
    mk.Policy.uniform(mdp).save(tmp_path / "p.json", mdp, metadata=spec)
    meta = policy_io.read_document(tmp_path / "p.json")["metadata"]
    assert meta == {"target": {"scenario": "two_state"}, "k": 2, "step": 0.5, "seeds": [0, 1, 2],
                    "tags": ["a", "b"], "nested": {"ok": None, "flag": True}}
    assert type(meta["k"]) is int
    for bad, word in (({"f": float("nan")}, "metadata['f']"), ({"o": object()}, "metadata['o']"),
                      ({1: "x"}, "key 1"), ([1, {2, 3}], "metadata[1]")):
        with pytest.raises(ValueError, match=word.replace("[", r"\[").replace("]", r"\]")):
            mk.Policy.uniform(mdp).save(tmp_path / "bad.json", mdp, metadata=bad)
    assert not (tmp_path / "bad.json").exists()  # refused before anything is written


def test_save_is_atomic(tmp_path, monkeypatch):
    mdp = PROBLEMS["two_state"]
    path = tmp_path / "p.json"
    mk.Policy.uniform(mdp).save(path, mdp)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        mk.Policy.deterministic(mdp, [[1]]).save(path, mdp)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temporary file left


def test_a_policy_that_does_not_fit_is_not_saved(tmp_path):
    tiger, chain = PROBLEMS["dectiger"], PROBLEMS["aggregated_chain"]
    with pytest.raises(ValueError, match="policy has 2 agents; the MDP has 1"):
        mk.Policy.uniform(tiger).save(tmp_path / "p.json", chain)
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(ValueError, match="model must be a JointMDP"):
        mk.Policy.uniform(tiger).save(tmp_path / "p.json", "tiger")


# ------------------------------------------------------------------------------------ fingerprints
def test_fingerprint_is_the_model_not_how_it_was_built():
    mdp = PROBLEMS["number_matching"]
    P = mdp.to_dense()
    dense = mk.JointMDP.from_dense(P, mdp.rewards, mdp.obs, mdp.n_actions, mdp.mu, mdp.gamma, n_obs=mdp.n_obs)
    # the same transitions as a shuffled CSR with a split entry
    rng = np.random.default_rng(0)
    rows, cols, probs = [], [], []
    for r in range(mdp.indptr.size - 1):
        lo, hi = mdp.indptr[r], mdp.indptr[r + 1]
        idx, p = list(mdp.indices[lo:hi]), list(mdp.probs[lo:hi])
        idx.append(idx[0])
        p[0] /= 2
        p.append(p[0])
        order = rng.permutation(len(idx))
        rows.append(len(idx))
        cols += [idx[o] for o in order]
        probs += [p[o] for o in order]
    indptr = np.concatenate([[0], np.cumsum(rows)])
    shuffled = mk.JointMDP.from_sparse(indptr, cols, probs, mdp.rewards, mdp.obs, mdp.n_actions, mdp.mu, mdp.gamma,
                                       n_obs=mdp.n_obs)
    fp = policy_io.model_fingerprint(mdp)
    assert policy_io.model_fingerprint(dense) == fp
    if np.array_equal(shuffled.probs, mdp.probs):  # halving and re-adding may round; compare what is equal
        assert policy_io.model_fingerprint(shuffled) == fp
    assert policy_io.model_fingerprint(pickle.loads(pickle.dumps(mdp))) == fp
    assert policy_io.model_facts(mk.ExactKStep(mdp, 2)).fingerprint == fp
    # every part counts
    for field, new in (("gamma", 0.5), ("mu", np.r_[1.0, np.zeros(mdp.n_states - 1)]),
                       ("rewards", mdp.rewards + np.eye(*mdp.rewards.shape))):
        other = policy_io.model_fingerprint(dataclasses.replace(mdp, **{field: new}))
        assert other["fingerprint"] != fp["fingerprint"]
        assert [p for p in policy_io.FINGERPRINT_PARTS if other["parts"][p] != fp["parts"][p]] == [field]


def test_estimators_and_environments_stand_for_their_model(tmp_path):
    mdp = PROBLEMS["number_matching"]
    pol = mk.Policy.random(mdp, seed=2)
    pol.save(tmp_path / "p.json", mk.ExactKStep(mdp, 2))
    assert same_bits(mk.Policy.load(tmp_path / "p.json", mdp), pol)
    assert same_bits(mk.Policy.load(tmp_path / "p.json", mk.SampledKStep(mdp, 1, seed=0)), pol)
    module, config, _ = SCENARIOS["number_matching"]
    env = module.parallel_env(**config)
    assert same_bits(mk.Policy.load(tmp_path / "p.json", env), pol)  # shapes and names; no fingerprint to compare


# ------------------------------------------------------------------------------------ the wrong model
def test_a_policy_for_another_model_is_refused_by_name(problem, tmp_path):
    name, mdp = problem
    path = tmp_path / f"{name}.json"
    mk.Policy.random(mdp, seed=0).save(path, mdp)
    for other_name, other in PROBLEMS.items():
        if other_name == name:
            continue
        with pytest.raises(ValueError, match=rf"policy file '{path}' is for another model: "
                                             r"(it has \d agents|agent \d has \d+ (observations|actions)"
                                             r"|the (agent|observation|action) names differ"
                                             r"|its fingerprint differs in (rewards|transitions))"):
            mk.Policy.load(path, other)
    # the same shapes at another discount: refused by its fingerprint, accepted on request
    other_gamma = dataclasses.replace(mdp, gamma=0.5)
    with pytest.raises(ValueError, match=rf"policy file '{path}' is for another model: its fingerprint differs in "
                                         rf"gamma \(gamma: file {mdp.gamma}, model 0.5\); "
                                         "pass check_fingerprint=False"):
        mk.Policy.load(path, other_gamma)
    assert same_bits(mk.Policy.load(path, other_gamma, check_fingerprint=False), mk.Policy.load(path))


def test_the_issue_cases_registry_defaults_and_another_layout(tmp_path):
    """A number_matching policy trained with the registry's ``start: far`` is refused for the module
    default (another initial distribution); a grid corridor policy for the default 3x3 room."""
    far = PROBLEMS["number_matching"]
    default = mk.compile_env(SCENARIOS["number_matching"][0].parallel_env())
    path = tmp_path / "nm.json"
    mk.Policy.random(far, seed=0).save(path, far)
    if default.n_states == far.n_states:
        with pytest.raises(ValueError, match=r"is for another model: its fingerprint differs in .*mu"):
            mk.Policy.load(path, default)
    else:
        with pytest.raises(ValueError, match=r"fingerprint differs in .*; states: file "):
            mk.Policy.load(path, default)
    corridor = PROBLEMS["grid_coordination"]
    room = mk.compile_env(SCENARIOS["grid_coordination"][0].parallel_env())
    mk.Policy.random(corridor, seed=0).save(tmp_path / "grid.json", corridor)
    with pytest.raises(ValueError, match="is for another model"):
        mk.Policy.load(tmp_path / "grid.json", room)


def test_other_names_are_refused(tmp_path):
    tiger = PROBLEMS["dectiger"]
    path = tmp_path / "tiger.json"
    mk.Policy.uniform(tiger).save(path, tiger)
    renamed = dataclasses.replace(tiger, action_names=(("listen", "open-left", "open-right"),
                                                       ("listen", "open-right", "open-left")))
    with pytest.raises(ValueError, match=r"the action names differ at agent 1: file \('listen', 'open-left', "
                                         r"'open-right'\), model \('listen', 'open-right', 'open-left'\)"):
        mk.Policy.load(path, renamed, check_fingerprint=False)
    agents = dataclasses.replace(tiger, agent_names=("a", "b"))
    with pytest.raises(ValueError, match="the agent names differ at agent 0: file 'agent0', model 'a'"):
        mk.Policy.load(path, agents)
    assert same_bits(mk.Policy.load(path, dataclasses.replace(tiger, agent_names=None)), mk.Policy.uniform(tiger))


# ------------------------------------------------------------------------------------ damaged and foreign files
def saved(tmp_path, name="p.json"):
    mdp = PROBLEMS["dectiger"]
    path = tmp_path / name
    mk.Policy.random(mdp, seed=0).save(path, mdp)
    return path, mdp


def test_a_damaged_file_is_refused_by_name_line_and_column(tmp_path):
    path, mdp = saved(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    lines = text[: len(text) // 2].count("\n") + 1
    with pytest.raises(ValueError, match=rf"policy file '{path}' is damaged: .* at line {lines} column \d+"):
        mk.Policy.load(path, mdp)
    path.write_text("")
    with pytest.raises(ValueError, match=rf"policy file '{path}' is damaged: Expecting value at line 1 column 1"):
        mk.Policy.load(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ValueError, match=rf"policy file '{path}' is not a JSON text \(byte \d+ is not UTF-8\)"):
        mk.Policy.load(path)
    path.write_text(text.replace("[0.", "[NaN, 0.", 1))
    with pytest.raises(ValueError, match=rf"policy file '{path}' is damaged: NaN is not a JSON number"):
        mk.Policy.load(path)
    with pytest.raises(FileNotFoundError):
        mk.Policy.load(tmp_path / "missing.json")


def edited(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc).replace('"@1e999@"', "1e999"))  # a literal that parses to inf
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(schema="marl_kstep.policy/2"),
     r"has schema 'marl_kstep.policy/2'; this version of marl_kstep \(.*\) reads 'marl_kstep.policy/1' only"),
    (lambda d: d.pop("schema"), r"is not a marl_kstep policy: it has no 'schema' entry"),
    (lambda d: d.pop("agents"), r"has no 'agents' entry"),
    (lambda d: d.update(agents=[]), r"\['agents'\] is empty"),
    (lambda d: d.update(free_entries="no"), r"\['free_entries'\] must be true or false; got 'no'"),
    (lambda d: d["agents"][1].update(shape=[3, 0]), r"\['agents'\]\[1\]\['shape'\] must be \[observations, actions\]"),
    (lambda d: d["agents"][1].update(shape=[4, 3]), r"\['agents'\]\[1\]\['observations'\] must be a list of 4 strings"),
    (lambda d: d["agents"][0]["table"].pop(), r"\['agents'\]\[0\]\['table'\] has 2 rows; its shape says 3"),
    (lambda d: d["agents"][0]["table"][1].pop(), r"\['agents'\]\[0\]\['table'\]\[1\] must be a list of 3 numbers"),
    (lambda d: d["agents"][0]["table"][2].__setitem__(1, "0.5"), r"\['table'\]\[2\]\[1\] = '0.5' is not a number"),
    (lambda d: d["agents"][0]["table"][2].__setitem__(1, True), r"\['table'\]\[2\]\[1\] = True is not a number"),
    (lambda d: d["agents"][0]["table"][2].__setitem__(1, 10**400), r"\['table'\]\[2\]\[1\] is an integer beyond"),
    (lambda d: d["agents"][1]["table"][0].__setitem__(0, "@1e999@"), r"\['table'\]\[0\]\[0\] = inf is not finite"),
    (lambda d: d["agents"][1]["table"][0].__setitem__(0, 1.5), r": row theta\[1\]\[0\] sums to .*simplex"),
    (lambda d: d["agents"][1]["table"][2].__setitem__(0, -0.25), r": theta\[1\]\[2, 0\] = -0.25 is negative"),
    (lambda d: d["names_from_model"].pop("actions"), r"\['names_from_model'\] has no 'actions' entry"),
    (lambda d: d["model"]["parts"].pop("mu"), r"\['model'\]\['parts'\] has no 'mu' entry"),
    (lambda d: d.update(model=[1]), r"\['model'\] must be an object or null"),
])
def test_an_edited_file_is_refused_by_name_and_entry(tmp_path, change, message):
    path, mdp = saved(tmp_path)
    edited(path, change)
    with pytest.raises(ValueError, match=rf"^policy file '{path}'(\[| has| is|:)"):
        mk.Policy.load(path)
    with pytest.raises(ValueError, match=message):
        mk.Policy.load(path, mdp)


def test_foreign_json_is_refused_by_name(tmp_path):
    for i, doc in enumerate(([1, 2], "policy", {"rows": [], "config": {}}, {"schema": "something.else/1"})):
        path = tmp_path / f"foreign{i}.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=rf"policy file '{path}' (is not a marl_kstep policy|has schema "
                                             r"'something.else/1')"):
            mk.Policy.load(path)
    with pytest.raises(ValueError, match="policy document is not a marl_kstep policy"):
        mk.Policy.from_dict(["not", "a", "policy"])
    with pytest.raises(ValueError, match="check_fingerprint must be True or False"):
        mk.Policy.from_dict({}, check_fingerprint="no")


def test_policy_io_stays_in_its_layer():
    g = import_graph()
    below = ("marl_kstep.model", "marl_kstep.estimators", "marl_kstep.optim", "marl_kstep.sampling",
             "marl_kstep.experiments", "marl_kstep.envs", "marl_kstep.cli")
    for mod in ("marl_kstep.policy_io", "marl_kstep.policy"):
        assert not [b for b in g.successors(mod) if b.startswith(below)], sorted(g.successors(mod))
    assert g.has_edge("marl_kstep.policy", "marl_kstep.policy_io")


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_covers_the_exact_value():
    """z-scores of independent evaluations against the exact J_k: each small, their mean near 0,
    and the 95% intervals cover the exact value about 95% of the time."""
    mdp = PROBLEMS["number_matching"]
    pol = mk.Policy.random(mdp, seed=5)
    for k in (1, 3):
        runs = [evaluate(mdp, pol, k=k, episodes=400, seed=s) for s in range(30)]
        exact = mk.value(mdp, pol, k)
        assert all(r.exact == exact for r in runs)  # the exact value is mk.value's, bit for bit
        z = np.array([r.z for r in runs])
        assert np.abs(z).max() < 4.0, z
        assert abs(z.mean()) * np.sqrt(z.size) < 4.0, z.mean()
        covered = sum(r.ci[0] <= exact <= r.ci[1] for r in runs)
        assert stats.binom.cdf(covered, 30, 0.95) > 1e-3, covered  # 30 intervals: P(<= covered) not tiny
        # truncation bias is small beside the pooled standard error the mean z is judged by
        assert runs[0].truncation_bound < 0.1 * runs[0].se / np.sqrt(len(runs))


def test_evaluate_reports_the_student_interval_and_is_reproducible():
    mdp = PROBLEMS["dectiger"]
    pol = mk.Policy.random(mdp, seed=1)
    r = evaluate(mdp, pol, k=2, episodes=300, seed=7, level=0.9)
    assert isinstance(r, Evaluation) and r.n == 300 and r.k == 2 and r.level == 0.9 and r.path == "fast"
    t = stats.t.ppf(0.95, 299)
    b = r.truncation_bound
    assert np.abs(mdp.rewards).max() == 101 and b == pytest.approx(0.9**r.horizon * 101 / 0.1, rel=1e-12)
    assert r.ci == pytest.approx((r.J - t * r.se - b, r.J + t * r.se + b), rel=0, abs=1e-12)
    assert r.horizon == mk.sampling.horizon_for(0.9, 1e-4) and r.gamma == 0.9
    assert r == evaluate(mdp, pol, k=2, episodes=300, seed=7, level=0.9)
    assert evaluate(mdp, pol, k=2, episodes=300, seed=8).J != r.J
    # the same numbers as the sampled estimator's J (same stream, same episodes)
    est = mk.SampledKStep(mdp, 2, episodes=300, seed=7)
    e = est.estimate(pol)
    assert (e.J_k, e.J_k_se) == (r.J, r.se)
    assert "J_2 = " in str(r) and "90% CI" in str(r) and "exact" in str(r)


def test_the_interval_covers_the_exact_value_of_a_deterministic_policy():
    """Always listening in dectiger: returns vary only by rounding, so the Student-t part alone misses
    J_k = -20 by the truncated tail; the truncation bound makes the interval cover it."""
    mdp = PROBLEMS["dectiger"]
    listen = mk.Policy.deterministic(mdp, [[0, 0, 0], [0, 0, 0]])
    r = evaluate(mdp, listen, k=2, episodes=100, seed=0)
    assert r.exact == mk.value(mdp, listen, 2) == pytest.approx(-1 / (1 - 0.9) * 2, abs=1e-9)
    t_half = stats.t.ppf(0.975, 99) * r.se
    assert not r.J - t_half <= r.exact <= r.J + t_half
    assert abs(r.J - r.exact) <= r.truncation_bound and r.ci[0] <= r.exact <= r.ci[1]


def test_evaluate_in_environments_and_at_another_discount():
    mdp = PROBLEMS["two_state"]
    pol = mk.Policy.random(mdp, seed=0)
    exact = mk.value(mdp, pol, 1)
    env_run = evaluate(mdp_parallel_env(mdp, max_cycles=120), pol, episodes=400, seed=1)  # the episode loop
    assert env_run.path == "env" and env_run.exact is None and env_run.z is None
    assert abs(env_run.J - exact) < 4 * env_run.se
    module, config, _ = SCENARIOS["number_matching"]
    nm = PROBLEMS["number_matching"]
    p2 = mk.Policy.random(nm, seed=4)
    batched = evaluate(module.parallel_env(**config), p2, k=2, episodes=2000, seed=1)
    assert batched.path == "batched" and abs(batched.J - mk.value(nm, p2, 2)) < 4 * batched.se
    half = evaluate(mdp, pol, episodes=400, seed=1, gamma=0.5)
    assert half.gamma == 0.5 and half.exact == mk.value(dataclasses.replace(mdp, gamma=0.5), pol, 1)
    assert abs(half.z) < 4


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    import re
    import shutil

    text = (Path(__file__).resolve().parents[1] / "docs" / "policies.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    shutil.copy(DECTIGER, tmp_path / "dectiger.dpomdp")
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "docs/policies.md", "exec"), ns)
    out = capsys.readouterr().out
    assert re.fullmatch(r"J_2 = \S+ \+- \S+ \(se\); 95% CI \[\S+, \S+\] \(Student t \+ truncation 0.095; n = 2000, "
                        r"horizon 88, gamma 0.9\); exact \S+\n", out), out
    assert same_bits(ns["pol"], ns["result"].policy)


def test_evaluate_refuses_bad_input():
    mdp = PROBLEMS["two_state"]
    pol = mk.Policy.uniform(mdp)
    for kwargs, msg in ((dict(episodes=1), "episodes"), (dict(level=1.0), "level"), (dict(level=-0.1), "level"),
                        (dict(k=0), "k"), (dict(seed=-1), "seed"), (dict(horizon=0), "horizon"),
                        (dict(gamma=1.0), "gamma")):
        with pytest.raises(ValueError, match=msg):
            evaluate(mdp, pol, **kwargs)
    with pytest.raises(ValueError, match="policy must be a marl_kstep.Policy"):
        evaluate(mdp, pol.theta)
    with pytest.raises(ValueError, match="exact=True needs a JointMDP"):
        evaluate(mdp_parallel_env(mdp), pol, exact=True)
    with pytest.raises(ValueError, match="policy has 2 agents"):
        evaluate(mdp, mk.Policy.uniform(PROBLEMS["dectiger"]))
    assert mk.evaluate_policy is evaluate


# ------------------------------------------------------------------------------------ fuzzing (as tests/test_fuzz.py)
FUZZ_DOC = policy_io.encode([np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.25, 0.75]])], free_entries=False,
                            metadata={"run": 1})


@FUZZ
@given(where=st.sampled_from(["doc", "top", "agent", "row", "names", "model"]),
       key=st.sampled_from(["schema", "free_entries", "names_from_model", "agents", "model", "metadata", "name",
                            "observations", "actions", "shape", "table", "fingerprint", "parts", "gamma",
                            "n_states", 0, 1]),
       value=BAD)
def test_fuzz_from_dict(where, key, value):
    """One entry of a valid document replaced by a malformed value: loads, or a ValueError naming the document."""
    doc = json.loads(json.dumps(FUZZ_DOC))
    doc["model"] = {"fingerprint": "x", "parts": {p: "y" for p in policy_io.FINGERPRINT_PARTS}, "n_states": 3,
                    "gamma": 0.9}
    if where == "doc":
        doc = value
    elif where == "top":
        doc[str(key)] = value
    elif where == "agent":
        doc["agents"][1][str(key)] = value
    elif where == "row":
        doc["agents"][0]["table"][int(key == 1)] = value
    elif where == "names":
        doc["names_from_model"][str(key)] = value
    else:
        doc["model"][str(key)] = value
    check(lambda: mk.Policy.from_dict(doc, source="the fuzzed document"), ["the fuzzed document"])
    check(lambda: mk.Policy.from_dict(doc, PROBLEMS["two_state"], source="the fuzzed document"),
          ["the fuzzed document"])


@FUZZ
@given(key=st.sampled_from(["path", "model", "metadata", "check_fingerprint"]), value=BAD)
def test_fuzz_save_and_load(key, value, tmp_path_factory):
    mdp = PROBLEMS["two_state"]
    folder = tmp_path_factory.mktemp("fuzz")
    kw = dict(path=folder / "p.json", model=mdp, metadata=None)
    if key == "check_fingerprint":
        mk.Policy.uniform(mdp).save(**kw)
        check(lambda: mk.Policy.load(kw["path"], mdp, check_fingerprint=value), ["check_fingerprint"])
        return
    kw[key] = value
    if key == "path":
        with contextlib.chdir(folder):  # a short string is a valid relative path: write it there
            try:
                check(lambda: mk.Policy.uniform(mdp).save(**kw), ["path"])
            except (TypeError, OSError):  # not a path, or no such place: Python's own errors for paths
                pass
        return
    check(lambda: mk.Policy.uniform(mdp).save(**kw), [key, "policy has", "theta"])
    if key == "model":
        mk.Policy.uniform(mdp).save(folder / "q.json", mdp)
        check(lambda: mk.Policy.load(folder / "q.json", value), ["model", "is for another model"])


@FUZZ
@given(key=st.sampled_from(["target", "policy", "k", "episodes", "horizon", "gamma", "seed", "level", "exact"]),
       value=BAD)
def test_fuzz_evaluate(key, value):
    mdp = PROBLEMS["two_state"]
    if key in ("episodes", "horizon") and isinstance(value, int) and not isinstance(value, bool) and value > 200:
        value = 200  # many episodes or steps are a valid request, not a hang
    kw = dict(target=mdp, policy=mk.Policy.uniform(mdp), k=2, episodes=5, horizon=10, gamma=None, seed=0,
              level=0.95, exact=None)
    kw[key] = value
    check(lambda: evaluate(kw.pop("target"), kw.pop("policy"), **kw), [key, "policy has"])
