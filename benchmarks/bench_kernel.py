"""Kernel speed suite: medians of repeated runs, ratios measured side by side in one process.

    python benchmarks/bench_kernel.py [--repeats 7] [--quick] [--out results/bench_kernel.json]

Workloads: number matching (n = 3, m = 6, ``match``) k = 1..4; grid coordination (2 agents,
6 x 6 open grid, ``position``) k = 1..3; GridSmall (../shared/benchmarks/dpomdp) k = 1..3.
For each: states, exact path steps per pass, median seconds of ``value_and_grad`` after
warm-up, path steps per second (two passes), peak traced memory. Then the four targets of
the performance issue, each as a ratio or a time measured in this run, and the JIT compile
time in fresh processes with and without numba's cache. Results go to JSON (atomically)
and are summarised on screen; ``docs/performance.md`` quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _checkout  # noqa: E402, F401  (this checkout's marl_kstep, not an installed copy)
from baseline import baseline_value_and_grad  # noqa: E402
from sparse_k1 import sparse_value_and_grad  # noqa: E402

import marl_kstep as mk  # noqa: E402
from marl_kstep.envs import grid_coordination, number_matching  # noqa: E402
from marl_kstep.experiments import versions, write_json_atomic  # noqa: E402
from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def open_grid(side: int) -> str:
    rows = ["#" * (side + 2)] + ["#" + "." * side + "#" for _ in range(side)] + ["#" * (side + 2)]
    rows[1] = "#" + "." * (side - 1) + "G#"
    return "\n".join(rows)


def workloads(quick: bool = False):
    out = [("number_matching n=3 m=6 match", number_matching.build_mdp(n_agents=3, n_numbers=6, observation="match"),
            [1, 2, 3, 4]),
           ("grid 2 agents 6x6 position", grid_coordination.build_mdp(layout=open_grid(6), observation="position",
                                                                      starts=[None, None]), [1, 2, 3])]
    path = DEFAULT_DATA_DIR / "GridSmall.dpomdp"
    if path.exists():
        out.append(("GridSmall.dpomdp gamma 0.9", mk.load_dpomdp(path), [1, 2, 3]))
    else:
        print(f"GridSmall skipped: {path} is absent")
    if quick:
        out = [(n, m, ks[:2]) for n, m, ks in out]
    return out


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (JIT, caches)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def peak_memory(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def max_diff(a, b) -> float:
    (Ja, ga), (Jb, gb) = a, b
    return max(abs(Ja - Jb), *(float(np.max(np.abs(x - y))) for x, y in zip(ga, gb, strict=True)))


def table(mdps, repeats):
    rows = []
    for name, mdp, ks in mdps:
        pol = mk.Policy.random(mdp, seed=0)
        quotient = mk.lump(mdp).quotient
        for k in ks:
            steps = mk.count_path_steps(mdp, k)
            walked = mk.count_path_steps(quotient, k)
            t = median_time(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k), repeats)
            mem = peak_memory(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k))
            rows.append(dict(workload=name, k=k, states=mdp.n_states, lumped_states=quotient.n_states,
                             path_steps=steps, path_steps_walked=walked, seconds=t,
                             steps_per_second=2 * walked / t, peak_traced_bytes=mem))
            print(f"{name:<32} k={k} states={mdp.n_states:>5} (lumped {quotient.n_states:>5}) steps={steps:>11,} "
                  f"walked={walked:>11,} median={t * 1e3:9.3f} ms {2 * walked / t / 1e6:8.1f} M steps/s  "
                  f"peak {mem / 2**20:7.1f} MiB", flush=True)
    return rows


def target_baseline(mdps, repeats):
    """Target 1: numba kernel vs the pure-Python baseline (same values to 1e-10), with the
    default lumping and with ``lump=False`` (the kernel alone on the full model)."""
    out = []
    for name, mdp, ks in mdps:
        pol = mk.Policy.random(mdp, seed=0)
        for k in ks:
            if mk.count_path_steps(mdp, k) > 2_000_000:  # the baseline would take minutes
                continue
            ours, ours_full = mk.value_and_grad(mdp, pol, k), mk.value_and_grad(mdp, pol, k, lump=False)
            base = baseline_value_and_grad(mdp, pol, k)
            diff, diff_full = max_diff(base, ours), max_diff(base, ours_full)
            time.sleep(0.5)  # let the baseline's BLAS threads go idle
            # the kernel first: the baseline's multithreaded LAPACK solves leave BLAS threads
            # spinning for a while, which would slow a parallel kernel timed right after them
            tk = median_time(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k), repeats)
            tf = median_time(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k, lump=False), repeats)
            tb = median_time(lambda m=mdp, p=pol, k=k: baseline_value_and_grad(m, p, k), max(1, repeats // 3))
            out.append(dict(workload=name, k=k, baseline_s=tb, kernel_s=tk, ratio=tb / tk, max_abs_diff=diff,
                            kernel_unlumped_s=tf, ratio_unlumped=tb / tf, max_abs_diff_unlumped=diff_full))
            print(f"baseline {name:<32} k={k}: {tb * 1e3:9.1f} ms vs {tk * 1e3:7.3f} ms -> {tb / tk:7.1f}x "
                  f"(lump=False: {tf * 1e3:7.3f} ms -> {tb / tf:7.1f}x; max diff {max(diff, diff_full):.1e})",
                  flush=True)
    return out


def target_sparse_k1(mdps, repeats):
    """Target 2: value_and_grad at k = 1 vs a scipy.sparse formulation (same values)."""
    out = []
    for name, mdp, _ in mdps:
        pol = mk.Policy.random(mdp, seed=0)
        diff = max_diff(sparse_value_and_grad(mdp, pol), mk.value_and_grad(mdp, pol, 1, lump=False))
        ts = median_time(lambda m=mdp, p=pol: sparse_value_and_grad(m, p), repeats)
        tk = median_time(lambda m=mdp, p=pol: mk.value_and_grad(m, p, 1), repeats)
        tf = median_time(lambda m=mdp, p=pol: mk.value_and_grad(m, p, 1, lump=False), repeats)
        out.append(dict(workload=name, sparse_s=ts, kernel_s=tk, ratio=tk / ts, max_abs_diff=diff,
                        kernel_unlumped_s=tf, ratio_unlumped=tf / ts))
        print(f"k=1 {name:<32}: kernel {tk * 1e3:7.3f} ms (lump=False {tf * 1e3:7.3f} ms), scipy.sparse "
              f"{ts * 1e3:7.3f} ms -> {tk / ts:.2f}x ({tf / ts:.2f}x) of sparse (max diff {diff:.1e})", flush=True)
    return out


def target_threads(mdps, repeats):
    """Target 3: 2 threads vs 1 on workloads with >= 1000 states (alternating, medians)."""
    out = []
    for name, mdp, ks in mdps:
        if mdp.n_states < 1000:
            continue
        pol = mk.Policy.random(mdp, seed=0)
        for k in ks:
            if k == 1:
                continue
            times = {1: [], 2: []}
            mk.value_and_grad(mdp, pol, k)
            for _ in range(repeats):
                for th in (1, 2):
                    numba.set_num_threads(th)
                    t = time.perf_counter()
                    mk.value_and_grad(mdp, pol, k)
                    times[th].append(time.perf_counter() - t)
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            t1, t2 = statistics.median(times[1]), statistics.median(times[2])
            out.append(dict(workload=name, k=k, one_thread_s=t1, two_threads_s=t2, speedup=t1 / t2))
            print(f"threads {name:<32} k={k}: 1 thread {t1 * 1e3:8.1f} ms, 2 threads {t2 * 1e3:8.1f} ms -> "
                  f"{t1 / t2:.2f}x", flush=True)
    return out


_TRAIN_SNIPPET = """
import time, json, numpy as np
t0 = time.perf_counter()
import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.estimators import _fused, _linalg, _walk
t_import = time.perf_counter() - t0
mdp = number_matching.build_mdp(n_agents=2, n_numbers=6, observation="match", start="far")
init = number_matching.trap_start(mdp)
t1 = time.perf_counter()
mk.train(mdp, k=3, method="pgd", step=0.05, iters=1, tol=0.0, init=init)
t_first = time.perf_counter() - t1
t2 = time.perf_counter()
res = mk.train(mdp, k=3, method="pgd", step=0.05, iters=500, tol=0.0, init=init)
t_train = time.perf_counter() - t2
stats = {name: dict(hits=sum(f.stats.cache_hits.values()), misses=sum(f.stats.cache_misses.values()))
         for mod in (_walk, _linalg, _fused) for name, f in vars(mod).items()
         if hasattr(f, "stats") and f.signatures}
