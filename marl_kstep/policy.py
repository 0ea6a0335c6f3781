r"""Restricted policies and per-agent updates (SPEC §1, §4).

A decentralized memoryless policy is one table per agent,
:math:`\theta_i[o, a] = \pi_i(a \mid o)`, each row on the probability simplex; the joint
policy is :math:`\pi(j \mid s) = \prod_i \theta_i[\phi_i(s), a_i]`.

Each agent updates and projects only its own rows:

* projected gradient ascent:
  :math:`\theta_i[o] \leftarrow \Pi_\Delta(\theta_i[o] + \eta\, g_i[o])`, with
  :math:`\Pi_\Delta` the exact Euclidean projection onto the simplex (sort based);
* mirror ascent (KL geometry, exponentiated gradient):
  :math:`\theta_i[o] \propto \theta_i[o] \exp(\eta\, g_i[o])`, computed in log space.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .model import JointMDP

__all__ = [
    "Policy",
    "TrainResult",
    "project_simplex",
    "mirror_step",
    "pgd_step",
    "train",
    "SIMPLEX_TOL",
]

#: Tolerance for a policy row to count as on the simplex.
SIMPLEX_TOL = 1e-9


def project_simplex(v: np.ndarray) -> np.ndarray:
    r"""Euclidean projection of each row of ``v`` onto the probability simplex.

    Solves :math:`\min_x \|x - v\|_2` s.t. :math:`x \ge 0, \sum x = 1` row by row with the
    sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with ``u`` the
    row sorted descending, :math:`\rho = \max\{r : u_r - (\sum_{q \le r} u_q - 1)/r > 0\}`
    and :math:`\tau = (\sum_{q \le \rho} u_q - 1)/\rho`, the answer is
    :math:`\max(v - \tau, 0)`. Cost :math:`O(A \log A)` per row.

    Parameters
    ----------
    v : array_like, shape (..., A)

    Returns
    -------
    ndarray, same shape
    """
    v = np.asarray(v, dtype=float)
    if not np.all(np.isfinite(v)):
        raise ValueError("project_simplex: input has non-finite entries")
    A = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    r = np.arange(1, A + 1)
    cond = u - css / r > 0
    rho = A - np.argmax(cond[..., ::-1], axis=-1)  # last index where cond holds (1-based)
    tau = np.take_along_axis(css, (rho - 1)[..., None], axis=-1) / rho[..., None]
    return np.maximum(v - tau, 0.0)


def pgd_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> np.ndarray:
    r"""One projected ascent step on one agent's table: :math:`\Pi_\Delta(\theta + \eta g)`."""
    return project_simplex(theta + eta * grad)


