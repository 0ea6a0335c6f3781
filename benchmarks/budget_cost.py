"""What one exact call costs per Dec-POMDP problem and k: the basis of the table's path budget.

    python benchmarks/budget_cost.py [--ks 1 2 3 4] [--cap 400000000] [--out results/budget_cost.json]

For every ``.dpomdp`` file of the benchmark table (``marl_kstep.experiments.benchtable``) and
every k: the path steps of one pass (exact count on the walked, lumped model; planning stops
above ``--cap``; the package of this checkout, ``_checkout``), and, when within the cap, the
median time of ``value_and_grad`` at the uniform policy (3 calls after a first that plans,
compiles or loads) with numba's default threads. A table run is at most ``iters`` such calls
(1000 by default) per seed, so ``seconds per call x iters`` bounds one run; the script prints
that bound beside the steps, and the largest step count whose bound is under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)
import numba

import marl_kstep as mk
from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR, _gamma_for, exact_call_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--ks", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--cap", type=int, default=400_000_000)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    print(f"load {os.getloadavg()[0]:.2f}, numba threads {numba.get_num_threads()}")
    print("| problem | k | path steps / pass (walked) | s / call | x iters |")
    print("|---|---|---|---|---|")
    for path in sorted(Path(args.data).glob("*.dpomdp*")):
        try:
            mdp = mk.load_dpomdp(path, gamma=_gamma_for(path))
        except ValueError as err:  # a file the strict loader refuses (see the table)
            print(f"| {path.name} | | refused: {err} | | |")
            continue
        for k in args.ks:
            sec, steps = exact_call_seconds(mdp, k, args.cap)  # steps: exact, on the walked model
            if sec is None:
                rows.append(dict(problem=path.name, k=k, steps=None))
                print(f"| {path.name} | {k} | > {args.cap:,} | | |", flush=True)
                continue
            rows.append(dict(problem=path.name, k=k, steps=steps, seconds=sec, load=os.getloadavg()[0]))
            print(f"| {path.name} | {k} | {steps:,} | {sec:.4f} | {sec * args.iters:.0f} s |", flush=True)
    fit = [r for r in rows if r.get("steps") and r["seconds"] * args.iters <= 60]
    over = [r for r in rows if r.get("steps") and r["seconds"] * args.iters > 60]
    print(f"largest steps of a cell under 60 s per run: {max((r['steps'] for r in fit), default=0):,}; "
          f"smallest over: {min((r['steps'] for r in over), default=0):,}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
