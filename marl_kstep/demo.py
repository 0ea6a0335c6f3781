"""The main job: the two-state aggregation trap (SPEC §5) trained for k = 1..6.

Run ``python -m marl_kstep.demo``. Projected gradient ascent (eta = 0.05) starts from
``theta[R] = 0.05`` for every window length k; the table shows where each run ends
(final ordinary value J), the best deterministic value J* = 9.0, the gap, iterations
and wall time. k = 1, 2 stay trapped at 5.0 (always-L); k >= 3 escape to 9.0.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import Policy, best_deterministic, train
from .envs import two_state


def run(k_max: int = 6, step: float = 0.05, iters: int = 2000, p0: float = 0.05,
        method: str = "pgd") -> list[dict]:
    """Train on the two-state trap for k = 1..k_max; return one row per k."""
    mdp = two_state.build_mdp(small_reward=0.5, gamma=0.9)
    j_star, _ = best_deterministic(mdp)
    rows = []
    for k in range(1, k_max + 1):
        init = Policy.from_arrays(mdp, [np.array([[1.0 - p0, p0]])])
        res = train(mdp, k=k, method=method, step=step, iters=iters, init=init)
        rows.append(dict(k=k, J=res.final_J, J_star=j_star, gap=j_star - res.final_J,
                         iterations=res.iterations, seconds=res.seconds))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'k':>3} {'final J':>10} {'J*':>8} {'gap':>10} {'iterations':>10} {'seconds':>9}"]
    for r in rows:
        lines.append(f"{r['k']:>3} {r['J']:>10.6f} {r['J_star']:>8.4f} {r['gap']:>10.2e} "
                     f"{r['iterations']:>10d} {r['seconds']:>9.4f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m marl_kstep.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--k-max", type=int, default=6, help="largest window length (default 6)")
    ap.add_argument("--step", type=float, default=0.05, help="step size eta (default 0.05)")
    ap.add_argument("--method", choices=["pgd", "mirror"], default="pgd", help="update (default pgd)")
    args = ap.parse_args(argv)
    print("Two-state aggregation trap (SPEC §5): c = 0.5, gamma = 0.9, start theta[R] = 0.05, "
          f"{args.method}, eta = {args.step}")
    print(format_table(run(args.k_max, args.step, method=args.method)))


if __name__ == "__main__":
    main()
