"""Reference values of the pre-re-layout kernel (commit b5ba8ce), for tests/test_estimators.py.

Run only against that commit (see README.md beside this file)."""

import sys

import numpy as np

import marl_kstep as mk
from marl_kstep.envs import aggregated_chain, grid_coordination, number_matching, two_state

assert hasattr(mk, "kernel"), "run this against commit b5ba8ce"

out = {}
cases = []
rng = np.random.default_rng(2026)
for c in range(6):
    N = int(rng.integers(2, 9))
    n_act = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3)))]
    J = int(np.prod(n_act))
    P = rng.random((N, J, N)) * (rng.random((N, J, N)) < 0.5)
    P[:, :, 0] += 1e-3
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(N, J))
    obs = [rng.integers(0, int(rng.integers(1, 4)), size=N) for _ in n_act]
    mu = rng.dirichlet(np.ones(N))
    gamma = float(rng.uniform(0.5, 0.95))
    mdp = mk.JointMDP.from_dense(P, R, obs, n_act, mu, gamma, n_obs=[int(o.max()) + 1 for o in obs])
    for key, arr in dict(P=P, R=R, mu=mu, gamma=np.array(gamma), n_act=np.array(n_act)).items():
        out[f"rand{c}_{key}"] = arr
    for i, o in enumerate(obs):
        out[f"rand{c}_obs{i}"] = o
    cases.append((f"rand{c}", mdp))
cases += [("two_state", two_state.build_mdp()),
          ("nm", number_matching.build_mdp(n_agents=3, n_numbers=4, observation="match")),
          ("nm_own", number_matching.build_mdp(n_agents=2, n_numbers=5, observation="own")),
          ("grid_trap", grid_coordination.build_mdp(**grid_coordination.TRAP_CONFIG)),
          ("grid_slip", grid_coordination.build_mdp(slip=0.1, observation="position")),
          ("chain", aggregated_chain.build_mdp(length=5))]
names = []
for name, mdp in cases:
    for k in (1, 2, 3):
        for s in range(2):
            if mk.kernel.count_path_steps(mdp, k, 2_000_000) > 2_000_000:
                continue
            pol = mk.Policy.random(mdp, seed=100 * k + s)
            J, g, V = mk.kernel.values_and_grad(mdp, pol, k)
            tag = f"{name}_k{k}_s{s}"
            out[f"{tag}_J"] = np.array(J)
            out[f"{tag}_V"] = V
            for i, gi in enumerate(g):
                out[f"{tag}_g{i}"] = gi
            names.append(tag)
out["names"] = np.array(names)
np.savez_compressed(sys.argv[1], **out)
print(len(names), "cases")
