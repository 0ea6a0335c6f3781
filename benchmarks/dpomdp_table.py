"""Regenerate docs/benchmarks.md: every Dec-POMDP problem against every method.

    python benchmarks/dpomdp_table.py [--iters 200] [--budget 3000000] [--files GridSmall.dpomdp ...]

Reads the problems from ../shared/benchmarks/dpomdp (or $MARL_KSTEP_DPOMDP_DIR); writes
docs/benchmarks.md and results/dpomdp_table.json (atomically).
"""

import argparse
import sys
import time
from pathlib import Path

from marl_kstep import benchtable
from marl_kstep.experiments import versions, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(benchtable.DEFAULT_DATA_DIR), help="folder of .dpomdp files")
    ap.add_argument("--iters", type=int, default=200, help="iteration cap per run (default 200)")
    ap.add_argument("--step", type=float, default=0.01, help="step size for pgd and mirror (default 0.01)")
    ap.add_argument("--budget", type=int, default=3_000_000, help="path steps per pass (default 3e6)")
    ap.add_argument("--seeds", type=int, default=5, help="random starts (default 5)")
    ap.add_argument("--files", nargs="*", help="only these file names")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"benchmark folder {args.data} is absent; nothing to do", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    commit = benchtable.commit_id(ROOT)  # the code the table is produced from

    def progress(name, key, cell):
        print(f"{name:<40} {key:<10} uniform {cell['uniform']:.4f}  median {cell['median']:.4f}  "
              f"{cell['seconds']:.1f} s", flush=True)

    settings = dict(iters=args.iters, step=args.step, max_path_steps=args.budget, seeds=list(range(args.seeds)))
    rows = benchtable.run_table(args.data, files=args.files, progress=progress, iters=args.iters, step=args.step,
                                max_path_steps=args.budget, seeds=tuple(range(args.seeds)))
    write_json_atomic(ROOT / "results" / "dpomdp_table.json",
                      dict(rows=rows, settings=settings, commit=commit, versions=versions()))
    text = f"""# Dec-POMDP benchmarks

Produced by `python benchmarks/dpomdp_table.py` at commit `{commit}` in {time.perf_counter() - t0:.0f} s
({versions()}). Memoryless decentralized policies on the observation-augmented joint MDP (SPEC §6), gamma 0.9
or the file's discount when it is below 1. Projected (pgd) and mirror ascent with step {args.step},
at most {args.iters} iterations (stop when no entry moves by 1e-8), from the uniform policy and from
{args.seeds} Dirichlet(1) random starts (seeds 0..{args.seeds - 1}); J is the ordinary value of the final
policy. J* is the best deterministic policy by exhaustive search (— when there are more than 10^6);
ABR is alternating best response from the uniform policy. A k whose path enumeration needs more than
{args.budget:,} steps per pass is marked "over budget".

## What it shows

{benchtable.findings(rows)}

## Table

{benchtable.markdown(rows)}
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
