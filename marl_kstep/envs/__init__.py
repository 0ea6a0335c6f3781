"""Scenarios: models that compile exactly to a :class:`~marl_kstep.JointMDP`."""

from .base import DEFAULT_MAX_STATES, ScenarioModel, compile_model

__all__ = ["DEFAULT_MAX_STATES", "ScenarioModel", "compile_model"]
