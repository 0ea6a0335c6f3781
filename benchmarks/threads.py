"""Threads on an idle and on a loaded machine: 1 thread against 2, before and after.

    python benchmarks/threads.py [--repeats 7] [--busy 2] [--out results/threads.json]

"before" is the kernel as it was: GNU OpenMP's default waiting (workers spin 300,000 times
after each region; set here as ``GOMP_SPINCOUNT=300000``, which marl_kstep leaves alone),
numba's static split of the chunks and parallel passes from 20,000 path steps. "after" is
marl_kstep's default: ``OMP_WAIT_POLICY=passive`` (set on import), dynamic chunks
(``marl_kstep.threads``) and parallel passes (and solves) from 10^6 path steps. Every configuration runs in a
fresh process (the OpenMP runtime reads its environment once), with the machine idle and
with ``--busy`` processes spinning on the cores. Within a process the 1- and 2-thread calls
alternate, so their ratio is measured side by side. Results go to JSON; docs/performance.md
quotes them.
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
sys.path.insert(0, str(Path(__file__).parent))

CHILD = r"""
import json, os, statistics, sys, time
import numba
import marl_kstep as mk
import marl_kstep.threads as th
from bench_kernel import open_grid
from marl_kstep.envs import grid_coordination, number_matching
from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR
before = os.environ.get("BENCH_STATIC") == "1"
if before:  # the old kernel: static split, parallel from 20,000 path steps
    th._CHUNKSIZE = 0
repeats = int(sys.argv[1])
quick = sys.argv[2] == "1"
work = []
grid6 = grid_coordination.build_mdp(layout=open_grid(6), observation="position", starts=[None, None])
work.append(("grid 6x6, 2 agents, k=1", grid6, 1, "call"))
work.append(("grid 6x6, 2 agents, k=2", grid6, 2, "call"))
small = mk.load_dpomdp(DEFAULT_DATA_DIR / "GridSmall.dpomdp", gamma=0.9)
work.append(("GridSmall k=2", small, 2, "call"))
corners = mk.load_dpomdp(DEFAULT_DATA_DIR / "Grid3x3corners.dpomdp.gz", gamma=0.9)
work.append(("Grid3x3corners k=1, train 100 iterations", corners, 1, "train"))
work.append(("Grid3x3corners k=2, train 100 iterations", corners, 2, "train"))
if not quick:
    grid5 = grid_coordination.build_mdp(layout=open_grid(5), n_agents=3, observation="walls", starts=[None] * 3)
    work.append(("grid 5x5, 3 agents, k=1 (15,625 states)", grid5, 1, "call"))
    nm = number_matching.build_mdp(n_agents=5, n_numbers=10)
    work.append(("number matching n=5 m=10, k=2 (10^5 states, 10^4 lumped)", nm, 2, "call"))
out = []
for name, mdp, k, what in work:
    with mk.configure(**(dict(serial_max_path_steps=20_000) if before else {})):
        est = mk.ExactKStep(mdp, k)
    pol = mk.Policy.uniform(mdp)
    def run():
        if what == "call":
            est.value_and_grad(pol)
        else:
            mk.train(est, iters=100, step=0.05, tol=0.0)
    times = {1: [], 2: []}
    for t in (1, 2):
        numba.set_num_threads(t)
        run()
    for _ in range(repeats):
        for t in (1, 2):
            numba.set_num_threads(t)
            t0 = time.perf_counter()
            run()
            times[t].append(time.perf_counter() - t0)
    out.append(dict(name=name, states=mdp.n_states, walked=est.plan.model.n_states, serial=est.plan.serial,
                    t1=statistics.median(times[1]), t2=statistics.median(times[2]),
                    t1_all=times[1], t2_all=times[2]))
print(json.dumps(dict(report=mk.thread_report(), results=out)))
"""


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def child(config: str, n_busy: int, repeats: int, quick: bool) -> dict:
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "BENCH_STATIC", "NUMBA_NUM_THREADS"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(ROOT)])
    if config == "before":
        env["GOMP_SPINCOUNT"] = "300000"
        env["BENCH_STATIC"] = "1"
    procs = busy(n_busy)
    try:
        time.sleep(0.5 if n_busy else 0)
        load0 = os.getloadavg()
        res = subprocess.run([sys.executable, "-c", CHILD, str(repeats), "1" if quick else "0"], env=env,
                             capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"benchmark child failed:\n{res.stderr[-3000:]}")
        load1 = os.getloadavg()
    finally:
        for p in procs:
            p.kill()
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data.update(config=config, busy=n_busy, load=[load0, load1])
    return data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--busy", type=int, default=2, help="busy processes for the loaded runs")
    ap.add_argument("--quick", action="store_true", help="only the four small workloads")
    ap.add_argument("--out", default=str(ROOT / "results" / "threads.json"))
    args = ap.parse_args(argv)
    runs = []
    for config in ("before", "after"):
        for n_busy in (0, args.busy):
            t0 = time.perf_counter()
            runs.append(child(config, n_busy, args.repeats, args.quick))
            print(f"{config:6s} busy={n_busy}: {time.perf_counter() - t0:.0f} s, report {runs[-1]['report']}",
                  flush=True)
    print()
    print("| workload | machine | before: 1 thread | before: 2 threads | ratio 2/1 | after: 1 thread | "
          "after: 2 threads | ratio 2/1 |")
    print("|---|---|---|---|---|---|---|---|")
    names = [r["name"] for r in runs[0]["results"]]
    for n_busy in (0, args.busy):
        for name in names:
            cells = []
            for config in ("before", "after"):
                run = next(r for r in runs if r["config"] == config and r["busy"] == n_busy)
                r = next(x for x in run["results"] if x["name"] == name)
                cells += [f"{r['t1'] * 1e3:.1f} ms", f"{r['t2'] * 1e3:.1f} ms", f"{r['t2'] / r['t1']:.2f}"]
            label = "idle" if n_busy == 0 else f"{n_busy} busy processes"
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(runs=runs, cpus=os.cpu_count(), median=statistics.median.__name__), indent=1))
    tmp.replace(out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
