r"""The one typed configuration of a training run: :class:`TrainOptions`.

Every setting of :func:`~marl_kstep.optim.train` that is not the problem, the start or a seed
lives here, with the only defaults of the library; run specs
(:class:`~marl_kstep.experiments.RunSpec`), the command line and the Dec-POMDP table build one.
A :class:`TrainOptions` is frozen and checked once, on construction: numbers are normalised
(NumPy integers become ``int``; ``step=1`` and ``step=1.0`` are the same option), so equal
settings compare, print and hash equal.

.. math::

    \theta_i \leftarrow \mathrm{update}(\theta_i, \nabla_{\theta_i} J_k, \eta), \qquad
    \eta = \text{step} \cdot (1 - \gamma \text{ if normalize\_step else } 0)

stopping after ``iters`` updates or when :math:`\max |\theta_{t+1} - \theta_t| <` ``tol``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..validation import check_bool, check_int, check_keys, check_positive
from .simplex import STEPS

__all__ = ["TrainOptions"]


@dataclass(frozen=True)
class TrainOptions:
    r"""Settings of :func:`~marl_kstep.optim.train` (frozen, validated once).

    Attributes
    ----------
    method : {"pgd", "mirror"}
        Projected gradient ascent or mirror (exponentiated-gradient) ascent (SPEC §4).
    step : float
        Step size :math:`\eta` (> 0); with ``normalize_step`` it is multiplied by :math:`1 - \gamma`.
    iters : int
        Iteration cap (>= 0).
    tol : float
        Stop when :math:`\max |\theta_{t+1} - \theta_t| <` ``tol`` (>= 0).
    floor : float or None
        Keep every entry >= ``floor``; ``None``: the estimator's own ``floor`` (0.01 for
        :class:`~marl_kstep.SampledKStep`, else 0).
    normalize_step : bool
        Multiply ``step`` by :math:`1 - \gamma`.
    exact_alongside : bool or None
        Record exact values of every iterate when the estimator has a model (``None``: up to
        :data:`~marl_kstep.optim.train.EXACT_ALONGSIDE_MAX_STATES` joint states).
    escape : bool
        Certify where ascent stops and jump out of coordination traps (SPEC §9).
    escape_order : int
        Largest number of slots an escape changes together (>= 1).
    max_escapes : int
        Cap on the jumps of one run (>= 0).
    """

    method: str = "pgd"
    step: float = 0.05
    iters: int = 1000
    tol: float = 1e-10
    floor: float | None = None
    normalize_step: bool = False
    exact_alongside: bool | None = None
    escape: bool = False
    escape_order: int = 2
    max_escapes: int = 50

    def __post_init__(self):
        set_ = object.__setattr__
        if not isinstance(self.method, str) or self.method not in STEPS:
            raise ValueError(f"method must be one of {sorted(STEPS)}; got method={self.method!r}")
        set_(self, "step", float(check_positive("step", self.step)))
        set_(self, "iters", int(check_int("iters", self.iters, minimum=0)))
        set_(self, "tol", float(check_positive("tol", self.tol, allow_zero=True)))
        if self.floor is not None:
            set_(self, "floor", float(check_positive("floor", self.floor, allow_zero=True)))
        set_(self, "normalize_step", bool(check_bool("normalize_step", self.normalize_step)))
        if self.exact_alongside is not None:
            set_(self, "exact_alongside", bool(check_bool("exact_alongside", self.exact_alongside)))
        set_(self, "escape", bool(check_bool("escape", self.escape)))
        set_(self, "escape_order", int(check_int("escape_order", self.escape_order, minimum=1)))
        set_(self, "max_escapes", int(check_int("max_escapes", self.max_escapes, minimum=0)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainOptions:
        """Options from a mapping; an unknown or misspelt key is a ``ValueError`` naming it and the allowed ones."""
        d = check_keys("options", {} if d is None else d, cls.names())
        return cls(**d)

    def replace(self, **changes) -> TrainOptions:
        """A copy with ``changes`` (checked like :meth:`from_dict`)."""
        check_keys("options", changes, self.names())
        return dataclasses.replace(self, **changes)

    def to_dict(self, *, changed_only: bool = False) -> dict:
        """Plain JSON data; ``changed_only``: only the options that differ from the defaults."""
        d = dataclasses.asdict(self)
        if changed_only:
            default = TrainOptions()
            d = {key: v for key, v in d.items() if v != getattr(default, key)}
        return d
