"""Aggregated chain: the smallest escaping window k grows with the chain length.

For each length L the chain (c = 0.3, gamma = 0.95, one observation) is trained with
projected ascent (eta 0.05) from theta[R] = 0.05 for k = 1, 2, ... until a run reaches
J* within 1e-6; the table lists that smallest k against L.

    python scenarios/aggregated_chain.py [--lengths 2 3 4 5 6] [--k-max 14] [--out results]
"""

import argparse
from pathlib import Path

from marl_kstep import best_deterministic, train
from marl_kstep.envs import aggregated_chain, compile_env
from marl_kstep.experiments import versions, write_json_atomic

CONFIG = dict(small_reward=0.3, gamma=0.95)


def smallest_escaping_k(length, k_max=14, method="pgd", step=0.05, iters=3000):
    mdp = compile_env(aggregated_chain.parallel_env(length=length, **CONFIG))
    j_star = best_deterministic(mdp)[0]
    for k in range(1, k_max + 1):
        res = train(mdp, k=k, method=method, step=step, iters=iters, init=aggregated_chain.trap_start(mdp))
        if abs(res.final_J - j_star) <= 1e-6:
            return k, j_star, res
    return None, j_star, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    ap.add_argument("--k-max", type=int, default=14)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'length':>6} {'smallest k':>10} {'J*':>12} {'iterations':>10}")
    for L in args.lengths:
        k, j_star, res = smallest_escaping_k(L, args.k_max)
        rows.append(dict(length=L, smallest_k=k, J_star=j_star, iterations=None if res is None else res.iterations))
        print(f"{L:>6} {str(k):>10} {j_star:>12.6f} {str(rows[-1]['iterations']):>10}")
    result = dict(scenario="aggregated_chain", config=CONFIG, rows=rows, versions=versions())
    if args.out is not None:
        print(f"wrote {write_json_atomic(Path(args.out) / 'aggregated_chain.json', result)}")
    return result


if __name__ == "__main__":
    main()
