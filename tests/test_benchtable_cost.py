"""The Dec-POMDP table selects its cells by measured cost (issue 23): a cell over the path budget is
computed when its seconds per exact call times the median iterations of the same method's runs at the
largest computed k is under the cost limit, and the estimate of the next k is read off its runs."""

import json

import pytest

from marl_kstep import cli
from marl_kstep.experiments import benchtable
from marl_kstep.experiments.runner import RunSpec, RunStore, run_one

DATA = benchtable.DEFAULT_DATA_DIR
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark folder {DATA} is absent")


def _records(facts, k, iterations, final_j=-20.0, seconds=0.5):
    """Made-up records of the pgd cell at ``k``: one per start, with these iterations."""
    specs = benchtable.cell_specs(facts, "pgd", k, seeds=range(5))
    return {s.hash: dict(spec_hash=s.hash, result=dict(final_J=final_j, iterations=it, capped=it >= 1000,
                                                       seconds=seconds), date="2026-12-04T16:00:00+00:00")
            for s, it in zip(specs, iterations, strict=True)}


def _facts():
    path = DATA / "dectiger.dpomdp"
    cost = {"2": dict(steps=9_000_000, walked_steps=8_000_000, seconds_per_call=0.02),
            "3": dict(steps=90_000_000, walked_steps=50_000_000, seconds_per_call=0.5),
            "4": dict(steps=900_000_000, walked_steps=500_000_000, seconds_per_call=30.0)}
    return dict(problem=path.name, path=str(path), gamma=0.9, states=10, obs=[3, 3], actions=[3, 3], policies=729,
                J_star=-20.0, uniform=-462.2, abr=-20.0, mdp_optimum=200.0, blind=-20.0, blind_actions=[0, 0],
                steps={"1": 680, "2": 9_000_000, "3": 90_000_000, "4": 900_000_000}, cost=cost)


