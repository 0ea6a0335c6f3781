"""The Dec-POMDP table's blind baseline, its below-blind flags, its Wilson intervals and its
over-budget costs (issues 23 and 25)."""

import itertools
import json
import math

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep import cli
from marl_kstep.experiments import benchtable
from marl_kstep.experiments.runner import RunSpec, RunStore

DATA = benchtable.DEFAULT_DATA_DIR
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark folder {DATA} is absent")


def _brute_force_blind(mdp):
    """Every observation-blind deterministic policy (each agent one action for all its observations),
    valued by the exact policy evaluation of ``mk.value``: the best value and its actions."""
    best = (-np.inf, None)
    for actions in itertools.product(*(range(a) for a in mdp.n_actions)):
        tables = [[a] * o for a, o in zip(actions, mdp.n_obs, strict=True)]
        j = mk.value(mdp, mk.Policy.deterministic(mdp, tables))
        best = max(best, (j, actions), key=lambda x: x[0])
    return best


@needs_data
@pytest.mark.parametrize("name", ["2generals.dpomdp", "dectiger.dpomdp"])
def test_blind_column_is_the_best_of_all_blind_policies(name):
    facts = benchtable.problem_facts(DATA / name, ks=(1, 2))
    j, actions = _brute_force_blind(mk.load_dpomdp(DATA / name, gamma=facts["gamma"]))
    assert facts["blind"] == pytest.approx(j, abs=1e-9)
    assert tuple(facts["blind_actions"]) == actions
    assert facts["blind"] <= facts["J_star"] + 1e-9  # blind policies are deterministic memoryless ones
    if name == "dectiger.dpomdp":
        # both agents always listen: -2 per step forever, -2 / (1 - 0.9)
        assert facts["blind"] == pytest.approx(-20.0, abs=1e-9) and actions == (0, 0)


def test_below_blind_counts_only_values_below_by_more_than_tol():
    assert benchtable.below_blind([-20.0, -429.0, -20.005, -20.02, 5.0], -20.0, tol=1e-2) == [1, 3]
    assert benchtable.below_blind([-20.0], -20.0) == []


def _fake_record(spec, final_j, iterations=10):
    return dict(spec_hash=spec.hash, result=dict(final_J=final_j, iterations=iterations, capped=iterations >= 1000,
                                                 seconds=0.5), date="2026-12-04T16:00:00+00:00", commit="abc1234")


@needs_data
def test_below_blind_flag_fires_on_a_constructed_table():
    path = DATA / "dectiger.dpomdp"
    facts = dict(problem=path.name, path=str(path), gamma=0.9, states=10, obs=[3, 3], actions=[3, 3], policies=729,
                 J_star=-20.0, uniform=-462.2, abr=-20.0, mdp_optimum=200.0, blind=-20.0, blind_actions=[0, 0],
                 steps={"1": 680, "2": 9_000_000}, cost={"2": dict(steps=9_000_000, seconds_per_call=0.02)})
    target = benchtable.spec_target(path, 0.9)
    assert target["dpomdp"] == "dectiger"  # a shipped problem is named, not located
    opts = dict(method="pgd", step=0.05, iters=1000, tol=1e-8)
    specs = [RunSpec(target, 1, start="uniform", **opts)] + [RunSpec(target, 1, seed=s, start="random", **opts)
                                                             for s in range(5)]
    finals = [-20.0, -429.0, -20.0, -20.005, -33.0, -20.0]  # seeds 0 and 3 below; -20.005 within tol
    records = {s.hash: _fake_record(s, j, it) for s, j, it in zip(specs, finals, [2, 1000, 4, 6, 8, 10], strict=True)}
    row = benchtable.problem_rows_from(facts, records, ks=(1, 2), methods=("pgd",), max_path_steps=3_000_000,
                                       cost_limit=1.0)  # the k = 2 cell's 3.43 s per run is over this limit
    cell = row["cells"]["pgd_k1"]
    assert cell["below_blind"] == [0, 3]  # the seeds, not the uniform start
    over = row["cells"]["pgd_k2"]
    assert over["over_budget"] and over["steps"] == 9_000_000
    # cost per run: seconds per call times the mean iterations of the k = 1 runs (2, 1000, 4, 6, 8, 10 -> 171.67)
    assert over["iterations_from"] == (1, pytest.approx(1030 / 6)) and over["seconds_per_run"] == pytest.approx(3.4333,
                                                                                                            abs=1e-4)
    text = benchtable.findings([row], ks=(1, 2), methods=("pgd",), cost_limit=1.0)
    assert "Of the runs, 2 of 6 (33%" in text and "dectiger pgd k = 1 (2 of 6: worst -429.000 vs blind -20.000)" in text
    assert "dectiger k = 2 (0.02 s/call; s/run: pgd ≈ 3.4)" in text  # listed with its measured cost
    assert "not run (the table was made" not in text  # nothing cheap was left out
    # read with a higher limit than the table was made with, the cell is named as cheap but not run
    assert "yet not run (the table was made with a lower cost limit): dectiger pgd k = 2 (≈ 3.4 s/run)" in (
        benchtable.findings([row], ks=(1, 2), methods=("pgd",)))
    table = benchtable.markdown([row], ks=(1, 2), methods=("pgd",))
    assert "**2 of 6 below blind**" in table and "| -20.000 |" in table  # the blind column
    assert "9,000,000 path steps/pass)<br>0.020 s/call: ≈ 3 s/run at the k = 1 runs' mean 172 it." in table
    # no run below blind: the paragraph says 0 of n, no cell is listed
    ok = {h: dict(r, result=dict(r["result"], final_J=-20.0)) for h, r in records.items()}
    row = benchtable.problem_rows_from(facts, ok, ks=(1, 2), methods=("pgd",), cost_limit=1.0)
    assert row["cells"]["pgd_k1"]["below_blind"] == []
    assert "Of the runs, 0 of 6 (0%" in benchtable.findings([row], ks=(1, 2), methods=("pgd",))


