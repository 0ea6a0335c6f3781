"""The Dec-POMDP benchmark table on one small problem (CLI end to end)."""

import json

import pytest

from marl_kstep import cli
from marl_kstep.experiments import benchtable

needs_data = pytest.mark.skipif(not benchtable.DEFAULT_DATA_DIR.is_dir(),
                                reason=f"benchmark folder {benchtable.DEFAULT_DATA_DIR} is absent")


@needs_data
def test_benchmarks_command_writes_the_report(tmp_path):
    out, raw = tmp_path / "benchmarks.md", tmp_path / "table.json"
    assert cli.main(["benchmarks", "--files", "dectiger.dpomdp", "--iters", "5", "--seeds", "2", "--budget",
                     "100000", "--out", str(out), "--json", str(raw), "--quiet"]) == 0
    rows = json.loads(raw.read_text())["rows"]
    (row,) = rows
    assert row["problem"] == "dectiger.dpomdp" and row["states"] == 10 and row["policies"] == 729
    assert row["J_star"] == pytest.approx(-20.0) and row["abr"] == pytest.approx(-20.0)
    assert row["uniform"] == pytest.approx(-462.2222222, abs=1e-6)
    cells = row["cells"]
    assert cells["pgd_k1"]["uniform"] <= row["J_star"] + 1e-9  # deterministic J* is an upper bound here
    assert len(cells["pgd_k1"]["random"]) == 2
    # memo-free bound for k = 4 is about 2.2e8 path steps: over the 1e5 budget
    assert cells["pgd_k4"]["over_budget"] and cells["pgd_k4"]["steps"] > 100_000
    text = out.read_text()
    assert "| dectiger.dpomdp | 0.9 | 10 | [3, 3] | [3, 3] | 729 | -20.000 | -462.222 | -20.000 |" in text
    assert "over budget" in text and "## What it shows" in text and "at commit `" in text


@needs_data
def test_benchmarks_leave_docs_alone_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run from another folder, with the default --out and --json
    docs = cli.Path(cli.__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else None
    assert cli.main(["benchmarks", "--files", "dectiger.dpomdp", "--iters", "2", "--seeds", "1", "--budget",
                     "1000", "--quiet"]) == 0
    assert (tmp_path / "results" / "benchmarks" / "benchmarks.md").exists()
    assert (tmp_path / "results" / "benchmarks" / "dpomdp_table.json").exists()
    assert not (tmp_path / "docs").exists()
    assert (docs.read_bytes() if docs.exists() else None) == before
