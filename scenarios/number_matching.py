"""Number matching (SPEC §5, §7.1): k = 1 stays at 0.0, k >= 2 reach the optimum 6.477.

Two agents, six numbers, move cost 0.3, gamma 0.9, ``match`` observations, ``far`` start.
Start: every row (keep 0.97, inc 0.03), with agent 1's rows moved by 1e-6 toward "keep".
That tiny asymmetry matters: from the exactly symmetric SPEC start, projected ascent with
k = 3, 4 keeps the two agents identical and stops at a symmetric saddle (J = 0.889, 0.899);
any asymmetry lets k >= 2 escape to 6.477 while k = 1 stays at 0.0.

    python scenarios/number_matching.py [--k-max 4] [--out results]
"""

import argparse

from marl_kstep.experiments import scenario_report

CONFIG = dict(n_agents=2, n_numbers=6, move_cost=0.3, gamma=0.9, observation="match", start="far")
ASYMMETRY = 1e-6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k-max", type=int, default=4)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    # run specs from the scenario's default start: number_matching.trap_start(mdp, asymmetry=ASYMMETRY)
    return scenario_report("number_matching", CONFIG, ks=range(1, args.k_max + 1),
                           iters={"pgd": 200, "mirror": 2000}, out_dir=args.out,
                           extra=dict(start_rows=[0.97, 0.03], asymmetry=ASYMMETRY))


if __name__ == "__main__":
    main()
