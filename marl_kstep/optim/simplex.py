r"""Per-agent update rules on the probability simplex (SPEC §4).

Each agent updates and projects only its own rows:

* projected gradient ascent:
  :math:`\theta_i[o] \leftarrow \Pi_\Delta(\theta_i[o] + \eta\, g_i[o])`, with
  :math:`\Pi_\Delta` the exact Euclidean projection onto the simplex (sort based);
* mirror ascent (KL geometry, exponentiated gradient):
  :math:`\theta_i[o] \propto \theta_i[o] \exp(\eta\, g_i[o])`, computed in log space.

Both ignore a constant added to a row of ``g``, so a row-centred gradient estimate (SPEC §8)
gives the same step as the full gradient.

With a ``floor`` :math:`\epsilon > 0` (used with sampled gradients, which cannot see the partial
of an entry at 0) every entry stays :math:`\ge \epsilon`: ``pgd`` projects onto
:math:`\{x \ge \epsilon, \sum x = 1\}`, which is
:math:`\epsilon + c\,\Pi_\Delta((v - \epsilon)/c)` with :math:`c = 1 - A\epsilon`;
``mirror`` mixes the result with the uniform row, :math:`(1 - A\epsilon)\,x + \epsilon`.
"""

from __future__ import annotations

import numpy as np

from ..validation import check_real, real_array

__all__ = ["project_simplex", "pgd_step", "mirror_step", "STEPS"]


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
    v = real_array("v", v)
    if not np.all(np.isfinite(v)):
        bad = np.argwhere(~np.isfinite(v))[0]
        raise ValueError(f"project_simplex: v[{', '.join(str(int(x)) for x in bad)}] = {float(v[tuple(bad)])!r} "
                         "is not finite")
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ValueError(f"project_simplex: v must have at least one entry per row; got shape {v.shape}")
    # The projection commutes with adding a constant to a row, and with the row max at 0 the
    # threshold tau lies in [-1, 0): entries below -1 project to 0 whatever their size. Shifting
    # and clipping keeps every partial sum in [-A, 0], so entries of 1e308 neither overflow nor
    # swamp the 1 of the constraint.
    with np.errstate(over="ignore"):  # 1e308 - (-1e308) = -inf is clipped right away
        v = np.maximum(v - v.max(axis=-1, keepdims=True), -1.0)
    A = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    r = np.arange(1, A + 1)
    cond = u - css / r > 0
    rho = A - np.argmax(cond[..., ::-1], axis=-1)  # last index where cond holds (1-based)
    tau = np.take_along_axis(css, (rho - 1)[..., None], axis=-1) / rho[..., None]
    return np.maximum(v - tau, 0.0)


def _step_args(theta, grad, eta):
    theta, grad = real_array("theta", theta), real_array("grad", grad)
    if theta.ndim == 0 or theta.shape != grad.shape:
        raise ValueError(f"theta and grad must be tables of one shape; got {theta.shape} and {grad.shape}")
    for name, a in (("theta", theta), ("grad", grad)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} has a non-finite entry {float(a[~np.isfinite(a)][0])!r}")
    return theta, grad, check_real("eta", eta)


def _check_floor(floor, A: int) -> float:
    floor = check_real("floor", floor, minimum=0.0)
    if floor * A >= 1.0:
        raise ValueError(f"floor must be below 1/A = {1.0 / A!r} for rows of {A} actions; got floor={floor!r}")
    return floor


def pgd_step(theta: np.ndarray, grad: np.ndarray, eta: float, floor: float = 0.0) -> np.ndarray:
    r"""One projected ascent step on one agent's table: :math:`\Pi_\Delta(\theta + \eta g)`
    (onto the entries :math:`\ge` ``floor`` when ``floor > 0``, see the module docstring)."""
    theta, grad, eta = _step_args(theta, grad, eta)
    floor = _check_floor(floor, theta.shape[-1])
    with np.errstate(over="ignore", invalid="ignore"):
        z = theta + eta * grad
    if not np.all(np.isfinite(z)):
        raise ValueError(f"eta * grad overflows: eta={eta!r} is too large for this gradient")
    if floor == 0.0:
        return project_simplex(z)
    c = 1.0 - theta.shape[-1] * floor
    return floor + c * project_simplex((z - floor) / c)


def mirror_step(theta: np.ndarray, grad: np.ndarray, eta: float, floor: float = 0.0) -> np.ndarray:
    r"""One mirror (exponentiated-gradient) ascent step on one agent's table.

    :math:`\theta[o] \propto \theta[o] \exp(\eta g[o])`, evaluated as
    :math:`\exp(\log\theta + \eta g - \max)` so nothing overflows; zero entries stay zero.
    """
    theta, grad, eta = _step_args(theta, grad, eta)
    if np.any(theta < 0):
        raise ValueError(f"theta must be non-negative for a mirror step; got {float(theta.min())!r}")
    if theta.size and not np.all(theta.max(axis=-1) > 0):
        raise ValueError("theta has a row of zeros: a mirror step needs a positive entry in every row")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        z = np.log(theta) + eta * grad
    if not np.all(np.isfinite(z[theta > 0])):
        raise ValueError(f"eta * grad overflows: eta={eta!r} is too large for this gradient")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    x = e / e.sum(axis=-1, keepdims=True)
    floor = _check_floor(floor, theta.shape[-1])
    return x if floor == 0.0 else (1.0 - theta.shape[-1] * floor) * x + floor


#: Update rules by name.
STEPS = {"pgd": pgd_step, "mirror": mirror_step}
