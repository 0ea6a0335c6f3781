"""Scenarios: models that compile exactly to a :class:`~marl_kstep.JointMDP`, and their
PettingZoo environments (dynamics and the adapter only; simulation is :mod:`marl_kstep.sampling`)."""

from .base import ScenarioModel, compile_model
from .pz import JointMDPModel, ModelParallelEnv, compile_env, mdp_parallel_env

__all__ = ["JointMDPModel", "ModelParallelEnv", "ScenarioModel", "compile_env", "compile_model", "mdp_parallel_env"]
