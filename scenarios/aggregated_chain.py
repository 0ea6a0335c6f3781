"""Aggregated chain: the smallest escaping window k grows with the chain length.

For each length L the chain (c = 0.3, gamma = 0.95, one observation) is trained with
projected ascent (eta 0.05) from theta[R] = 0.05 for k = 1, 2, ... until a run reaches
J* within 1e-6; the table lists that smallest k against L.

    python scenarios/aggregated_chain.py [--lengths 2 3 4 5 6] [--k-max 14] [--out results]
"""

import argparse
from pathlib import Path

from marl_kstep import best_deterministic
from marl_kstep.experiments import RunSpec, run_one, versions, write_json_atomic
from marl_kstep.experiments.runner import build_target

CONFIG = dict(small_reward=0.3, gamma=0.95)


def smallest_escaping_k(length, k_max=14, method="pgd", step=0.05, iters=3000):
    """Run specs for k = 1, 2, ... from the chain's default start (aggregated_chain.trap_start) until one
    reaches J* within 1e-6: ``(k, J*, record)``."""
    target = {"scenario": "aggregated_chain", "config": dict(length=length, **CONFIG)}
    j_star = best_deterministic(build_target(target)[0])[0]
    for k in range(1, k_max + 1):
        rec = run_one(RunSpec(target, k, method=method, step=step, iters=iters))
        if abs(rec["result"]["final_J"] - j_star) <= 1e-6:
            return k, j_star, rec
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
        k, j_star, rec = smallest_escaping_k(L, args.k_max)
        rows.append(dict(length=L, smallest_k=k, J_star=j_star,
                         iterations=None if rec is None else rec["result"]["iterations"],
                         spec_hash=None if rec is None else rec["spec_hash"]))
        print(f"{L:>6} {str(k):>10} {j_star:>12.6f} {str(rows[-1]['iterations']):>10}")
    result = dict(scenario="aggregated_chain", config=CONFIG, rows=rows, versions=versions())
    if args.out is not None:
        print(f"wrote {write_json_atomic(Path(args.out) / 'aggregated_chain.json', result)}")
    return result


if __name__ == "__main__":
    main()
