"""Optimisation: per-agent simplex updates (SPEC §4) and :func:`train` over any estimator."""

from .simplex import STEPS, mirror_step, pgd_step, project_simplex
from .train import SaddleWarning, TrainResult, train

__all__ = ["STEPS", "SaddleWarning", "TrainResult", "mirror_step", "pgd_step", "project_simplex", "train"]
