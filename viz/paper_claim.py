"""docs/figures/paper_claim.png: the paper's claim measured on random problem families (docs/paper-claim.md).

    python viz/paper_claim.py [run] [capped] [plot]

``run`` runs the studies of docs/paper-claim.md through ``marl-kstep study gap-vs-k`` (results in
results/paper-claim/FAMILY/, resumable). ``capped`` reruns the aggregation family's capped failures
at k = 1 and 8 with a cap of 20,000 iterations (results/paper-claim/aggregation/capped_rerun.json).
``plot`` draws, per family, the mean shortfall (J* - J)^+ / (J* - J_min) against k with its
cluster-bootstrap interval and the fitted c rho^k (left), and the success rate with its Wilson
interval (right), for plain ascent and every escape order run.
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
from marl_kstep.experiments import study  # noqa: E402
from marl_kstep.experiments.io import write_json_atomic, write_text_atomic  # noqa: E402
from marl_kstep.experiments.runner import RunStore, canonical_json  # noqa: E402

OUT = RESULTS / "paper-claim"
#: family -> the `marl-kstep study gap-vs-k` calls of docs/paper-claim.md (into one folder per family).
#: dec-pomdp: 20 problems x 5 starts, escapes to k = 3 and plain ascent to k = 4 (its exact windows take
#: about 2 s per run at k = 4: the noise branches every step), summarised together by `combined`.
STUDIES = {
    "aggregation": [["--problems", "30", "--starts", "10", "--k", "1", "2", "3", "4", "6", "8", "--escape-order", "2"]],
    "decentralized": [["--problems", "30", "--starts", "10", "--k", "1", "2", "3", "4", "6", "--escape-order", "2"]],
    "dec-pomdp": [["--problems", "20", "--starts", "5", "--k", "1", "2", "3", "--escape-order", "2"],
                  ["--problems", "20", "--starts", "5", "--k", "4"]],
}
COLOURS = {"aggregation": "tab:blue", "decentralized": "tab:orange", "dec-pomdp": "tab:green"}
STYLES = {"plain": "-", "escape-1": ":", "escape-2": "--", "escape-3": "-."}


def combined(family: str, problems: int, starts: int, plain_ks, escape_ks, order: int = 2) -> None:
    """One study.json for plain runs at ``plain_ks`` and escapes at ``escape_ks`` (records of both calls)."""
    folder = OUT / family
    specs = study.study_specs(family, problems, starts, plain_ks) + [
        s for s in study.study_specs(family, problems, starts, escape_ks, escape_orders=[order]) if s.escape]
    wanted = {s.hash for s in specs}
    records = [r for r in RunStore(folder).records() if r["spec_hash"] in wanted]
    targets = list({canonical_json(s.target): s.target for s in specs}.values())
    summary = study.summarise(records, study.optima(targets, folder))
    summary.update(family=family, model_args=specs[0].target["random"], spec_hashes=sorted(wanted),
                   settings=dict(method="pgd", step=0.05, iters=1000, tol=1e-10, ks=list(plain_ks),
                                 escape_ks=list(escape_ks), escape_orders=[order]))
    write_json_atomic(folder / "study.json", summary)
    write_text_atomic(folder / "study.md", study.format_summary(summary, f"# gap vs k: {family}") + "\n")


def run() -> None:
    for family, calls in STUDIES.items():
        for extra in calls:
            main(["study", "gap-vs-k", "--family", family, *extra, "--out", str(OUT / family),
                  "--resume", "--executor", "process", "--workers", "2", "--quiet"])
    combined("dec-pomdp", 20, 5, [1, 2, 3, 4], [1, 2, 3])


def capped(family: str = "aggregation", ks=(1, 8), iters: int = 20_000, success_tol: float = 1e-3) -> None:
    """Rerun the plain runs of ``ks`` that failed at the iteration cap with a cap of ``iters``
    (the same specs otherwise): is the floor the cap or a trap? Writes FAMILY/capped_rerun.json."""
    import dataclasses

    from marl_kstep.experiments.runner import RunSpec, run_one

    folder = OUT / family
    opt = json.loads((folder / "optimum.json").read_text())
    out = []
    for r in RunStore(folder).records():
        s, res = r["spec"], r["result"]
        if s.get("escape") or s["k"] not in ks or not res["capped"]:
            continue
        j_star, j_min = (opt[canonical_json(s["target"])][key] for key in ("J_star", "J_min"))
        gap = (j_star - res["final_J"]) / (j_star - j_min)
        if gap <= success_tol:
            continue
        rec = run_one(dataclasses.replace(RunSpec.from_dict(s), iters=iters))
        out.append(dict(k=s["k"], problem=s["target"]["random"]["seed"], start=s["seed"], gap_before=gap,
                        gap_after=(j_star - rec["result"]["final_J"]) / (j_star - j_min),
                        capped=rec["result"]["capped"], iterations=rec["result"]["iterations"],
                        stationary=rec["result"]["stationary"]))
        print(out[-1], flush=True)
    write_json_atomic(folder / "capped_rerun.json", out)


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
    if "capped" in parts:
        capped()
    if "plot" in parts:
        plot()
