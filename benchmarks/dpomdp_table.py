"""Regenerate docs/benchmarks.md: every Dec-POMDP problem against every method.

    python benchmarks/dpomdp_table.py [--iters 1000] [--budget 3000000] [--files GridSmall.dpomdp ...]

Reads the problems from ../shared/benchmarks/dpomdp (or $MARL_KSTEP_DPOMDP_DIR); writes
docs/benchmarks.md and results/dpomdp_table.json (atomically). Same as ``marl-kstep benchmarks``.
"""

import sys

from marl_kstep.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmarks", *sys.argv[1:]]))
