"""docs/figures/learning_curves_<scenario>.png from the demo's and the grid trap's saved results."""

import matplotlib.pyplot as plt
from _common import FIGURES, demo_results, grid_results

from marl_kstep import plotting

if __name__ == "__main__":
    for res in [*demo_results(), grid_results()]:
        name = res["scenario"]
        fig = plotting.learning_curves(res, FIGURES / f"learning_curves_{name}.png", title=f"{name}: learning curves")
        plt.close(fig)
        print(f"wrote {FIGURES / f'learning_curves_{name}.png'}")
