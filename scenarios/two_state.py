"""The two-state aggregation trap (SPEC §5): k = 1, 2 stay at 5.0, k >= 3 reach 9.0.

    python scenarios/two_state.py [--k-max 6] [--out results]
"""

import argparse

from marl_kstep.experiments import scenario_report

CONFIG = dict(small_reward=0.5, gamma=0.9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k-max", type=int, default=6)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    # run specs from the scenario's default start, two_state.trap_start (theta[R] = 0.05)
    return scenario_report("two_state", CONFIG, ks=range(1, args.k_max + 1), iters=2000, out_dir=args.out,
                           extra=dict(p0=0.05))


if __name__ == "__main__":
    main()
