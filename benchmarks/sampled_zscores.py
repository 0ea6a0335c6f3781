"""The unbiasedness table of docs/sampled.md: z-scores of the sampled estimates against the exact
kernel on every built-in scenario, k = 1, 2, 3, on the fast, batched and env paths (the settings
of tests/test_sampled.py), and the mean and spread of all z-scores (about 0 and 1 when the
estimator is unbiased and its standard errors are right).

    python benchmarks/sampled_zscores.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _checkout  # noqa: E402, F401  (this checkout's marl_kstep, not an installed copy)
from test_sampled import SCENARIOS, interior_policy, z_scores  # noqa: E402

import marl_kstep as mk  # noqa: E402
from marl_kstep.sampling import horizon_for  # noqa: E402


def main():
    print(f"{'scenario':<22} {'k':>2} {'path':<5} {'episodes':>8} {'z(J_k)':>7} {'max|z| grad':>11} {'entries':>7}")
    worst, all_z = 0.0, []
    for name, factory, config in SCENARIOS:
        for k in (1, 2, 3):
            for path in ("fast", "batched", "env"):
                if path == "fast":
                    mdp = mk.compile_env(factory(**config))
                    pol = interior_policy(mdp, 10 + k)
                    est = mk.SampledKStep(mdp, k, episodes=20_000, seed=k)
                elif path == "batched":
                    env = factory(**config)
                    mdp = mk.compile_env(env)
                    pol = interior_policy(mdp, 30 + k)
                    est = mk.SampledKStep(env, k, episodes=6000, seed=k)
                else:
                    H = horizon_for(0.8, 1e-4)
                    env = factory(**dict(config, gamma=0.8), max_cycles=H)
                    mdp = mk.compile_env(env)
                    pol = interior_policy(mdp, 20 + k)
                    est = mk.SampledKStep(env, k, episodes=600, seed=k, path="env")
                zJ, zg = z_scores(est.estimate(pol), mk.ExactKStep(mdp, k).estimate(pol))
                worst = max(worst, abs(zJ), np.abs(zg).max())
                all_z.extend([zJ, *zg])
                print(f"{name:<22} {k:>2} {path:<5} {est.episodes:>8} {zJ:>7.2f} {np.abs(zg).max():>11.2f} "
                      f"{zg.size:>7}", flush=True)
    z = np.asarray(all_z)
    print(f"largest |z|: {worst:.2f}; all {z.size} z-scores: mean {z.mean():.3f}, standard deviation {z.std():.3f}")


if __name__ == "__main__":
    main()
