"""Threads: the wait policy set on import, and concurrent calls from Python threads under
every numba threading layer (the workqueue layer aborts the process without the guard)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONCURRENT = r"""
import sys, threading
import numpy as np
import numba
import marl_kstep as mk
from marl_kstep.envs import grid_coordination

layout = "########\n#......#\n#......#\n#......#\n#......#\n#.....G#\n########"
mdp = grid_coordination.build_mdp(layout=layout, observation="position", starts=[None, None])
with mk.configure(serial_max_path_steps=0):
    est = mk.ExactKStep(mdp, 2)
assert not est.plan.serial, "the test needs a parallel plan"
rng = np.random.default_rng(0)
policies = [mk.Policy.random(mdp, rng) for _ in range(4)]
with mk.configure(serial_max_path_steps=10**12):
    serial = [mk.ExactKStep(mdp, 2).value_and_grad(p) for p in policies]
results = [None] * 4
def work(i):
    for _ in range(3):
        results[i] = est.value_and_grad(policies[i])
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for (J, g), (J0, g0) in zip(results, serial):
    assert abs(J - J0) <= 1e-10 * abs(J0), (J, J0)
    assert all(np.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(g, g0))
print("layer", numba.threading_layer())
"""


def run(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_concurrent_calls_from_python_threads(layer):
    res = run(CONCURRENT, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
    if layer == "omp" and res.returncode and "No threading layer could be loaded" in res.stderr:
        pytest.skip("no OpenMP runtime for numba on this machine")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"layer {layer}" in res.stdout
    # (with the guard switched off, the workqueue run aborts: exit -6, "Terminating: Nested parallel kernel
    # launch detected" -- checked by hand on 2026-11-23)


def test_wait_policy_is_passive_unless_the_user_chose():
    code = ("import os, marl_kstep as mk; "
            "print(os.environ.get('OMP_WAIT_POLICY'), mk.thread_report()['wait_policy_set_by_marl_kstep'])")
    assert run(code).stdout.split() == ["passive", "True"]
    assert run(code, OMP_WAIT_POLICY="active").stdout.split() == ["active", "False"]
    assert run(code, GOMP_SPINCOUNT="1000").stdout.split() == ["None", "False"]


def test_stale_numba_cache_files_are_dropped_when_the_source_changes(tmp_path, monkeypatch):
    """check_cache tidies away the cache files of other sources -- here in a stand-in package
    folder, so the suite never deletes the real cache (it did: the first run after the suite
    recompiled everything)."""
    import marl_kstep._jitcache as jc

    assert jc.check_cache() is False  # consistent after import
    monkeypatch.setattr(jc, "_PACKAGE", tmp_path)
    monkeypatch.setattr(jc, "_STAMP", tmp_path / "__pycache__" / "marl_kstep_sources.sha256")
    fake = tmp_path / "estimators" / "__pycache__" / "zz_stale_test.nbi"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"x")
    assert jc.check_cache() is True and fake.exists() is False  # no stamp yet: tidied
    fake.write_bytes(b"x")
    assert jc.check_cache() is False and fake.exists()  # same source: cache files are kept
    good = jc._STAMP.read_text()
    assert good == jc._DIGEST
    jc._STAMP.write_text("0" * 64)  # as after an edit of any source file
    assert jc.check_cache() is True
    assert not fake.exists() and jc._STAMP.read_text() == good
