"""Controllers as a run target (Target "memory") and the memory table (experiments/memtable.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.experiments import memtable
from marl_kstep.experiments.runner import RunSpec, RunStore, Target, build_target, run_one

DATA = mk.dpomdp_path("dectiger").parent  # the problems shipped in the package
DT = str(DATA / "dectiger.dpomdp")
RC = str(DATA / "recycling.dpomdp")


def test_target_memory_resolved_and_hashed():
    plain = Target({"dpomdp": DT, "gamma": 0.9})
    assert "memory" not in plain.to_dict()
    two = Target({"dpomdp": DT, "gamma": 0.9, "memory": 2})
    assert two["memory"] == [2, 2]
    assert Target({"dpomdp": DT, "gamma": 0.9, "memory": [2, np.int64(2)]}) == two
    assert Target({"dpomdp": DT, "gamma": 0.9, "memory": [2, 3]})["memory"] == [2, 3]
    # the memoryless target is unchanged by the new key; a spec's hash changes only with memory
    assert RunSpec(plain, 1).hash == RunSpec({"dpomdp": DT, "gamma": 0.9}, 1).hash
    assert RunSpec(two, 1).hash != RunSpec(plain, 1).hash
    assert RunSpec.from_dict(RunSpec(two, 2).to_dict()).target == two
    sc = Target({"scenario": "two_state", "memory": 3})
    assert sc["memory"] == [3] * len(build_target({"scenario": "two_state"})[0].n_actions)


@pytest.mark.parametrize("bad", [0, -1, [2], [2, 0], "2", 2.5, True])
def test_target_memory_bad_values_named(bad):
    with pytest.raises(ValueError, match="nodes"):
        Target({"dpomdp": DT, "gamma": 0.9, "memory": bad})


def test_target_unknown_keys_still_refused():
    with pytest.raises(ValueError, match="unknown key 'memroy'"):
        Target({"dpomdp": DT, "gamma": 0.9, "memroy": 2})


def test_record_with_memory_rebuilds_the_augmented_model():
    spec = RunSpec({"dpomdp": RC, "gamma": 0.9, "memory": [2, 1]}, 2, seed=3, start="random", iters=20)
    rec = run_one(spec)
    base = mk.load_dpomdp(RC, gamma=0.9)
    aug = mk.with_memory(base, [2, 1])
    mdp, _, _ = build_target(rec.run_spec().target)
    assert mdp.n_states == aug.n_states and mdp.n_states > base.n_states
    assert list(mdp.n_actions) == [6, 3]
    assert rec.result["final_J"] == pytest.approx(mk.value(aug, rec.policy()), abs=1e-10)


def test_record_with_memory_scenario_default_start_is_lifted():
    mdp, _, start = build_target({"scenario": "two_state", "memory": 2})
    base, _, base_start = build_target({"scenario": "two_state"})
    assert mk.value(mdp, start(mdp)) == pytest.approx(mk.value(base, base_start(base)), abs=1e-12)


def test_goal_logic():
    lit = dict(best=10.0, rows=[("A", 9.0, "2", 2), ("B", 9.8, "5x2", 10)])
    q1 = {"k1": {}, "k1_esc": {"max": 9.1, "best_certificate": {"order": 1, "one_opt": True, "two_opt": False}},
          "k2": {}, "k2_esc": {}}  # k = 2 over budget: k = 1 with escapes counts
    q2 = {"k1": {}, "k1_esc": {"max": 99.0}, "k2": {},
          "k2_esc": {"max": 9.6, "best_certificate": {"order": 2, "one_opt": True, "two_opt": True}}}
    p = dict(literature=lit, facts=[{"nodes": 1, "search": None}, {"nodes": 4, "search": None}], cells=[q1, q2])
    g = memtable.goal(p)
    assert [r["beaten"] for r in g["rows"]] == [True, False]  # A (2 nodes) by Q = 1; B (10 nodes) not by 9.6
    assert g["rows"][0]["ours_nodes"] == 1 and g["rows"][0]["which"].startswith("k = 1")
    assert g["value"] == 9.6 and g["nodes"] == 4 and not g["beats"] and g["within5"]
    q2["k2_esc"]["max"] = 9.9
    assert memtable.goal(p)["beats"]
    q2["k2_esc"]["max"] = 9.4
    assert not memtable.goal(p)["within5"]
    q1["k1_esc"]["max"] = 8.9
    assert not memtable.goal(p)["rows"][0]["beaten"]


def test_memory_table_on_recycling(tmp_path):
    kw = dict(files=["recycling.dpomdp"], nodes=(1, 2), seeds=(0,), iters=30)
    table = memtable.run_memory_table(DATA, tmp_path, **kw)
    (p,) = table["problems"]
    b = p["bounds"]
    q1, q2 = p["facts"]
    assert q1["search_how"] == "exhaustive" and q1["search"] == pytest.approx(31.929, abs=1e-3)
    assert q2["states"] == mk.memory_sizes(mk.load_dpomdp(RC, gamma=0.9), 2)["states"]
    assert q2["search"] >= q1["search"] - 1e-9  # ABR from the lifted best memoryless policy
    lowers = [c["max"] for cells in p["cells"] for c in cells.values()] + [q1["search"], q2["search"], b["blind"]]
    assert max(lowers) <= b["fib"] + 1e-9 <= b["mdp_optimum"] + 2e-9
    recs = RunStore(tmp_path).records()
    assert len(recs) == 2 * 4 * 2 + 4  # Q x (k, escape) x starts, and one lifted start per (k, escape) at Q = 2
    assert sum(r["spec"]["start"] == "given" for r in recs) == 4
    assert any(r["spec"]["target"].get("memory") == [2, 2] for r in recs)
    # a shipped problem is named, not located: the records are found again from any checkout
    assert {r["spec"]["target"]["dpomdp"] for r in recs} == {"recycling"}
    # resumable: nothing is run again
    again = memtable.run_memory_table(DATA, tmp_path, resume=True, **kw)
    assert len(RunStore(tmp_path).records()) == len(recs)
    assert json.dumps(again["problems"][0]["cells"]) == json.dumps(p["cells"])
    text = memtable.markdown(table)
    assert "as reported, different hardware" in text and memtable.SOURCE in text
    assert "FIB (upper)" in text and "blind (lower)" in text
    with pytest.raises(ValueError, match="already holds runs"):
        memtable.run_memory_table(DATA, tmp_path, **kw)
    with pytest.raises(ValueError, match="unknown problem"):
        memtable.run_memory_table(DATA, tmp_path / "x", files=["nope.dpomdp"])


def test_cli_memory_table(tmp_path, capsys):
    from marl_kstep.cli import main

    out = tmp_path / "m" / "t.md"
    argv = ["benchmarks", "--data", str(DATA), "--files", "recycling.dpomdp", "--memory", "1", "--iters", "10",
            "--seeds", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert "marl-kstep benchmarks --memory 1 --iters 10 --seeds 1" in text and "recycling.dpomdp" in text
    assert json.loads(out.with_suffix(".json").read_text())["table"]["settings"]["nodes"] == [1]
    with pytest.raises(SystemExit):
        main(argv)  # the folder holds runs: --resume needed
    assert "--resume" in capsys.readouterr().err
    n = len(RunStore(out.parent).records())
    # --no-run rebuilds the report from the records only: the 2-node cells are not run
    assert main(argv[:7] + ["2"] + argv[7:] + ["--no-run"]) == 0
    assert len(RunStore(out.parent).records()) == n
    # the shipped problems need no --data to be found again
    assert "marl-kstep benchmarks --memory 1 2" in out.read_text() and " --data " not in out.read_text()
    table = json.loads(out.with_suffix(".json").read_text())["table"]
    assert table["settings"]["nodes"] == [1, 2]
    q1, q2 = table["problems"][0]["cells"]
    assert not any(c.get("missing") for c in q1.values()) and all(c["missing"] for c in q2.values())
    assert "| not run | not run | not run | not run |" in out.read_text()
    with pytest.raises(SystemExit):
        main(argv[:5] + ["0"] + argv[6:] + ["--resume"])
