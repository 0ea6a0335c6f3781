"""Shared paths for the figure scripts: saved results in results/, figures in docs/figures/."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
FIGURES = ROOT / "docs" / "figures"


def demo_results() -> list[dict]:
    """The demo's saved results (``marl-kstep demo``); produced first when absent."""
    paths = [RESULTS / "demo" / name / "results.json" for name in ("two_state", "number_matching")]
    if not all(p.exists() for p in paths):
        from marl_kstep.demo import run_demo

        run_demo(RESULTS / "demo", figures=False)
    return [json.loads(p.read_text()) for p in paths]


def grid_results() -> dict:
    """Grid-trap results (``marl-kstep run grid_coordination --k 1 2 3 4 --out results/grid``)."""
    path = RESULTS / "grid" / "results.json"
    if not path.exists():
        from marl_kstep.cli import main

        main(["run", "grid_coordination", "--k", "1", "2", "3", "4", "--iters", "2000", "--out", str(path.parent),
              "--quiet"])
    return json.loads(path.read_text())
