"""Regenerate docs/benchmarks.md: every Dec-POMDP problem against every method.

    python benchmarks/dpomdp_table.py [--iters 1000] [--budget 6000000] [--cost-limit 60] [--files GridSmall.dpomdp ...]

Reads the problems shipped in marl_kstep/data/dpomdp (or $MARL_KSTEP_DPOMDP_DIR); writes
results/benchmarks/benchmarks.md and dpomdp_table.json beside it (atomically; --write-docs also
docs/benchmarks.md). Same as ``marl-kstep benchmarks``.
"""

import sys

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)

from marl_kstep.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmarks", *sys.argv[1:]]))
