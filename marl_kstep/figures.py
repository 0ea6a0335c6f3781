"""All figures of one results file (learning curves, gap against k, policies, grid episodes).

Used by ``marl-kstep plot`` and the demo; the drawing itself is :mod:`marl_kstep.plotting`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plotting
from .envs import compile_env
from .experiments import SCENARIOS
from .experiments.run import build_target
from .policy import Policy

__all__ = ["make_figures", "problem_of"]


def problem_of(results: dict):
    """``(mdp or None, env or None)`` of a results file: rebuilt from its resolved ``target`` (results
    written from run records), else -- older files -- from the scenario's ``config``."""
    if results.get("target") is not None:
        mdp, env, _ = build_target(results["target"])
        return mdp, env
    module = SCENARIOS[results["scenario"]][0] if results.get("scenario") in SCENARIOS else None
    env = module.parallel_env(**results["config"]) if module is not None else None
    return (compile_env(env) if env is not None else None), env


def make_figures(results: dict, fig_dir: Path, grid_gif: bool = True) -> list[Path]:
    """All figures of one results file into ``fig_dir``; returns the paths written."""
    fig_dir = Path(fig_dir)
    written = []
    rows = results["rows"]
    name = results["scenario"]
    plotting.learning_curves(results, fig_dir / "learning_curves.png", title=f"{name}: learning curves")
    written.append(fig_dir / "learning_curves.png")
    if results.get("J_star") is not None:
        plotting.gap_vs_k(results, fig_dir / "gap_vs_k.png", gamma=results.get("gamma"), title=f"{name}: gap to J*")
        written.append(fig_dir / "gap_vs_k.png")
    mdp, env = problem_of(results)
    for r in rows:
        tag = f"k{r['k']}_{r['method']}" + ("" if r.get("seed") is None else f"_seed{r['seed']}")
        policy = Policy([np.asarray(t) for t in r["policy"]])
        plotting.policy_heatmap(policy, mdp, fig_dir / f"policy_{tag}.png",
                                title=f"{name}: final policy, k = {r['k']}, {r['method']}")
        written.append(fig_dir / f"policy_{tag}.png")
        if name == "grid_coordination" and r.get("seed") is None and env is not None:
            plotting.grid_trajectory(env, policy, r["k"], seed=0, path=fig_dir / f"trajectory_{tag}.png",
                                     title=f"k = {r['k']}, {r['method']}: J = {r['final_J']:.3f}")
            written.append(fig_dir / f"trajectory_{tag}.png")
            if grid_gif:
                plotting.animate_grid(env, policy, r["k"], seed=0, path=fig_dir / f"trajectory_{tag}.gif")
                written.append(fig_dir / f"trajectory_{tag}.gif")
    return written
