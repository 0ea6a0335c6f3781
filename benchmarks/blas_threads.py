"""BLAS threads in the library's batched dense solves, with other processes on the cores.

    python benchmarks/blas_threads.py [--repeats 5] [--busy 2] [--out results/blas_threads.json]

Three workloads on 3-agent number matching (``match`` observations): ``certify`` of the best
deterministic policy (order 2), ``best_deterministic`` (exhaustive), and 20 training runs with
certified escapes (k = 1, pgd, 100 iterations, random starts). Each runs in a fresh process,
timed inside it (the median of 3 calls after a first one that compiles or loads kernels), in
three configurations, alternating:

* ``unscoped``: the library's BLAS limit switched off (``threads.BLAS_THREADS = None``):
  OpenBLAS uses its default threads, as before the limit existed;
* ``scoped``: the library as shipped (one BLAS thread inside its batched solves);
* ``env1``: ``OPENBLAS_NUM_THREADS=1`` for the whole process (the reference).

``--busy N`` starts N processes spinning on the CPU for the whole measurement (and stops them,
by their process ids, at the end). The load average is recorded with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import marl_kstep as mk
import marl_kstep.threads as threads
from marl_kstep.envs import number_matching
if sys.argv[2] == "unscoped":
    threads.BLAS_THREADS = None  # threadpoolctl: no limit
work = sys.argv[1]
mdp = number_matching.build_mdp(n_agents=3, n_numbers=6, observation="match")
small = number_matching.build_mdp(n_agents=3, n_numbers=4, observation="match")
J, best = mk.best_deterministic(mdp)

def run():
    if work == "certify":
        mk.certify(mdp, best, order=2)
    elif work == "best_deterministic":
        mk.best_deterministic(mdp)
    else:
        for seed in range(20):
            mk.train(small, k=1, iters=100, init=mk.Policy.random(small, seed=seed), escape=True)

run()
ts = []
for _ in range(3):
    t = time.perf_counter()
    run()
    ts.append(time.perf_counter() - t)
print(json.dumps(dict(median_s=statistics.median(ts), max_s=max(ts))))
"""


def child(work: str, config: str) -> dict:
    env = dict(os.environ)
    if config == "env1":
        env["OPENBLAS_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, work, config], cwd=ROOT, capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", type=int, default=2)
    ap.add_argument("--works", nargs="*", default=["certify", "best_deterministic", "escape20"])
    ap.add_argument("--configs", nargs="*", default=["unscoped", "scoped", "env1"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    res: dict = {}
    try:
        time.sleep(1.0)
        for r in range(args.repeats):
            for work in args.works:
                for config in args.configs:
                    load = os.getloadavg()[0]
                    rec = child(work, config)
                    rec["load1"] = load
                    res.setdefault(work, {}).setdefault(config, []).append(rec)
                    print(f"[{r}] {work:18s} {config:9s} median {rec['median_s'] * 1e3:9.1f} ms, worst "
                          f"{rec['max_s'] * 1e3:9.1f} ms, load {load:.2f}", flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"\nmedians over {args.repeats} alternating fresh processes, {args.busy} busy processes:")
    summary = {}
    for work, by in res.items():
        med = {c: statistics.median(x["median_s"] for x in v) for c, v in by.items()}
        loads = [x["load1"] for v in by.values() for x in v]
        ref = med.get("env1")
        summary[work] = dict(median_s=med, load=[min(loads), max(loads)])
        print(f"  {work:18s} " + ", ".join(f"{c} {m * 1e3:.1f} ms" + (f" ({m / ref:.2f}x env1)" if ref else "")
                                          for c, m in med.items())
              + f"; load {min(loads):.1f}-{max(loads):.1f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(runs=res, summary=summary, busy=args.busy), indent=1))


if __name__ == "__main__":
    main()
