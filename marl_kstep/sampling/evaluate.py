r"""The value of a (kept) policy: :math:`J_k` by k-coupled rollouts, with a confidence interval.

:func:`evaluate` runs ``n`` episodes of k-coupled execution (SPEC §3, §8) of ``policy`` in
``target`` -- the episode loop of :mod:`marl_kstep.sampling.execution`, or its compiled and
batched twins in :class:`~marl_kstep.sampling.SampledKStep` -- and returns

* :math:`\hat J = \frac1n \sum_e G_e`, the mean of the discounted returns
  :math:`G_e = \sum_{t<H} \gamma^t r_t`;
* its standard error :math:`\mathrm{se} = s / \sqrt n` (:math:`s^2` the unbiased sample variance);
* the interval :math:`\hat J \pm (t_{n-1,\,(1+\text{level})/2}\,\mathrm{se} + b)`. The Student-t
  part covers the value :math:`J_k^H` of the episodes truncated at ``H`` steps with a coverage
  that tends to ``level`` as ``n`` grows (the returns are bounded: central limit theorem);
  :math:`b` = ``truncation_bound`` :math:`= \gamma^H \max|r| / (1-\gamma) \ge |J_k - J_k^H|`
  (known for a JointMDP; 0 otherwise, where the interval is for :math:`J_k^H`) widens it to an
  interval for :math:`J_k` itself. The default horizon makes :math:`\gamma^H \le 10^{-4}`, but a
  nearly deterministic policy has so small an ``se`` that only :math:`b` makes the interval
  cover :math:`J_k`;
* for a :class:`~marl_kstep.model.JointMDP`, the exact :math:`J_k` (:func:`marl_kstep.value`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..estimators.exact import value
from ..model import JointMDP
from ..policy import Policy
from ..validation import check_bool, check_gamma, check_int, check_k, check_real
from .sampled import SampledKStep

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    r"""The result of :func:`evaluate`.

    Attributes
    ----------
    J : float
        Mean discounted return :math:`\hat J` of the ``n`` episodes.
    se : float
        Its standard error :math:`s / \sqrt n`.
    ci : tuple of float
        :math:`\hat J \pm (t_{n-1,(1+\text{level})/2}\,\mathrm{se} + b)`, ``b`` the ``truncation_bound``
        (0 when it is unknown): an interval for :math:`J_k` (see the module docstring).
    level : float
        Its nominal coverage.
    n : int
        Episodes.
    k, gamma, horizon : int, float, int
        Window length, discount and steps per episode of the rollouts.
    exact : float or None
        The exact :math:`J_k` (a JointMDP target), else ``None``.
    truncation_bound : float or None
        :math:`\gamma^H \max|r| / (1-\gamma)`, the most truncating the episodes at ``horizon``
        can move :math:`J_k` (models only).
    path : str
        How the episodes ran: ``"fast"`` (a JointMDP, compiled), ``"batched"`` (a scenario model)
        or ``"env"`` (any PettingZoo environment).
    """

    J: float
    se: float
    ci: tuple[float, float]
    level: float
    n: int
    k: int
    gamma: float
    horizon: int
    exact: float | None = None
    truncation_bound: float | None = None
    path: str = "env"

    @property
    def z(self) -> float | None:
        r""":math:`(\hat J - J_k) / \mathrm{se}` when the exact value is known (and ``se > 0``), else ``None``."""
        if self.exact is None or self.se == 0.0:
            return None
        return (self.J - self.exact) / self.se

    def __str__(self) -> str:
        pct = f"{100 * self.level:g}%"
        trunc = "" if self.truncation_bound is None else f" + truncation {self.truncation_bound:.2g}"
        text = (f"J_{self.k} = {self.J:.6g} +- {self.se:.2g} (se); {pct} CI [{self.ci[0]:.6g}, {self.ci[1]:.6g}] "
                f"(Student t{trunc}; n = {self.n}, horizon {self.horizon}, gamma {self.gamma:g})")
        if self.exact is not None:
            text += f"; exact {self.exact:.6g}"
        return text


def evaluate(target, policy: Policy, *, k: int = 1, episodes: int = 1000, horizon: int | None = None,
             gamma: float | None = None, seed=0, level: float = 0.95, exact: bool | None = None) -> Evaluation:
    r""":math:`J_k` of ``policy`` in ``target`` by ``episodes`` k-coupled rollouts, with a confidence interval.

    Parameters
    ----------
    target : JointMDP, VectorisedModel or pettingzoo.ParallelEnv
        As for :class:`~marl_kstep.sampling.SampledKStep` (a built-in scenario's environment is
        simulated on its arrays; other environments step by step).
    policy : Policy
        One table per agent, rows on the simplex (e.g. :meth:`Policy.load`).
    k : int
        Window length of the execution (1: every agent draws afresh at every step).
    episodes : int
        Number of episodes ``n`` (at least 2, for a standard error).
    horizon : int, optional
        Steps per episode. Default: for a JointMDP or a built-in scenario (or its environment) the
        smallest ``H`` with :math:`\gamma^H \le 10^{-4}` (:func:`~marl_kstep.sampling.horizon_for`);
        for another environment its ``max_cycles``.
    gamma : float, optional
        Discount. Default the target's. For a JointMDP another value evaluates the same model at
        that discount (the exact value too); an environment without a model needs it.
    seed : int or None
        Seed of the episodes (default 0: the same call gives the same numbers).
    level : float
        Nominal coverage of the interval, in (0, 1).
    exact : bool, optional
        Also compute the exact :math:`J_k` (default: when ``target`` is a JointMDP; a model over
        the enumeration budget is then a ``ValueError`` -- pass ``exact=False``).

    Returns
    -------
    Evaluation
    """
    k = check_k(k)
    episodes = check_int("episodes", episodes, minimum=2)
    level = check_real("level", level, minimum=0.0, maximum=1.0)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got level={level!r}")
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a marl_kstep.Policy; got {type(policy).__name__}")
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    if isinstance(target, JointMDP) and gamma is not None:
        if check_gamma(gamma) != target.gamma:
            target = dataclasses.replace(target, gamma=gamma)
        gamma = None
    if exact is None:
        exact = isinstance(target, JointMDP)
    elif check_bool("exact", exact) and not isinstance(target, JointMDP):
        raise ValueError(f"exact=True needs a JointMDP target; got {type(target).__name__}")
    est = SampledKStep(target, k, gamma=gamma, episodes=episodes, horizon=horizon, seed=seed, baseline="none",
                       floor=0.0)
    sample = est.estimate(policy)
    bound = est.truncation_bound
    from scipy import stats  # here, not at import: scipy.stats costs about 0.5 s of every first import

    half = float(stats.t.ppf(0.5 + level / 2, episodes - 1)) * sample.J_k_se + (bound or 0.0)
    exact_value = float(value(target, policy, k)) if exact else None
    return Evaluation(J=float(sample.J_k), se=float(sample.J_k_se), ci=(sample.J_k - half, sample.J_k + half),
                      level=level, n=episodes, k=k, gamma=float(est.gamma), horizon=int(est.horizon),
                      exact=exact_value, truncation_bound=bound, path=est.path)
