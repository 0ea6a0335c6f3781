"""The experiments runner: run specs, one record per run, resume by full spec, executors."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from helpers import error_lines

from marl_kstep.experiments import RunSpec, RunStore, run_one, run_specs
from marl_kstep.experiments.runner import execute

TWO = {"scenario": "two_state", "config": {}}
NM = {"scenario": "number_matching", "config": {"n_numbers": 4}}


def specs(target=TWO, ks=(1, 3), seeds=(None,), **kw):
    return [RunSpec(target, k, method="pgd", iters=kw.get("iters", 60), step=kw.get("step", 0.05), seed=s,
                    start="default" if s is None else "random") for k in ks for s in seeds]


def comparable(rec):
    """A record without its wall time, date and host (the only setting-independent fields)."""
    r = json.loads(json.dumps(rec.to_dict()))
    r["result"].pop("seconds")
    r.pop("date")
    r.pop("host")
    return r


def test_a_record_holds_the_full_spec_and_the_result():
    spec = RunSpec(TWO, 3, method="mirror", step=0.1, iters=40, tol=1e-9, seed=2, start="random")
    rec = run_one(spec)
    assert rec["spec"] == spec.to_dict() and rec["spec_hash"] == spec.hash
    opts = rec["spec"]["options"]
    assert opts["iters"] == 40 and opts["tol"] == 1e-9 and rec["spec"]["estimator"] == {"kind": "exact"}
    assert rec["spec"]["target"]["config"] == {"small_reward": 0.5, "gamma": 0.9, "max_cycles": 200}  # resolved
    res = rec["result"]
    assert len(res["history_J"]) == len(res["history_J_k"]) == res["iterations"] + 1
    assert res["capped"] == (not res["converged"] and res["iterations"] == 40)
    assert "numpy" in rec["versions"] and RunSpec.from_dict(rec["spec"]) == spec
    # every setting is part of the hash
    for change in (dict(step=0.2), dict(iters=41), dict(tol=1e-8), dict(seed=3), dict(method="pgd"),
                   dict(estimator={"kind": "sampled", "episodes": 10, "horizon": None}),
                   dict(target={"scenario": "two_state", "config": {"gamma": 0.8}}), dict(escape=True)):
        other = spec.replace(**change)
        assert other.hash != spec.hash, change


def test_escape_is_a_setting():
    spec = RunSpec(TWO, 1, method="pgd", iters=50)
    assert spec.to_dict()["options"]["escape"] is False
    assert spec.hash == RunSpec.from_dict(spec.to_dict()).hash
    nm = {"scenario": "number_matching", "config": {"start": "far"}}
    trap = RunSpec(nm, 2, method="pgd", iters=100, escape=True)
    assert trap.to_dict()["options"]["escape"] is True and trap.hash != RunSpec(nm, 2, method="pgd", iters=100).hash
    rec = run_one(trap)
    assert rec["result"]["final_J"] == pytest.approx(6.477, abs=1e-9) and rec["result"]["two_opt"] is True
    assert rec["result"]["stationary"] == "vertex" and isinstance(rec["result"]["escapes"], list)
    json.dumps(rec.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="escape"):
        RunSpec(nm, 2, escape="yes")
    assert RunSpec(nm, 2, method="pgd", iters=100, escape=True, escape_order=2).hash == trap.hash  # the default
    four = RunSpec(nm, 2, method="pgd", iters=100, escape=True, escape_order=4)
    assert four.to_dict()["options"]["escape_order"] == 4 and four.hash != trap.hash
    with pytest.raises(ValueError, match="escape_order"):
        RunSpec(nm, 2, escape=True, escape_order=0)


def test_resume_skips_exactly_the_finished_specs_and_adds_changed_settings(tmp_path):
    first = run_specs(specs(), tmp_path)
    assert len(first) == 2 and len(RunStore(tmp_path).records()) == 2
    with pytest.raises(ValueError, match="already holds runs"):
        run_specs(specs(), tmp_path)  # reusing a folder without resume refuses
    assert run_specs(specs(), tmp_path, resume=True) == []  # nothing new
    more = run_specs(specs(iters=80) + specs(ks=(4,)), tmp_path, resume=True)
    assert len(more) == 3  # the two specs with another cap are new runs; k = 4 is new
    recs = RunStore(tmp_path).records()
    assert len(recs) == 5 and len({r["spec_hash"] for r in recs}) == 5
    assert sorted(r["spec"]["options"]["iters"] for r in recs if r["spec"]["k"] == 1) == [60, 80]  # never mixed


def _append_many(folder, start, n):
    spec = specs(ks=(1,))[0]
    rec = run_one(spec)
    store = RunStore(folder)
    for i in range(start, start + n):  # distinct specs: the same run under another seed value
        other = spec.replace(seed=i)
        store.append(dict(rec.to_dict(), spec=other.to_dict(), spec_hash=other.hash))


def test_concurrent_writers_keep_every_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(tmp_path, 100 * p, 25)) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(RunStore(tmp_path).records()) == 100


def test_a_torn_last_line_is_skipped_and_the_next_record_kept(tmp_path):
    run_specs(specs(ks=(1,)), tmp_path)
    with open(tmp_path / "runs.jsonl", "a") as fh:
        fh.write('{"spec": {"k": 3, "meth')  # a kill in the middle of a write
    assert len(RunStore(tmp_path).records()) == 1
    run_specs(specs(ks=(3,)), tmp_path, resume=True)
    assert sorted(r["spec"]["k"] for r in RunStore(tmp_path).records()) == [1, 3]


def test_process_executor_gives_the_serial_records():
    todo = specs(NM, ks=(1, 2), seeds=(0, 1))
    serial = {r["spec_hash"]: comparable(r) for r in execute(todo, "serial")}
    parallel = {r["spec_hash"]: comparable(r) for r in execute(todo, "process", workers=2)}
    assert serial == parallel


def test_dask_local_cluster_gives_the_serial_records():
    pytest.importorskip("distributed")
    todo = specs(NM, ks=(1, 2), seeds=(0,)) + [RunSpec(NM, 2, method="mirror", iters=30, seed=1, start="random",
                                                       estimator={"kind": "sampled", "episodes": 200})]
    serial = {r["spec_hash"]: comparable(r) for r in execute(todo, "serial")}
    dask = {r["spec_hash"]: comparable(r) for r in execute(todo, "dask", workers=2)}
    assert serial == dask


def test_bad_specs_are_named():
    for kw, name in [(dict(k=0), "k"), (dict(method="adam"), "method"), (dict(step=-1.0), "step"),
                     (dict(start="random"), "seed"), (dict(estimator={"kind": "mc"}), "estimator")]:
        with pytest.raises(ValueError, match=name):
            RunSpec(**{"target": TWO, "k": 1, **kw})
    with pytest.raises(ValueError, match="target"):
        RunSpec({"nope": 1}, 1)
    with pytest.raises(ValueError, match="sampled"):
        RunSpec({"env": "m:f", "gamma": 0.9}, 1)
    with pytest.raises(ValueError, match="executor"):
        list(execute([], "threads"))


def test_ctrl_c_with_worker_processes_exits_130_and_keeps_finished_runs(tmp_path):
    """SIGINT to the whole process group (as a terminal sends it) during a process-executor sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    base = [sys.executable, "-m", "marl_kstep.cli", "run", "two_state", "--method", "pgd", "--out", str(out),
            "--quiet", "--optimum", "none"]
    subprocess.run(base + ["--k", "1", "--iters", "5"], check=True, capture_output=True)
    proc = subprocess.Popen(base + ["--k", "1", "2", "--iters", "10000000", "--tol", "0", "--resume",
                                    "--executor", "process", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(10)  # the workers are up and training
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        try:  # never leave the workers' 10^7-iteration runs behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert len(error_lines(stderr)) == 1, stderr
    records = RunStore(out).records()
    assert [(r["spec"]["k"], r["spec"]["options"]["iters"]) for r in records] == [(1, 5)]  # the quick run only
