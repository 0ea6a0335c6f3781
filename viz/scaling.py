"""docs/figures/kernel_scaling.png: value_and_grad time against states and against k (log-log),
from results/bench_kernel.json (``python benchmarks/bench_kernel.py``)."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import FIGURES, RESULTS  # noqa: E402

if __name__ == "__main__":
    path = RESULTS / "bench_kernel.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run 'python benchmarks/bench_kernel.py' first")
    rows = json.loads(path.read_text())["scaling"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k in sorted({r["k"] for r in rows}):
        sel = [r for r in rows if r["k"] == k]
        a.loglog([r["states"] for r in sel], [r["seconds"] for r in sel], "o-", label=f"k = {k}")
    a.set_xlabel("joint states N (open grid, 2 agents, position observations)")
    a.set_ylabel("value_and_grad median seconds")
    a.legend()
    a.set_title("time against the number of states")
    b.loglog([r["path_steps"] for r in rows], [r["seconds"] for r in rows], "o", color="C3")
    for r in rows:
        b.annotate(f"{r['side']}x{r['side']},k={r['k']}", (r["path_steps"], r["seconds"]), fontsize=6)
    b.set_xlabel("path steps per pass")
    b.set_ylabel("seconds")
    b.set_title("time against the enumerated path steps")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "kernel_scaling.png", dpi=100)
    print(f"wrote {FIGURES / 'kernel_scaling.png'}")
