"""A straightforward pure-Python/numpy implementation of the k-step value and gradient.

Same semantics as ``marl_kstep.value_and_grad`` (SPEC §3, path formula with first-visit
factors), written the obvious way: a recursive walk over window paths with a dict memo,
dense ``W`` and ``M``, ``numpy.linalg.solve``, and a second walk that credits every factor of
every path with ``nu(s0) * T * prod(other factors) * G``. Used only as the speed baseline
(and checked equal to the kernel) in ``bench_kernel.py``.
"""

import numpy as np


def baseline_value_and_grad(mdp, policy, k):
    N, n = mdp.n_states, mdp.n_agents
    g = mdp.gamma
    obs = [list(map(int, o)) for o in mdp.obs]
    theta = [t.tolist() for t in policy.theta]
    strides = mdp.action_strides.tolist()
    indptr, indices, probs = mdp.indptr.tolist(), mdp.indices.tolist(), mdp.probs.tolist()
    R = mdp.rewards.tolist()
    J = mdp.n_joint_actions

    def paths(s0):
        """Yield (weight T, factors [(i, o, a, value)], discounted reward, end state)."""
        out = []

        def rec(s, depth, T, factors, ret, memo):
            if depth == k:
                out.append((T, factors, ret, s))
                return
            fixed, free = {}, []
            for i in range(n):
                o = obs[i][s]
                if (i, o) in memo:
                    fixed[i] = memo[(i, o)]
                else:
                    free.append((i, o))
            choices = [[]]
            for i, o in free:
                choices = [c + [(i, o, a)] for c in choices for a in range(mdp.n_actions[i])]
            for c in choices:
                acts = dict(fixed)
                new_memo = dict(memo)
                new_factors = list(factors)
                for i, o, a in c:
                    acts[i] = a
                    new_memo[(i, o)] = a
                    new_factors.append((i, o, a, theta[i][o][a]))
                j = sum(acts[i] * strides[i] for i in range(n))
                r = ret + g**depth * R[s][j]
                row = s * J + j
                for p in range(indptr[row], indptr[row + 1]):
                    rec(indices[p], depth + 1, T * probs[p], new_factors, r, new_memo)

        rec(s0, 0, 1.0, [], 0.0, {})
        return out

    all_paths = [paths(s) for s in range(N)]
    W = np.zeros(N)
    M = np.zeros((N, N))
    for s0 in range(N):
        for T, factors, ret, s in all_paths[s0]:
            w = T
            for f in factors:
                w *= f[3]
            W[s0] += w * ret
            M[s0, s] += w * g**k
    A = np.eye(N) - M
    V = np.linalg.solve(A, W)
    nu = np.linalg.solve(A.T, mdp.mu)
    grads = [np.zeros_like(t) for t in policy.theta]
    for s0 in range(N):
        if nu[s0] == 0.0:
            continue
        for T, factors, ret, s in all_paths[s0]:
            G = ret + g**k * V[s]
            for x, (i, o, a, _) in enumerate(factors):
                w = T
                for y, f in enumerate(factors):
                    if y != x:
                        w *= f[3]
                grads[i][o, a] += nu[s0] * w * G
    return float(mdp.mu @ V), grads