def mirror_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> np.ndarray:
    r"""One mirror (exponentiated-gradient) ascent step on one agent's table.

    :math:`\theta[o] \propto \theta[o] \exp(\eta g[o])`, evaluated as
    :math:`\exp(\log\theta + \eta g - \max)` so nothing overflows; zero entries stay zero.
    """
    with np.errstate(divide="ignore"):
        z = np.log(theta) + eta * grad
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Policy:
    r"""A decentralized memoryless policy: ``theta[i]`` has shape ``(O_i, A_i)``.

    Use the constructors :meth:`uniform`, :meth:`random`, :meth:`deterministic` and
    :meth:`from_arrays`; they check shapes and that each row lies on the simplex.
    """

    __slots__ = ("theta", "free_entries")

    def __init__(self, theta: Sequence[np.ndarray], *, free_entries: bool = False):
        self.theta = [np.array(t, dtype=float) for t in theta]
        #: True for a point of the path-formula extension (rows need not be on the simplex).
        self.free_entries = bool(free_entries)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, mdp: JointMDP, arrays: Sequence, *, check_simplex: bool = True) -> Policy:
        """Policy from one ``(O_i, A_i)`` array per agent.

        With ``check_simplex=False`` the rows may be any finite numbers: the result is a
        point of the path-formula extension of SPEC §3 (used for finite differences).
        """
        if len(arrays) != mdp.n_agents:
            raise ValueError(f"arrays must hold one table per agent ({mdp.n_agents}); got {len(arrays)}")
        pol = cls(arrays, free_entries=not check_simplex)
        pol.check_compatible(mdp)
        return pol

    @classmethod
    def uniform(cls, mdp: JointMDP) -> Policy:
        """Every agent plays uniformly at random in every observation."""
        return cls([np.full((o, a), 1.0 / a) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])

    @classmethod
    def random(cls, mdp: JointMDP, seed=None, *, concentration: float = 1.0) -> Policy:
        """Rows drawn from a symmetric Dirichlet(``concentration``) with ``default_rng(seed)``."""
        if not concentration > 0:
            raise ValueError(f"concentration must be > 0; got {concentration!r}")
        rng = np.random.default_rng(seed)
        return cls(
            [rng.dirichlet(np.full(a, concentration), size=o) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)]
        )

    @classmethod
    def deterministic(cls, mdp: JointMDP, tables: Sequence[Sequence[int]]) -> Policy:
        """Deterministic policy: ``tables[i][o]`` is agent ``i``'s action in observation ``o``."""
        if len(tables) != mdp.n_agents:
            raise ValueError(f"tables must hold one table per agent ({mdp.n_agents}); got {len(tables)}")
        theta = []
        for i, tab in enumerate(tables):
            tab = np.asarray(tab)
            if tab.shape != (mdp.n_obs[i],):
                raise ValueError(f"tables[{i}] must have shape ({mdp.n_obs[i]},); got {tab.shape}")
            for o, a in enumerate(tab):
                if not 0 <= int(a) < mdp.n_actions[i] or a != int(a):
                    raise ValueError(
                        f"tables[{i}][{o}] = {a.item()!r} is not an action of agent {i} "
                        f"(0..{mdp.n_actions[i] - 1})"
                    )
            t = np.zeros((mdp.n_obs[i], mdp.n_actions[i]))
            t[np.arange(mdp.n_obs[i]), tab.astype(int)] = 1.0
            theta.append(t)
        return cls(theta)

    # --------------------------------------------------------------- checks
    def check_compatible(self, mdp: JointMDP) -> None:
        """Raise ``ValueError`` unless the tables fit ``mdp`` and (unless ``free_entries``)
        every row lies on the simplex."""
        if len(self.theta) != mdp.n_agents:
            raise ValueError(f"policy has {len(self.theta)} agents; the MDP has {mdp.n_agents}")
        for i, t in enumerate(self.theta):
            shape = (mdp.n_obs[i], mdp.n_actions[i])
            if t.shape != shape:
                raise ValueError(f"theta[{i}] must have shape {shape}; got {t.shape}")
            # whole-table tests first (cheap on every kernel call); the scans only name the entry
            if not np.isfinite(t).all():
                o, a = (int(x) for x in np.argwhere(~np.isfinite(t))[0])
                raise ValueError(f"theta[{i}][{o}, {a}] = {float(t[o, a])!r} is not finite")
            if not self.free_entries:
                if t.min() < -SIMPLEX_TOL:
                    o, a = (int(x) for x in np.argwhere(t < -SIMPLEX_TOL)[0])
                    raise ValueError(f"theta[{i}][{o}, {a}] = {float(t[o, a])!r} is negative")
                sums = t.sum(axis=1)
                off = np.abs(sums - 1.0) > SIMPLEX_TOL * max(1, t.shape[1])
                if off.any():
                    o = int(np.flatnonzero(off)[0])
                    raise ValueError(
                        f"row theta[{i}][{o}] sums to {float(sums[o])!r}; policy rows must lie on the simplex"
                    )

    # -------------------------------------------------------------- helpers
    @property
    def n_agents(self) -> int:
        return len(self.theta)

    def copy(self) -> Policy:
        return Policy([t.copy() for t in self.theta], free_entries=self.free_entries)

    def is_deterministic(self, atol: float = 1e-12) -> bool:
        return all(np.all((np.abs(t) < atol) | (np.abs(t - 1) < atol)) for t in self.theta)

    def greedy_tables(self) -> list[np.ndarray]:
        """Most probable action per observation, one int array per agent."""
        return [np.argmax(t, axis=1) for t in self.theta]

    def max_abs_diff(self, other: Policy) -> float:
        return max(float(np.max(np.abs(a - b))) for a, b in zip(self.theta, other.theta, strict=True))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{t.shape}" for t in self.theta)
        return f"Policy(tables: {shapes})"


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    policy : Policy
        Final policy.
    history_J_k : ndarray
        :math:`J_k` at the initial policy and after every update (length ``iterations + 1``).
    history_J : ndarray
        The ordinary value :math:`J = J_1` at the same iterates.
    iterations : int
        Updates performed.
    converged : bool
        Whether ``max |theta_{t+1} - theta_t| < tol`` stopped the run.
    seconds : float
        Wall time.
    k, method, step : int, str, float
        The settings used (``step`` is the effective eta after normalisation).
    """

    policy: Policy
    history_J_k: np.ndarray
    history_J: np.ndarray
    iterations: int
    converged: bool
    seconds: float
    k: int = 1
    method: str = "pgd"
    step: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def final_J(self) -> float:
        return float(self.history_J[-1])

    @property
    def final_J_k(self) -> float:
        return float(self.history_J_k[-1])


_STEPS = {"pgd": pgd_step, "mirror": mirror_step}


def train(
    mdp: JointMDP,
    k: int = 1,
    method: str = "pgd",
    step: float = 0.05,
    iters: int = 1000,
    tol: float = 1e-10,
    init: Policy | None = None,
    seed=None,
    callback: Callable[[int, Policy, float, float], object] | None = None,
    *,
    normalize_step: bool = False,
    max_path_steps: int | None = None,
) -> TrainResult:
    r"""Per-agent ascent on the k-step objective :math:`J_k` (SPEC §4).

    Every iteration computes :math:`(J_k, \nabla J_k)` exactly, then each agent updates
    its own rows: ``pgd`` (projected gradient ascent, :func:`pgd_step`) or ``mirror``
    (exponentiated gradient, :func:`mirror_step`).

    Parameters
    ----------
    mdp : JointMDP
    k : int
        Window length (1 = ordinary policy gradient).
    method : {"pgd", "mirror"}
    step : float
        Step size :math:`\eta`; with ``normalize_step=True`` it is multiplied by
        :math:`1 - \gamma`.
    iters : int
        Iteration cap.
    tol : float
        Stop when :math:`\max |\theta_{t+1} - \theta_t| < tol`.
    init : Policy, optional
        Start point; default ``Policy.random(mdp, seed)`` if ``seed`` is given, else uniform.
    seed : int or None
        Seed for the random start when ``init`` is None.
    callback : callable, optional
        ``callback(iteration, policy, J_k, J)`` after each evaluation; return ``False``
        to stop early.

    Returns
    -------
    TrainResult
    """
    from .kernel import value, value_and_grad

    if method not in _STEPS:
        raise ValueError(f"method must be one of {sorted(_STEPS)}; got method={method!r}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number; got step={step!r}")
    if isinstance(iters, bool) or int(iters) != iters or iters < 0:
        raise ValueError(f"iters must be a non-negative integer; got iters={iters!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0; got tol={tol!r}")
    eta = float(step) * ((1.0 - mdp.gamma) if normalize_step else 1.0)
    update = _STEPS[method]
    if init is None:
        policy = Policy.random(mdp, seed) if seed is not None else Policy.uniform(mdp)
    else:
        if init.free_entries:
            raise ValueError("init must lie on the simplex (it was built with check_simplex=False)")
        init.check_compatible(mdp)
        policy = init.copy()

    t0 = time.perf_counter()
    hist_k, hist_1 = [], []
    converged = False
    it = 0
    while True:
        J_k, grad = value_and_grad(mdp, policy, k, max_path_steps=max_path_steps)
        J_1 = J_k if k == 1 else value(mdp, policy, 1)
        hist_k.append(J_k)
        hist_1.append(J_1)
        if callback is not None and callback(it, policy, J_k, J_1) is False:
            break
        if converged or it >= iters:
            break
        new = Policy([update(t, g, eta) for t, g in zip(policy.theta, grad, strict=True)])
        converged = new.max_abs_diff(policy) < tol
        policy = new
        it += 1
    return TrainResult(
        policy=policy,
        history_J_k=np.asarray(hist_k),
        history_J=np.asarray(hist_1),
        iterations=it,
        converged=converged,
        seconds=time.perf_counter() - t0,
        k=k,
        method=method,
        step=eta,
    )
