"""The Dec-POMDP benchmark table on one small problem (CLI end to end)."""

import json

import pytest
from helpers import error_lines

from marl_kstep import cli
from marl_kstep.experiments import benchtable
from marl_kstep.experiments.runner import RunStore

needs_data = pytest.mark.skipif(not benchtable.DEFAULT_DATA_DIR.is_dir(),
                                reason=f"benchmark folder {benchtable.DEFAULT_DATA_DIR} is absent")


@needs_data
def test_benchmarks_command_writes_the_report(tmp_path):
    out, raw = tmp_path / "benchmarks.md", tmp_path / "table.json"
    assert cli.main(["benchmarks", "--files", "dectiger.dpomdp", "--iters", "5", "--seeds", "2", "--budget",
                     "100000", "--cost-limit", "0", "--out", str(out), "--json", str(raw), "--quiet"]) == 0
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
                     "1000", "--cost-limit", "0", "--quiet"]) == 0
    assert (tmp_path / "results" / "benchmarks" / "benchmarks.md").exists()
    assert (tmp_path / "results" / "benchmarks" / "dpomdp_table.json").exists()
    assert not (tmp_path / "docs").exists()
    assert (docs.read_bytes() if docs.exists() else None) == before


@needs_data
def test_benchmarks_resume_by_spec_and_every_cell_reruns_from_its_record(tmp_path):
    from marl_kstep.experiments import RunSpec, RunStore, run_one

    out, raw = tmp_path / "benchmarks.md", tmp_path / "table.json"
    argv = ["benchmarks", "--files", "dectiger.dpomdp", "--iters", "5", "--budget", "100000", "--cost-limit", "0",
            "--out", str(out), "--json", str(raw), "--quiet"]
    assert cli.main([*argv, "--seeds", "1"]) == 0
    first = RunStore(tmp_path).records()
    assert len(first) == 2 * 2 * 2  # pgd, mirror x k = 1, 2 (k = 3, 4 are over budget) x uniform + seed 0
    with pytest.raises(SystemExit):
        cli.main([*argv, "--seeds", "1"])  # the folder holds runs: --resume is required
    assert cli.main([*argv, "--seeds", "1", "--resume"]) == 0
    assert len(RunStore(tmp_path).records()) == len(first)  # nothing rerun
    assert cli.main([*argv, "--seeds", "2", "--resume"]) == 0
    assert len(RunStore(tmp_path).records()) == len(first) + 4  # only seed 1's runs are new
    row = json.loads(raw.read_text())["rows"][0]
    cell = row["cells"]["pgd_k1"]
    assert len(cell["random"]) == 2 and cell["uniform_iterations"] <= 5
    # a cell's number is its record's, and the record's spec reproduces it
    recs = {r["spec_hash"]: r for r in RunStore(tmp_path).records()}
    rec = recs[cell["spec_hashes"][0]]
    assert rec["result"]["final_J"] == cell["uniform"]
    again = run_one(RunSpec.from_dict(rec["spec"]))
    assert again["result"]["final_J"] == pytest.approx(rec["result"]["final_J"], abs=1e-12)
    assert row["mdp_optimum"] >= row["J_star"] - 1e-9


def test_mdp_optimum_matches_brute_force_over_state_policies():
    import itertools

    import numpy as np

    import marl_kstep as mk
    from marl_kstep.search import mdp_optimum

    rng = np.random.default_rng(0)
    N, A = 4, 2
    P = rng.dirichlet(np.ones(N), size=(N, A))
    R = rng.normal(size=(N, A))
    mdp = mk.JointMDP.from_dense(P, R, [np.zeros(N, int)], [A], np.full(N, 1 / N), 0.9, n_obs=[1])
    best = -np.inf
    for choice in itertools.product(range(A), repeat=N):  # every deterministic state-feedback policy
        Pc = P[np.arange(N), choice]
        V = np.linalg.solve(np.eye(N) - 0.9 * Pc, R[np.arange(N), choice])
        best = max(best, V.mean())
    assert mdp_optimum(mdp) == pytest.approx(best, abs=1e-9)


@needs_data
def test_benchmarks_ctrl_c_exits_130_keeps_finished_runs_and_resumes(tmp_path):
    """SIGINT during a serial table: exit 130, one line on stderr, the finished runs kept; --resume skips them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "bench" / "benchmarks.md"
    cmd = [sys.executable, "-m", "marl_kstep.cli", "benchmarks", "--files", "dectiger.dpomdp", "GridSmall.dpomdp",
           "--iters", "20000", "--seeds", "3", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.parent / "runs.jsonl").exists():
        time.sleep(0.5)  # dectiger's runs finish within seconds; GridSmall's take minutes
    time.sleep(1.0)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        try:  # never leave a long table behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, (stdout, stderr)
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "Traceback" not in stderr, stderr
    kept = RunStore(out.parent).records()
    assert kept and f"{len(kept)} finished runs" in lines[0]
    assert not out.exists()  # no half table
    # a resumed table skips the kept runs: after another interrupt no spec was run twice
    proc = subprocess.Popen(cmd + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    time.sleep(5.0)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, (stdout, stderr)
    hashes = [json.loads(ln)["spec_hash"] for ln in (out.parent / "runs.jsonl").read_text().splitlines() if ln]
    assert len(hashes) == len(set(hashes)) >= len(kept)
    assert {r["spec_hash"] for r in kept} <= set(hashes)