@needs_data
def test_cells_over_the_budget_are_chosen_by_their_estimated_cost_k_by_k():
    facts = _facts()
    kw = dict(ks=(1, 2, 3, 4), methods=("pgd",), max_path_steps=1_000_000)
    records = _records(facts, 1, [2, 1000, 4, 6, 8, 10])  # mean 171.67 iterations at k = 1 (one capped run)
    row = benchtable.problem_rows_from(facts, records, **kw)
    # k = 2: 0.02 s/call x 171.67 = 3.43 s per run: computed although over the path budget, not run yet; k = 3 and
    # 4 wait for its runs (priced from k = 1's they would be 85.8 s and 5,150 s, but k = 2's runs set their price)
    assert row["by_cost"] == ["pgd_k2"] and set(row["not_run"]) == {"pgd_k2"}
    k3 = row["cells"]["pgd_k3"]
    assert k3["over_budget"] and k3["waits_for"] == 2 and k3["seconds_per_run"] == pytest.approx(0.5 * 1030 / 6)
    assert row["cells"]["pgd_k4"]["over_budget"] and row["cells"]["pgd_k4"]["waits_for"] == 2
    assert "priced again once k = 2 has run" in benchtable.markdown([row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert "over it but estimated under 60 s per run: dectiger pgd k = 2" in benchtable.findings(
        [row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert [s.hash for s in benchtable._cheap_specs([facts], [row], records, seeds=range(5), step=0.05, iters=1000)] \
        == [s.hash for s in benchtable.cell_specs(facts, "pgd", 2, seeds=range(5))]
    # the price is the mean, not the median: k = 2's runs of median 100 but mean 135 iterations (one took 300) price
    # k = 3 at 0.5 x 135 = 67.5 s per run, over the limit (the median would say 50 s)
    slow = records | _records(facts, 2, [100, 90, 100, 100, 120, 300])
    over = benchtable.problem_rows_from(facts, slow, **kw)["cells"]["pgd_k3"]
    assert over["over_budget"] and over["seconds_per_run"] == pytest.approx(67.5)
    assert over["iterations_from"] == (2, 135)
    # k = 2's runs take 100 iterations each: k = 3 costs 0.5 x 100 = 50 s, under 60, and is run by cost
    records |= _records(facts, 2, [100] * 6, seconds=1.5)
    row = benchtable.problem_rows_from(facts, records, **kw)
    k2 = row["cells"]["pgd_k2"]
    assert not k2["over_budget"] and k2["by_cost"]["iterations_from"] == (1, pytest.approx(1030 / 6))
    assert k2["by_cost"]["seconds_per_run"] == pytest.approx(0.02 * 1030 / 6) and k2["median"] == -20.0
    assert row["by_cost"] == ["pgd_k2", "pgd_k3"] and set(row["not_run"]) == {"pgd_k3"}
    assert row["cells"]["pgd_k4"]["waits_for"] == 3
    # k = 3's runs (10 iterations each) price k = 4 at 30 x 10 = 300 s: over 60, under a 400 s limit
    records |= _records(facts, 3, [10] * 6, seconds=6.0)
    row = benchtable.problem_rows_from(facts, records, **kw)
    assert row["cells"]["pgd_k4"]["over_budget"] and row["cells"]["pgd_k4"]["seconds_per_run"] == pytest.approx(300)
    row400 = benchtable.problem_rows_from(facts, records, cost_limit=400, **kw)
    assert row400["by_cost"] == ["pgd_k2", "pgd_k3", "pgd_k4"] and set(row400["not_run"]) == {"pgd_k4"}
    # the report says which cells were run by cost, their estimate and their measured time per run
    table = benchtable.markdown([row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert "over the path budget, run by cost: ≈ 50.0 s/run estimated, 6.0 s measured" in table
    text = benchtable.findings([row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert ("**Run by cost** (over the path budget, but estimated under 60 s per run, so computed): "
            "dectiger pgd k = 2 (0.02 s/call: ≈ 3.4 s/run estimated, 1.5 s/run measured, mean 100 it.); "
            "dectiger pgd k = 3 (0.50 s/call: ≈ 50.0 s/run estimated, 6.0 s/run measured, mean 10 it.)") in text
    assert "**Over budget** (1 cells, estimated at 60 s per run or more, or not timed" in text
    assert "dectiger k = 4 (30.00 s/call; s/run: pgd ≈ 300.0)" in text


@needs_data
def test_the_table_runs_the_cheap_cells_over_the_budget(tmp_path):
    """prisoners: k = 3 and 4 (144 and 151 path steps estimated within a budget) are over a 120-step budget but
    cost milliseconds."""
    out, raw = tmp_path / "cheap" / "benchmarks.md", tmp_path / "cheap" / "table.json"
    argv = ["benchmarks", "--files", "prisoners.dpomdp", "--iters", "5", "--seeds", "1", "--budget", "120",
            "--quiet"]
    assert cli.main([*argv, "--out", str(out), "--json", str(raw)]) == 0
    recs = {r["spec_hash"]: r for r in RunStore(out.parent).records()}
    assert len(recs) == 2 * 4 * 2  # pgd, mirror x k = 1..4 x uniform + seed 0
    data = json.loads(raw.read_text())
    assert data["settings"]["cost_limit"] == benchtable.COST_LIMIT
    row = data["rows"][0]
    assert row["by_cost"] == ["pgd_k3", "pgd_k4", "mirror_k3", "mirror_k4"] and row["not_run"] == {}
    cell = row["cells"]["pgd_k3"]
    assert not cell["over_budget"] and cell["by_cost"]["steps"] > 120 and cell["by_cost"]["seconds_per_run"] < 60
    assert cell["by_cost"]["iterations_from"][0] == 2  # priced from the k = 2 runs
    # the number is its record's, and the record's spec reproduces it
    rec = recs[cell["spec_hashes"][0]]
    assert rec["spec"]["k"] == 3 and rec["result"]["final_J"] == cell["uniform"]
    again = run_one(RunSpec.from_dict(rec["spec"]))
    assert again["result"]["final_J"] == pytest.approx(cell["uniform"], abs=1e-12)
    assert "run by cost" in out.read_text() and "**Run by cost**" in out.read_text()
    # with a zero cost limit only the budget counts: k = 3 and 4 are over it and not run
    zero = tmp_path / "zero" / "benchmarks.md"
    assert cli.main([*argv, "--cost-limit", "0", "--out", str(zero), "--json", str(zero.with_suffix(".json"))]) == 0
    assert len(RunStore(zero.parent).records()) == 2 * 2 * 2
    row = json.loads(zero.with_suffix(".json").read_text())["rows"][0]
    assert row["cells"]["pgd_k3"]["over_budget"] and row["by_cost"] == []
    # rebuilt from those records with the default limit, the cheap k = 3 cells are named "not run", and k = 4
    # waits for their runs to be priced
    assert cli.main([*argv, "--no-run", "--out", str(zero), "--json", str(zero.with_suffix(".json"))]) == 0
    row = json.loads(zero.with_suffix(".json").read_text())["rows"][0]
    assert set(row["not_run"]) == {"pgd_k3", "mirror_k3"} and row["cells"]["pgd_k4"]["waits_for"] == 3
    assert len(RunStore(zero.parent).records()) == 2 * 2 * 2  # --no-run ran nothing


def test_a_negative_cost_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cost_limit"):
        benchtable.run_table(tmp_path, cost_limit=-1.0)
    with pytest.raises(SystemExit):
        cli.main(["benchmarks", "--cost-limit", "-1", "--out", str(tmp_path / "b.md")])


@needs_data
def test_an_untimed_cell_is_priced_at_least_at_the_largest_timed_smaller_k():
    facts = _facts()
    facts["cost"]["4"] = dict(steps=benchtable.TIME_CAP + 1, walked_steps=None, seconds_per_call=None)
    records = _records(facts, 1, [7] * 6) | _records(facts, 2, [130] * 6)  # k = 3: 0.5 x 130 = 65 s, over
    row = benchtable.problem_rows_from(facts, records, ks=(1, 2, 3, 4), methods=("pgd",), max_path_steps=1_000_000)
    cell = row["cells"]["pgd_k4"]
    assert cell["over_budget"] and "seconds_per_run" not in cell
    assert cell["at_least"] == dict(k=3, seconds_per_call=0.5, iterations_from=(2, 130.0), seconds_per_run=65.0)
    text = benchtable.findings([row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert (f"dectiger k = 4 (> {benchtable.TIME_CAP:,} path steps on the walked model, not timed; at least "
            "k = 3's 0.50 s/call, s/run ≥ pgd 65.0)") in text
    table = benchtable.markdown([row], ks=(1, 2, 3, 4), methods=("pgd",))
    assert "not timed; ≥ 65 s/run (k = 3's 0.500 s/call at the k = 2 runs' mean 130 it.)" in table


@needs_data
@pytest.mark.parametrize("ks, ran", [((1, 2, 3, 4), {1: 6, 2: 6}), ((2, 3), {2: 6})])
def test_the_rounds_run_one_k_at_a_time_and_never_a_cell_priced_over_the_limit(monkeypatch, ks, ran):
    """k = 2 costs 0.14 s per run (from k = 1's 7 iterations) or 20 s (from the 1000-iteration cap, with no k = 1):
    it is run; its runs take 130 iterations, which prices k = 3 at 65 s: never run, although k = 1's runs alone
    would have priced it at 3.5 s. Also when no cell is within the budget (``ks = (2, 3)``)."""
    facts = _facts()
    iterations = {1: [2, 1000, 4, 6, 8, 10], 2: [130] * 6, 3: [10] * 6, 4: [10] * 6}
    made = []

    def fake_run_one(spec):
        made.append(spec.k)
        specs = benchtable.cell_specs(facts, "pgd", spec.k, seeds=range(5))
        it = iterations[spec.k][[s.hash for s in specs].index(spec.hash)]
        return dict(spec_hash=spec.hash, result=dict(final_J=-20.0, iterations=it, capped=False, seconds=0.1))

    monkeypatch.setattr(benchtable, "problem_facts", lambda path, **kw: facts)
    monkeypatch.setattr(benchtable, "run_one", fake_run_one)
    row = benchtable.problem_rows(DATA / "dectiger.dpomdp", ks=ks, methods=("pgd",), max_path_steps=1_000_000)
    assert {k: made.count(k) for k in set(made)} == ran
    assert row["by_cost"] == ["pgd_k2"] and row["not_run"] == {}
    k3 = row["cells"]["pgd_k3"]
    assert k3["over_budget"] and k3["seconds_per_run"] == pytest.approx(65.0) and "waits_for" not in k3
