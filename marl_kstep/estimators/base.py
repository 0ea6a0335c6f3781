r"""The estimator protocol: anything that turns a policy into :math:`J_k` and its gradient.

An estimator validates and plans once (like :class:`~marl_kstep.estimators.ExactKStep`),
then answers many :meth:`Estimator.estimate` calls. :func:`marl_kstep.optim.train` only
talks to this protocol, so exact and sampled estimators are interchangeable.

An estimator exposes

* ``n_agents``, ``n_obs`` (tuple :math:`O_i`), ``n_actions`` (tuple :math:`A_i`), ``k``;
* ``estimate(policy) -> Estimate``;
* ``mdp``: the :class:`~marl_kstep.model.JointMDP` it is built on, or ``None`` (e.g. a
  PettingZoo environment), so that trainers can report exact values whenever a model exists;
* optionally ``exact`` (True when estimates carry no sampling error: then the escapes of
  :func:`~marl_kstep.optim.train` may probe saddles with it; default False), ``floor`` (the
  smallest entry training should keep, default 0) and ``gamma`` (the discount).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Estimate", "Estimator"]


@dataclass(frozen=True)
class Estimate:
    r"""One evaluation of an estimator at a policy.

    Attributes
    ----------
    J_k : float
        :math:`J_k(\theta)` (exact, or a sample mean).
    grad : list of ndarray
        ``grad[i]`` has shape ``(O_i, A_i)``: :math:`\partial J_k / \partial \theta_i[o, a]`
        (exact estimators), or an estimate of it up to a constant per row (sampled ones,
        SPEC §8: projected and mirror ascent ignore such constants).
    J_k_se : float or None
        Standard error of ``J_k`` (``None`` for exact estimators).
    grad_se : list of ndarray or None
        Standard errors of ``grad``, same shapes (``None`` for exact estimators).
    """

    J_k: float
    grad: list[np.ndarray]
    J_k_se: float | None = None
    grad_se: list[np.ndarray] | None = None

    @property
    def exact(self) -> bool:
        """True when the estimate carries no sampling error."""
        return self.J_k_se is None


@runtime_checkable
class Estimator(Protocol):
    """What :func:`marl_kstep.optim.train` needs (see the module docstring)."""

    k: int

    @property
    def n_agents(self) -> int: ...

    @property
    def n_obs(self) -> tuple[int, ...]: ...

    @property
    def n_actions(self) -> tuple[int, ...]: ...

    @property
    def mdp(self): ...

    def estimate(self, policy) -> Estimate: ...
