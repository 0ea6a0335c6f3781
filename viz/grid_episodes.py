"""docs/figures/grid_trap_k<k>.png and .gif: one episode of the grid trap's final pgd policies."""

import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, grid_results

from marl_kstep import Policy, plotting
from marl_kstep.envs import grid_coordination

if __name__ == "__main__":
    res = grid_results()
    env = grid_coordination.parallel_env(**res["config"])
    for r in res["rows"]:
        if r["method"] != "pgd" or r["k"] not in (1, 2):
            continue
        policy = Policy([np.asarray(t) for t in r["policy"]])
        stem = FIGURES / f"grid_trap_k{r['k']}"
        fig = plotting.grid_trajectory(env, policy, r["k"], seed=0, path=stem.with_suffix(".png"),
                                       title=f"grid trap, k = {r['k']} (pgd): J = {r['final_J']:.3f}")
        plt.close(fig)
        plt.close(plotting.animate_grid(env, policy, r["k"], seed=0, path=stem.with_suffix(".gif"), horizon=12))
        print(f"wrote {stem}.png and .gif")
