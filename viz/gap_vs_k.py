"""docs/figures/gap_vs_k_<scenario>.png: final gap to J* against the window length k."""

import matplotlib.pyplot as plt
from _common import FIGURES, demo_results, grid_results

from marl_kstep import plotting

if __name__ == "__main__":
    for res in [*demo_results(), grid_results()]:
        name = res["scenario"]
        fig = plotting.gap_vs_k(res, FIGURES / f"gap_vs_k_{name}.png", title=f"{name}: gap to J*")
        plt.close(fig)
        print(f"wrote {FIGURES / f'gap_vs_k_{name}.png'}")
