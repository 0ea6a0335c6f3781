"""docs/figures/paper_claim.png: the paper's claim measured on random problem families (docs/paper-claim.md).

    python viz/paper_claim.py [run] [plot]

``run`` runs the studies of docs/paper-claim.md through ``marl-kstep study gap-vs-k`` (results in
results/paper-claim/FAMILY/, resumable); ``plot`` draws, per family, the mean shortfall
(J* - J)^+ / (J* - J_min) against k with its cluster-bootstrap interval and the fitted c rho^k (left),
and the success rate with its Wilson interval (right), for plain ascent and every escape order run.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _common import FIGURES, RESULTS  # noqa: E402

from marl_kstep.cli import main  # noqa: E402

OUT = RESULTS / "paper-claim"
#: family -> arguments of `marl-kstep study gap-vs-k` (as in docs/paper-claim.md); dec-pomdp stops at k = 4,
#: where its exact windows already take about 2 s per run (the noise branches every step)
STUDIES = {
    "aggregation": ["--problems", "30", "--starts", "10", "--k", "1", "2", "3", "4", "6", "8", "--escape-order", "2"],
    "decentralized": ["--problems", "30", "--starts", "10", "--k", "1", "2", "3", "4", "6", "8", "--escape-order", "2"],
    "dec-pomdp": ["--problems", "30", "--starts", "10", "--k", "1", "2", "3", "4", "--escape-order", "2"],
}
COLOURS = {"aggregation": "tab:blue", "decentralized": "tab:orange", "dec-pomdp": "tab:green"}
STYLES = {"plain": "-", "escape-1": ":", "escape-2": "--", "escape-3": "-."}


def run() -> None:
    for family, extra in STUDIES.items():
        main(["study", "gap-vs-k", "--family", family, *extra, "--out", str(OUT / family),
              "--resume", "--executor", "process", "--workers", "2", "--quiet"])


def plot() -> None:
    fig, (ax_gap, ax_ok) = plt.subplots(1, 2, figsize=(11, 4.2))
    for shift, (family, colour) in zip((-0.08, 0.0, 0.08), COLOURS.items(), strict=True):
        path = OUT / family / "study.json"
        if not path.exists():
            print(f"skipping {family}: no {path}")
            continue
        study = json.loads(path.read_text())
        n = study["problems"] * study["starts"]
        for name, v in study["variants"].items():
            cells = v["cells"]
            k = np.array([c["k"] for c in cells]) + shift
            g = np.array([c["mean_shortfall"] for c in cells])
            lo, hi = np.array([c["mean_shortfall_ci"] for c in cells]).T
            style = STYLES.get(name, "-")
            label = f"{family}, {name} (rho {v['rho']:.2f})"
            ax_gap.errorbar(k, g, yerr=[g - lo, hi - g], color=colour, ls="none", marker="o", ms=4, capsize=2)
            kk = np.linspace(k.min(), k.max(), 50)
            if np.isfinite(v["rho"]) and v["rho"] > 0:
                ax_gap.plot(kk, v["c"] * v["rho"] ** kk, color=colour, ls=style, lw=1, label=label)
            p = np.array([c["success_rate"] for c in cells])
            wlo, whi = np.array([c["wilson"] for c in cells]).T
            ax_ok.errorbar(k, 100 * p, yerr=[100 * (p - wlo), 100 * (whi - p)], color=colour, ls=style, marker="o",
                           ms=4, capsize=2, label=f"{family}, {name} (n = {n} per point)")
    ax_gap.set_yscale("log")
    ax_gap.set_xlabel("window length k")
    ax_gap.set_ylabel("mean normalised shortfall (J* - J)+ / (J* - J_min)")
    ax_gap.set_title("gap to the best deterministic policy (95% cluster bootstrap)")
    ax_gap.legend(fontsize=7)
    ax_ok.set_xlabel("window length k")
    ax_ok.set_ylabel("runs ending at J* (%)")
    ax_ok.set_title("success rate, Wilson 95%")
    ax_ok.legend(fontsize=7)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "paper_claim.png", dpi=120)
    plt.close(fig)
    print(f"wrote {FIGURES / 'paper_claim.png'}")


if __name__ == "__main__":
    parts = sys.argv[1:] or ["run", "plot"]
    if "run" in parts:
        run()
    if "plot" in parts:
        plot()