print(json.dumps(dict(import_s=t_import, first_call_s=t_first, train_500_s=t_train, iterations=res.iterations,
                      final_J=res.final_J, cache=stats)))
"""


def fresh_process(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _TRAIN_SNIPPET], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def target_train_and_cache():
    """Target 4 and the JIT compile time: fresh processes with an empty and a warm numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        cold = fresh_process(cache)
        warm = fresh_process(cache)
    print(f"fresh process, empty numba cache: first train call {cold['first_call_s']:.2f} s (compile), "
          f"500 iterations {cold['train_500_s']:.2f} s; cache {cold['cache']}")
    print(f"fresh process, warm numba cache:  first train call {warm['first_call_s']:.2f} s, "
          f"500 iterations {warm['train_500_s']:.2f} s; cache {warm['cache']}")
    return dict(cold=cold, warm=warm)


def scaling(repeats: int, sides=(3, 4, 5, 6, 7, 8), ks=(1, 2, 3)):
    """Time, path steps, nonzeros of M and peak traced memory on open grids (2 agents,
    ``position`` observations) of growing side: the data of the scaling plot."""
    out = []
    for side in sides:
        mdp = grid_coordination.build_mdp(layout=open_grid(side), observation="position", starts=[None, None])
        pol = mk.Policy.random(mdp, seed=0)
        for k in ks:
            steps = mk.count_path_steps(mdp, k)
            if steps > 2e8:
                continue
            t = median_time(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k), max(3, repeats // 2))
            mem = peak_memory(lambda m=mdp, p=pol, k=k: mk.value_and_grad(m, p, k))
            nnz = int(mk.ExactKStep(mdp, k).plan.m_idx.size)
            out.append(dict(side=side, states=mdp.n_states, k=k, path_steps=steps, seconds=t, nnz_M=nnz,
                            transitions=int(mdp.probs.size), peak_traced_bytes=mem))
            print(f"scaling side={side} N={mdp.n_states:>5} k={k} steps={steps:>11,} nnz(M)={nnz:>9,} "
                  f"{t * 1e3:9.2f} ms peak {mem / 2**20:7.1f} MiB", flush=True)
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), numba_threads=numba.config.NUMBA_NUM_THREADS,
                platform=platform.platform(), **versions())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer k per workload (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_kernel.json"))
    args = ap.parse_args(argv)
    info = machine()
    print(info)
    mdps = workloads(args.quick)
    result = dict(machine=info, table=table(mdps, args.repeats))
    result["baseline"] = target_baseline(mdps, args.repeats)
    result["sparse_k1"] = target_sparse_k1(mdps, args.repeats)
    result["threads"] = target_threads(mdps, args.repeats)
    result["train"] = target_train_and_cache()
    if not args.quick:
        result["scaling"] = scaling(args.repeats)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
