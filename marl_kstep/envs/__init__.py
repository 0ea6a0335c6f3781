"""Scenarios: models that compile exactly to a :class:`~marl_kstep.JointMDP`, and their
PettingZoo environments (dynamics and the adapter only; simulation is :mod:`marl_kstep.sampling`)."""

from .base import ScenarioModel, compile_model
from .pz import ModelParallelEnv, compile_env

__all__ = ["ModelParallelEnv", "ScenarioModel", "compile_env", "compile_model"]
