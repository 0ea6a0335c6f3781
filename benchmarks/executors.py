"""Sweep throughput by executor: 8 runs serial against local processes (and Dask) on this machine.

    python benchmarks/executors.py

The runs: grid corridor trap, k = 1..4, pgd and mirror, 6,000 iterations each (about 5 s per run) (exact estimator).
Each executor starts from a warm numba cache (one run first), so only the sweep is timed.
"""

from __future__ import annotations

import os
import time

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)

from marl_kstep.experiments import RunSpec
from marl_kstep.experiments.runner import execute


def main():
    target = {"scenario": "grid_coordination", "config": {}}
    specs = [RunSpec(target, k, method=m, iters=6000, tol=0.0) for k in (1, 2, 3, 4) for m in ("pgd", "mirror")]
    list(execute(specs[:1], "serial"))  # compile / load the cache
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}, runs: {len(specs)}")
    times = {}
    # process first, then serial, then dask: a slow core (a noisy neighbour) shows as a spread between the rounds
    rounds = (("process", {"workers": 2}), ("serial", {}), ("dask", {"workers": 2}), ("process", {"workers": 2}))
    for name, kw in rounds:
        t = time.perf_counter()
        recs = list(execute(specs, name, **kw))
        times[name] = time.perf_counter() - t
        busy = sum(r["result"]["seconds"] for r in recs)
        print(f"{name:>8}: {times[name]:6.1f} s wall, {busy:6.1f} s of training in the runs", flush=True)
    for name in ("process", "dask"):
        print(f"speed-up of {name} over serial: {times['serial'] / times[name]:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
