"""The memory table beyond exact enumeration (experiments/memtable.py): cells over the path budget run with
SampledKStep and are marked so; large augmented models get the reduced settings of their tier."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.experiments import memtable
from marl_kstep.experiments.runner import RunStore

DATA = mk.dpomdp_path("dectiger").parent  # the problems shipped in the package
RC = str(DATA / "recycling.dpomdp")


def dense_value(mdp, theta) -> float:
    """J of a memoryless policy by one dense linear solve, written here from the model's arrays:
    ``pi(j | x) = prod_i theta_i[obs_i(x), a_i]``, ``V = (I - gamma P_pi)^{-1} r_pi``, ``J = mu V``."""
    P, R = mdp.to_dense(), mdp.rewards
    N = mdp.n_states
    pi = np.zeros((N, int(np.prod(mdp.n_actions))))
    for x in range(N):
        for acts in itertools.product(*[range(a) for a in mdp.n_actions]):
            j = int(np.ravel_multi_index(acts, mdp.n_actions))
            pi[x, j] = np.prod([theta[i][mdp.obs[i][x], a] for i, a in enumerate(acts)])
    P_pi = np.einsum("xj,xjy->xy", pi, P)
    r_pi = np.einsum("xj,xj->x", pi, R)
    return float(mdp.mu @ np.linalg.solve(np.eye(N) - mdp.gamma * P_pi, r_pi))


def test_over_budget_cell_runs_sampled_and_is_judged_exactly(tmp_path):
    # recycling, one node: k = 1 walks 125 path steps per pass, k = 2 walks 3,250: a budget of 1,000 forces
    # k = 2 onto the sampled estimator
    kw = dict(files=["recycling.dpomdp"], nodes=(1,), seeds=(0,), iters=40, max_path_steps=1000, episodes=500)
    table = memtable.run_memory_table(DATA, tmp_path, **kw)
    (p,) = table["problems"]
    (facts,), (cells,) = p["facts"], p["cells"]
    assert facts["steps"]["1"] <= 1000 < facts["steps"]["2"]
    assert not cells["k1"]["sampled"] and not cells["k1_esc"]["sampled"]
    assert cells["k2"]["sampled"] and cells["k2_esc"]["sampled"]
    recs = {r.spec_hash: r for r in RunStore(tmp_path).records()}
    assert len(recs) == 4 * 2  # (k, escape) x (uniform, seed 0)
    mdp = mk.load_dpomdp(RC, gamma=0.9)
    exact_2 = mk.ExactKStep(mdp, 2, max_path_steps=10_000)
    for key in ("k2", "k2_esc"):
        c = cells[key]
        assert c["episodes"] == 500 and c["starts"] == 2
        runs = [r for r in recs.values() if r.spec["k"] == 2 and r.spec["options"]["escape"] == (key == "k2_esc")]
        assert len(runs) == 2
        for rec in runs:
            assert rec.spec["estimator"] == {"kind": "sampled", "episodes": 500, "horizon": None, "floor": 0.01}
            assert rec.result["judged"] == "greedy" and rec.result["J_judged"] in c["values"]
        best = recs[c["best_hash"]]
        assert best.spec["estimator"]["kind"] == "sampled"
        # the cell's value is the exact J of the greedy rounding of the best run's returned policy
        greedy = mk.Policy.deterministic(mdp, best.policy().greedy_tables())
        assert c["max"] == pytest.approx(dense_value(mdp, greedy.theta), abs=1e-9)
        assert c["max"] == max(c["values"])
        # the record's final_J is the exact J of the returned (floored) policy, computed at the end
        returned = best.policy()
        assert min(t.min() for t in returned.theta) >= 0.01 - 1e-12
        assert best.result["final_J"] == pytest.approx(dense_value(mdp, returned.theta), abs=1e-9)
        # the SE stated is the final sampled estimate's, and that estimate agrees with the exact J_2 (z-test)
        se = best.result["history_J_k_se"][-1]
        assert c["se"] == se > 0 and c["se_max"] >= se
        assert abs(best.result["final_J_k"] - exact_2.value(returned)) < 5 * se
    text = memtable.markdown(table)
    row = next(line for line in text.splitlines() if line.startswith("| recycling.dpomdp | 1 |"))
    cols = row.strip("| ").split(" | ")
    assert "sampled" not in cols[6] and "sampled" not in cols[7]
    for col, key in ((cols[8], "k2"), (cols[9], "k2_esc")):
        assert col.startswith(f"{cells[key]['max']:.3f} /")
        assert f"sampled (500 ep.), SE of final Ĵ_k {cells[key]['se']:.2g}" in col


def test_cell_tiers():
    seeds = tuple(range(10))
    full = memtable.cell_settings(500, seeds=seeds, iters=1000, max_escapes=10)
    assert full == dict(tier="full", seeds=seeds, iters=1000, max_escapes=10)
    big = memtable.cell_settings(501, seeds=seeds, iters=1000, max_escapes=10)
    assert big == dict(tier="big", seeds=seeds[:memtable.BIG[0]], iters=memtable.BIG[1], max_escapes=memtable.BIG[2])
    huge = memtable.cell_settings(2001, seeds=seeds, iters=1000, max_escapes=10)
    assert huge["tier"] == "huge" and huge["seeds"] == seeds[:memtable.HUGE[0]] and huge["iters"] == memtable.HUGE[1]
    assert memtable.cell_settings(2001, seeds=seeds, iters=100, max_escapes=1)["iters"] == 100  # caps only lower
    assert memtable.cell_settings(4001, seeds=seeds) is None
    # an exact walk above slow_steps: fewer starts, the same caps; a sampled one keeps every start
    slow = memtable.cell_settings(100, seeds=seeds, iters=1000, steps=2_000_000, slow_steps=1_000_000)
    assert slow == dict(tier="slow", seeds=seeds[:memtable.BIG[0]], iters=1000, max_escapes=10)
    assert memtable.cell_settings(100, seeds=seeds, steps=2_000_000, exact=False)["tier"] == "full"


def test_big_cell_specs():
    bounds = dict(path=RC, gamma=0.9, problem="recycling.dpomdp")
    facts = dict(states=600, nodes=2, steps={"1": 10, "2": 10**9})
    specs = memtable.memory_specs(bounds, facts, seeds=tuple(range(10)), iters=1000, max_path_steps=10**6)
    assert len(specs) == 4 * (1 + memtable.BIG[0])
    for s in specs:
        assert s.iters == memtable.BIG[1] and s.target["memory"] == [2, 2]
        assert s.estimator.kind == ("sampled" if s.k == 2 else "exact")
        assert s.options.exact_alongside is (False if s.k == 2 else None)
        if s.escape:  # above ORDER2_MAX_STATES: order 1, with the tier's escape cap
            assert s.options.escape_order == 1 and s.options.max_escapes == memtable.BIG[2]
    assert memtable.memory_specs(bounds, dict(facts, states=5000), seeds=(0,)) == []
    small = memtable.memory_specs(bounds, dict(facts, states=100), seeds=(0,), max_path_steps=10**9)
    assert {s.options.escape_order for s in small if s.escape} == {2} and all(s.estimator.kind == "exact"
                                                                              for s in small)


def test_goal_strict_and_any_k():
    lit = dict(best=10.0, rows=[("A", 9.0, "2", 2)])
    q1 = {"k1": {}, "k1_esc": {"max": 9.8}, "k2": {}, "k2_esc": {"max": 8.0, "sampled": True}}
    p = dict(literature=lit, facts=[{"nodes": 1, "search": None}], cells=[q1])
    strict, loose = memtable.goal(p), memtable.goal(p, any_k=True)
    assert strict["value"] == 8.0 and strict["which"] == "k = 2, sampled" and not strict["beats"]
    assert not strict["within5"]
    assert loose["value"] == 9.8 and loose["which"] == "k = 1" and loose["beats"] and loose["within5"]


def test_slow_cell_specs():
    bounds = dict(path=RC, gamma=0.9, problem="recycling.dpomdp")
    facts = dict(states=100, nodes=2, steps={"1": 10, "2": 2_000_000})
    specs = memtable.memory_specs(bounds, facts, seeds=tuple(range(10)), iters=1000, max_path_steps=10**7,
                                  slow_steps=10**6)
    assert sum(s.k == 1 for s in specs) == 2 * 11 and sum(s.k == 2 for s in specs) == 2 * (1 + memtable.BIG[0])
    assert all(s.estimator.kind == "exact" and s.iters == 1000 for s in specs)


def test_given_start_spec():
    from marl_kstep.experiments.runner import RunSpec, run_one

    target = {"dpomdp": RC, "gamma": 0.9}
    plain = RunSpec(target, 1, seed=0, start="random", iters=5)
    assert "init" not in plain.to_dict()  # other specs keep their form and hash
    mdp = mk.load_dpomdp(RC, gamma=0.9)
    init = mk.Policy.random(mdp, 7).theta
    spec = RunSpec(target, 1, start="given", init=[t.tolist() for t in init], iters=0)
    again = RunSpec.from_dict(spec.to_dict())
    assert again.hash == spec.hash and again.init == spec.init
    rec = run_one(spec)  # zero iterations: the returned policy is the start
    assert np.allclose(np.concatenate([np.ravel(t) for t in rec.result["policy"]]),
                       np.concatenate([np.ravel(t) for t in init]))
    assert rec.result["final_J"] == pytest.approx(dense_value(mdp, init), abs=1e-9)
    with pytest.raises(ValueError, match="init is given exactly when start='given'"):
        RunSpec(target, 1, start="given")
    with pytest.raises(ValueError, match="init is given exactly when start='given'"):
        RunSpec(target, 1, start="uniform", init=[t.tolist() for t in init])
    with pytest.raises(ValueError, match="init must be"):
        RunSpec(target, 1, start="given", init=[[[0.5, "x"]]])
    bad = RunSpec(target, 1, start="given", init=[[[1.0, 0.0]], [[1.0, 0.0]]], iters=0)
    with pytest.raises(ValueError):  # the wrong shape for the problem, refused when the run starts
        run_one(bad)


def test_lifted_starts_of_a_cell():
    bounds = dict(path=RC, gamma=0.9, problem="recycling.dpomdp")
    facts = dict(states=17, nodes=2, steps={"1": 10, "2": 10})
    base = dict(J=31.929, tables=[[1, 0, 2], [1, 0, 2]], how="exhaustive")
    specs = memtable.lifted_specs(bounds, facts, base, seeds=(0, 1, 2, 3, 4), iters=10)
    assert len(specs) == 4 * memtable.LIFT_STARTS and {s.start for s in specs} == {"given"}
    mdp = mk.load_dpomdp(RC, gamma=0.9)
    aug = mk.with_memory(mdp, 2)
    lifted = aug.lift(mk.Policy.deterministic(mdp, base["tables"]))
    s = specs[1]
    want = [(1 - memtable.LIFT_MIX) * a + memtable.LIFT_MIX * b
            for a, b in zip(lifted, mk.Policy.random(aug, s.seed).theta, strict=True)]
    assert all(np.allclose(np.asarray(x), y) for x, y in zip(s.init, want, strict=True))
    assert memtable.lifted_specs(bounds, dict(facts, nodes=1), base) == []
    slow = memtable.lifted_specs(bounds, dict(facts, steps={"1": 10, "2": 10**7}), base, seeds=(0, 1, 2, 3),
                                 slow_steps=10**6)
    assert sum(s.k == 2 for s in slow) == 2 * memtable.LIFT_STARTS_SLOW and sum(s.k == 1 for s in slow) == 2 * 3
    assert memtable.lifted_specs(bounds, facts, None) == []
