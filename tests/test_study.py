"""The gap-vs-k study (marl_kstep/experiments/study.py): statistics against closed forms and brute force,
run specs with random targets, records that rerun, resume, the CLI subcommand."""

import itertools
import json
import math

import pytest
from scipy.stats import norm

import marl_kstep as mk
from marl_kstep.cli import main
from marl_kstep.experiments.runner import RunSpec, RunStore, canonical_json, run_one
from marl_kstep.experiments.study import fit_rate, gap_vs_k, optima, study_specs, summarise, wilson_interval


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (85, 100), (100, 100), (271, 300)])
def test_wilson_interval_is_the_closed_form(x, n):
    z = norm.ppf(0.975)
    p = x / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    lo, hi = wilson_interval(x, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-12)


def test_fit_rate_recovers_a_geometric_law():
    ks = [1, 2, 3, 4, 6, 8]
    rho, c = fit_rate(ks, [0.3 * 0.7**k for k in ks])
    assert rho == pytest.approx(0.7, rel=1e-6) and c == pytest.approx(0.3, rel=1e-6)
    rho, _ = fit_rate(ks, [0.05] * 6)  # a plateau
    assert rho == pytest.approx(1.0, rel=1e-6)
    assert fit_rate(ks, [0.0] * 6)[0] == 0.0  # no gap at any k
    assert math.isnan(fit_rate([2], [0.1])[0])


def _record(problem: int, start: int, k: int, J: float, capped=False):
    target = {"random": mk.random_model_args("aggregation", seed=problem)}
    return {"spec": {"target": target, "k": k, "seed": start, "options": {"escape": False, "escape_order": 2}},
            "spec_hash": f"{problem}-{start}-{k}",
            "result": {"final_J": J, "capped": capped, "stationary": None if capped else "vertex"}}


def test_summarise_counts_and_means():
    # two problems (J* = 10, J_min = 0 and J* = 2, J_min = 1), three starts, two ks
    opt = {canonical_json({"random": mk.random_model_args("aggregation", seed=p)}): v
           for p, v in enumerate([(10.0, 0.0), (2.0, 1.0)])}
    J = {1: [[10.0, 9.0, 5.0], [2.0, 2.5, 1.5]],  # gaps 0, .1, .5 ; 0, -.5, .5
         3: [[10.0, 10.0, 9.0], [2.0, 2.0, 1.9]]}  # gaps 0, 0, .1 ; 0, 0, .1
    recs = [_record(p, s, k, J[k][p][s], capped=(k == 1 and s == 2)) for k in J for p in range(2) for s in range(3)]
    out = summarise(recs, opt)
    assert out["problems"] == 2 and out["starts"] == 3
    c1, c3 = out["variants"]["plain"]["cells"]
    assert (c1["k"], c1["n"], c1["successes"], c1["above"], c1["capped"]) == (1, 6, 3, 1, 2)
    assert c1["failure_stops"] == {"capped": 2, "vertex": 1}
    assert c1["capped_not_two_opt"] == 0  # plain runs carry no certificate
    assert c1["wilson"] == pytest.approx(wilson_interval(3, 6))
    assert c1["mean_gap"] == pytest.approx((0 + 0.1 + 0.5 + 0 - 0.5 + 0.5) / 6)
    assert c1["mean_shortfall"] == pytest.approx((0.1 + 0.5 + 0.5) / 6)
    assert c1["max_gap"] == pytest.approx(0.5)
    assert (c3["successes"], c3["above"]) == (4, 0)
    assert c3["mean_shortfall"] == pytest.approx(0.2 / 6)
    for c in (c1, c3):
        assert c["mean_shortfall_ci"][0] <= c["mean_shortfall"] <= c["mean_shortfall_ci"][1]
        assert c["success_cluster_ci"][0] <= c["success_rate"] <= c["success_cluster_ci"][1]
    v = out["variants"]["plain"]
    assert v["ratios"] == pytest.approx([(c3["mean_shortfall"] / c1["mean_shortfall"]) ** 0.5])
    assert v["rho"] == pytest.approx(v["ratios"][0], rel=1e-6)  # two ks: the fit passes through both
    with pytest.raises(ValueError, match="no record for problem"):
        summarise(recs[:-1], opt)
    with pytest.raises(ValueError, match="optimum lacks"):
        summarise(recs, {})


def test_optima_are_the_extremes_over_all_deterministic_policies(tmp_path):
    target = {"random": mk.random_model_args("decentralized", seed=3)}
    mdp = mk.random_model(**target["random"])
    values = [mk.value(mdp, mk.Policy.deterministic(mdp, [t0, t1]), k=1)
              for t0 in itertools.product(range(2), repeat=3) for t1 in itertools.product(range(2), repeat=3)]
    j_star, j_min = optima([target], tmp_path)[canonical_json(target)]
    assert j_star == pytest.approx(max(values), rel=1e-10)
    assert j_min == pytest.approx(min(values), rel=1e-10)
    cached = json.loads((tmp_path / "optimum.json").read_text())
    assert cached[canonical_json(target)] == {"J_star": j_star, "J_min": j_min}