def _wilson(x, n, z=1.959963984540054):
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)  # 0 and 1 exactly up to rounding


@pytest.mark.parametrize("x, n", [(19, 332), (1, 5), (0, 40), (40, 40)])
def test_rates_carry_n_and_the_wilson_interval(x, n):
    lo, hi = _wilson(x, n)
    text = benchtable.rate(x, n)
    assert text.startswith(f"{x} of {n} ({100 * x / n:.0f}%, 95% Wilson interval {100 * lo:.0f}-{100 * hi:.0f}%")
    assert text.endswith(", wide)") == (hi - lo > 0.3)


@needs_data
def test_no_run_rebuilds_the_report_from_records_only(tmp_path):
    out, raw = tmp_path / "benchmarks.md", tmp_path / "table.json"
    argv = ["benchmarks", "--files", "dectiger.dpomdp", "--iters", "3", "--budget", "100000", "--cost-limit", "0",
            "--out", str(out), "--json", str(raw), "--quiet"]
    assert cli.main([*argv, "--seeds", "1"]) == 0
    before = (tmp_path / "runs.jsonl").read_text()
    assert cli.main([*argv, "--seeds", "2", "--no-run"]) == 0
    assert (tmp_path / "runs.jsonl").read_text() == before  # nothing was run
    data = json.loads(raw.read_text())
    row = data["rows"][0]
    assert all(c["over_budget"] for c in row["cells"].values())  # no computed cell: seed 1 has no record
    assert set(row["not_run"]) == {"pgd_k1", "pgd_k2", "mirror_k1", "mirror_k2"}
    assert data["provenance"]["runs"] == 0
    text = out.read_text()
    assert "not run" in text and "**Not run**" in text and "Path budget: 100,000 steps per pass" in text
    assert cli.main([*argv, "--seeds", "1", "--no-run"]) == 0
    data = json.loads(raw.read_text())
    assert data["provenance"]["runs"] == len(RunStore(tmp_path).records()) == 8
    assert data["rows"][0]["blind"] == pytest.approx(-20.0)


def test_a_shipped_problem_copied_elsewhere_is_still_named(tmp_path):
    """A facts cache made in another checkout holds that checkout's path of a shipped file: the target is
    still the shipped name, so the records (hashed over the target) are found again."""
    import shutil

    from marl_kstep.experiments import benchtable, spec
    from marl_kstep.model import dpomdp_path

    other = tmp_path / "other-checkout" / "dectiger.dpomdp"
    other.parent.mkdir()
    shutil.copyfile(dpomdp_path("dectiger"), other)
    assert benchtable.spec_target(other, 0.9) == {"dpomdp": "dectiger", "gamma": 0.9}
    other.write_text(other.read_text() + "\n# edited\n")
    spec._shipped_name.cache_clear()
    assert benchtable.spec_target(other, 0.9)["dpomdp"] == str(other)  # another file, by its path
