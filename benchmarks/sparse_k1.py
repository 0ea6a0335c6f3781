"""The ordinary (k = 1) value and gradient by sparse linear algebra (SPEC §2), for benchmarks.

Build :math:`P_\\pi` and :math:`r_\\pi`, solve :math:`(I - \\gamma P_\\pi) V = r_\\pi` and
:math:`(I - \\gamma P_\\pi)^\\top \\nu = \\mu`, then
:math:`\\partial J/\\partial\\theta_i[o,a] = \\sum_s \\nu(s) 1[\\phi_i(s)=o]
\\sum_{j: j_i = a} \\prod_{l \\ne i} \\theta_l[\\phi_l(s), j_l] Q(s, j)` by sparse products.
"""

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu


def sparse_value_and_grad(mdp, policy):
    N, J = mdp.n_states, mdp.n_joint_actions
    acts = mdp.joint_actions()  # (J, n)
    factors = [t[mdp.obs[i]][:, acts[:, i]] for i, t in enumerate(policy.theta)]  # each (N, J)
    pi = np.prod(factors, axis=0)
    P = mdp.transition_matrix()  # (N*J, N)
    rows = sparse.csr_matrix((pi.ravel(), (np.repeat(np.arange(N), J), np.arange(N * J))), shape=(N, N * J))
    Ppi = (rows @ P).tocsc()
    r_pi = (pi * mdp.rewards).sum(axis=1)
    lu = splu((sparse.identity(N, format="csc") - mdp.gamma * Ppi).tocsc())
    V = lu.solve(r_pi)
    nu = lu.solve(np.asarray(mdp.mu, float), trans="T")
    Q = mdp.rewards + mdp.gamma * (P @ V).reshape(N, J)
    grads = []
    for i, t in enumerate(policy.theta):
        others = np.ones((N, J))
        for other, f in enumerate(factors):
            if other != i:
                others *= f
        w = nu[:, None] * others * Q
        n_o, n_a = t.shape
        flat = mdp.obs[i][:, None] * n_a + acts[:, i][None, :]
        grads.append(np.bincount(flat.ravel(), weights=w.ravel(), minlength=n_o * n_a).reshape(n_o, n_a))
    return float(mdp.mu @ V), grads
