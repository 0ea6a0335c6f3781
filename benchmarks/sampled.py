"""Throughput of the sampled k-step estimator: fast path against env path on one model, and env
steps per second per core on number matching. Medians of repeated runs, side by side, with the
machine's load stated.

    python benchmarks/sampled.py            # about a minute
"""

from __future__ import annotations

import os

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)
import numba
from bench_kernel import median_time  # warm-up call, then the median of timed calls

import marl_kstep as mk
from marl_kstep.envs import number_matching


def throughput(make_env, label, n_agents_list, k):
    """Env steps per second of the batched path (no model built) for each number of agents."""
    for n_agents in n_agents_list:
        est = mk.SampledKStep(make_env(n_agents), k, episodes=8192, seed=0)
        p = mk.Policy.random(est, 0, concentration=3.0)
        t = median_time(lambda est=est, p=p: est.estimate(p), 3)
        print(f"  {label}, {n_agents} agents: {est.episodes * est.horizon / t:,.0f} env steps/s")


def main():
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}, numba threads: {numba.get_num_threads()}")
    mdp = number_matching.build_mdp(start="far")  # 2 agents, 6 numbers, gamma 0.9
    pol = mk.Policy.random(mdp, 0, concentration=3.0)
    k = 2
    fast = mk.SampledKStep(mdp, k, episodes=20_000, seed=0)
    env = mk.SampledKStep(mdp, k, episodes=200, seed=0, path="env")
    H = fast.horizon
    t_fast = median_time(lambda: fast.estimate(pol), 7)
    t_env = median_time(lambda: env.estimate(pol), 3)
    eps_fast, eps_env = fast.episodes / t_fast, env.episodes / t_env
    print(f"number matching (2 agents, 6 numbers), k={k}, horizon {H}:")
    print(f"  fast path: {eps_fast:,.0f} episodes/s ({eps_fast * H:,.0f} env steps/s, all threads)")
    print(f"  env path:  {eps_env:,.0f} episodes/s ({eps_env * H:,.0f} env steps/s)")
    print(f"  ratio fast/env: {eps_fast / eps_env:,.0f}x")
    # one core: the serial kernel (numba threads 1)
    numba.set_num_threads(1)
    for n_agents, m in ((2, 6), (4, 6), (6, 10)):
        big = number_matching.build_mdp(n_agents=n_agents, n_numbers=m, start="far")
        est = mk.SampledKStep(big, k, episodes=20_000, seed=0)
        p = mk.Policy.random(big, 0, concentration=3.0)
        t = median_time(lambda est=est, p=p: est.estimate(p), 5)
        print(f"  one thread, {n_agents} agents, {m} numbers ({big.n_states:,} states): "
              f"{est.episodes * est.horizon / t:,.0f} env steps/s")
    # the batched path (no enumeration): number matching through its array protocol
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    throughput(lambda n: number_matching.parallel_env(n_agents=n, n_numbers=10, start="far"),
               "batched path, number matching with 10 numbers (10^n states)", (2, 6, 8), k)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
