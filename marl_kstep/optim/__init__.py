"""Optimisation: per-agent simplex updates (SPEC §4), the run's :class:`TrainOptions`, and :func:`train` over any
estimator."""

from .options import TrainOptions
from .simplex import STEPS, mirror_step, pgd_step, project_simplex
from .train import SaddleWarning, TrainResult, train

__all__ = ["STEPS", "SaddleWarning", "TrainOptions", "TrainResult", "mirror_step", "pgd_step", "project_simplex",
           "train"]
