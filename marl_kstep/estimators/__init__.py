"""Gradient estimators behind one protocol (:class:`Estimator`, :class:`Estimate`).

* :class:`ExactKStep` -- exact :math:`J_k` and gradient by path enumeration (SPEC §3), with
  the thin wrappers :func:`value`, :func:`value_vector`, :func:`value_and_grad`,
  :func:`values_and_grad`.

Private modules: ``_walk`` (numba path walks), ``_linalg`` (linear algebra), ``_fused``
(small problems in one call), ``_plan`` (lumping, budget, pattern, threads).
"""

from ._linalg import SingularSystemError
from .base import Estimate, Estimator
from .exact import (
    ExactKStep,
    count_path_steps,
    estimate_path_steps,
    value,
    value_and_grad,
    value_vector,
    values_and_grad,
)

__all__ = ["Estimate", "Estimator", "ExactKStep", "SingularSystemError", "count_path_steps",
           "estimate_path_steps", "value", "value_and_grad", "value_vector", "values_and_grad"]