def test_study_specs():
    specs = study_specs("dec-pomdp", 3, 2, [1, 4], escape_orders=[1, 2], model_args={"obs_noise": 0.1})
    assert len(specs) == 3 * 2 * 2 * 3
    assert {s.target["random"]["seed"] for s in specs} == {0, 1, 2}
    assert {s.target["random"]["obs_noise"] for s in specs} == {0.1}
    assert {(s.options.escape, s.options.escape_order) for s in specs} == {(False, 2), (True, 1), (True, 2)}
    assert all(s.start == "random" for s in specs) and {s.seed for s in specs} == {0, 1}
    assert len({s.hash for s in specs}) == len(specs)


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(problems=0), "problems"), (dict(starts=0), "starts"), (dict(ks=[]), "ks"),
    (dict(escape_orders=[0]), "escape_orders"), (dict(model_args={"seed": 1}), "model_args"),
    (dict(model_args={"bogus": 1}), "model_args"), (dict(model_args={"n_obs": 99}), "n_obs"),
])
def test_study_specs_bad_arguments_are_named(kwargs, name):
    args = dict(family="aggregation", problems=2, starts=2, ks=[1]) | kwargs
    with pytest.raises(ValueError, match=name):
        study_specs(**args)


def test_random_targets_in_run_specs():
    short = RunSpec({"random": {"family": "aggregation", "seed": 4}}, k=2)
    full = RunSpec({"random": mk.random_model_args("aggregation", seed=4)}, k=2)
    assert short.hash == full.hash and short.target == full.target
    assert RunSpec.from_dict(json.loads(json.dumps(short.to_dict()))).hash == short.hash
    for bad in ({"random": {"seed": 1}}, {"random": {"family": "aggregation", "seed": 1, "size": 3}},
                {"random": 3}, {"random": {"family": "aggregation", "seed": 1}, "gamma": 0.9}):
        with pytest.raises(ValueError, match="target"):
            RunSpec(bad, k=1)
    with pytest.raises(ValueError, match="n_obs"):
        RunSpec({"random": {"family": "aggregation", "seed": 1, "n_obs": 20}}, k=1)


def test_gap_vs_k_through_the_runner_resumes_and_its_records_rerun(tmp_path):
    kw = dict(problems=2, starts=2, ks=(1, 3), escape_orders=(1,), out=tmp_path, iters=200)
    summary = gap_vs_k("aggregation", **kw)
    records = RunStore(tmp_path).records()
    assert len(records) == 2 * 2 * 2 * 2 and set(summary["variants"]) == {"plain", "escape-1"}
    assert json.loads((tmp_path / "study.json").read_text())["variants"]["plain"]["cells"][0]["n"] == 4
    # resume: nothing is run again, the same numbers come back
    again = gap_vs_k("aggregation", resume=True, **kw)
    assert len(RunStore(tmp_path).records()) == len(records)
    assert json.dumps(again["variants"]) == json.dumps(summary["variants"])
    # a record reruns from its spec alone, to the same result
    for name, variant in summary["variants"].items():  # escape runs stopped by the cap, uncertified
        for cell in variant["cells"]:
            assert cell["capped_not_two_opt"] == sum(
                r["result"]["capped"] and r["result"].get("two_opt") is False for r in records
                if r["spec"]["k"] == cell["k"] and bool(r["spec"]["options"]["escape"]) == (name == "escape-1"))
    rec = next(r for r in records if r["spec"]["options"]["escape"] and r["spec"]["k"] == 3)
    rerun = run_one(RunSpec.from_dict(rec["spec"]))
    assert rerun["spec_hash"] == rec["spec_hash"]
    assert rerun["result"]["final_J"] == rec["result"]["final_J"]
    assert rerun["result"]["policy"] == rec["result"]["policy"]
    # the success count is the number of records within tolerance of the exhaustive J*
    opt = optima([r["spec"]["target"] for r in records])
    for name, variant in summary["variants"].items():
        for cell in variant["cells"]:
            mine = [r for r in records if (("escape-1" if r["spec"]["options"]["escape"] else "plain") == name
                                           and r["spec"]["k"] == cell["k"])]
            ok = 0
            for r in mine:
                j_star, j_min = opt[canonical_json(r["spec"]["target"])]
                ok += (j_star - r["result"]["final_J"]) / (j_star - j_min) <= 1e-3
            assert cell["successes"] == ok and cell["n"] == len(mine) == 4


def test_cli_study(tmp_path, capsys):
    argv = ["study", "gap-vs-k", "--family", "decentralized", "--problems", "2", "--starts", "1", "--k", "1", "2",
            "--iters", "100", "--set", "n_states=5", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| k | n | success | Wilson 95%" in text and '"n_states":5' in text
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["model_args"]["n_states"] == 5 and study["variants"]["plain"]["cells"][1]["k"] == 2
    with pytest.raises(SystemExit) as exc:  # a folder with runs needs --resume
        main(argv)
    assert exc.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    for bad in (["--set", "n_states"], ["--set", "seed=3"], ["--set", "n_obs=9"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv[:-3], *bad, "--out", str(tmp_path / "other"), "--quiet"])
        assert exc.value.code == 2
