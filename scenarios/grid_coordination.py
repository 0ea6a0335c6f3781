"""Grid coordination trap: with ``walls`` observations k = 1 stays on the decoys, k = 2 meets.

Two agents start on decoy cells (0.02 each per step) at the ends of a 7-cell corridor
with the goal in the middle (``grid_coordination.TRAP_CONFIG``); the inner corridor cells
alias under ``walls`` observations. From the near-"stay" start (stay 0.8, each move 0.05)
k = 1 ends at 0.8, far below J* = 17.1875, and the smallest k that reaches J* is 2.

    python scenarios/grid_coordination.py [--k-max 5] [--out results]
"""

import argparse

from marl_kstep.envs import grid_coordination
from marl_kstep.experiments import scenario_report

CONFIG = grid_coordination.TRAP_CONFIG
STAY = 0.8


def smallest_escaping_k(rows, tol=1e-6):
    ks = sorted(r["k"] for r in rows if r["method"] == "pgd" and r["k"] >= 2 and r["gap"] <= tol)
    return ks[0] if ks else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k-max", type=int, default=5)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    # run specs from the scenario's default start, grid_coordination.near_stay_start (stay 0.8)
    res = scenario_report("grid_coordination", CONFIG, ks=range(1, args.k_max + 1),
                          iters={"pgd": 2000, "mirror": 4000}, out_dir=None, extra=dict(stay=STAY))
    res["smallest_escaping_k"] = smallest_escaping_k(res["rows"])
    print(f"smallest k >= 2 reaching J* within 1e-6 (pgd): {res['smallest_escaping_k']}")
    if args.out is not None:
        from pathlib import Path

        from marl_kstep.experiments import write_json_atomic

        print(f"wrote {write_json_atomic(Path(args.out) / 'grid_coordination.json', res)}")
    return res


if __name__ == "__main__":
    main()
