"""docs/figures/policy_<scenario>_k<k>.png: final pgd policies of the demo scenarios at k = 1 and k = 3."""

import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, demo_results

from marl_kstep import Policy, compile_env, plotting
from marl_kstep.experiments import SCENARIOS

if __name__ == "__main__":
    for res in demo_results():
        name = res["scenario"]
        mdp = compile_env(SCENARIOS[name][0].parallel_env(**res["config"]))
        for r in res["rows"]:
            if r["method"] == "pgd" and r["k"] in (1, 3):
                path = FIGURES / f"policy_{name}_k{r['k']}.png"
                fig = plotting.policy_heatmap(Policy([np.asarray(t) for t in r["policy"]]), mdp, path,
                                              title=f"{name}: final pgd policy, k = {r['k']}")
                plt.close(fig)
                print(f"wrote {path}")
