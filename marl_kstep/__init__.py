"""marl_kstep: exact k-step coupled policy gradients for cooperative multi-agent MDPs
with restricted (local-observation) policies.

See ``SPEC`` §1–§5 in the project docs for the definitions; the main entry points are
:class:`JointMDP`, :class:`Policy`, :func:`value`, :func:`value_and_grad`, :func:`train`
and :func:`best_deterministic`.
"""

from .dpomdp import load_dpomdp
from .envs.pz import compile_env, rollout
from .kernel import (
    DEFAULT_MAX_PATH_STEPS,
    estimate_path_steps,
    value,
    value_and_grad,
    value_vector,
)
from .model import JointMDP
from .policy import Policy, TrainResult, mirror_step, pgd_step, project_simplex, train
from .search import alternating_best_response, best_deterministic, best_response

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_PATH_STEPS",
    "JointMDP",
    "Policy",
    "TrainResult",
    "alternating_best_response",
    "best_deterministic",
    "best_response",
    "compile_env",
    "load_dpomdp",
    "rollout",
    "estimate_path_steps",
    "mirror_step",
    "pgd_step",
    "project_simplex",
    "train",
    "value",
    "value_and_grad",
    "value_vector",
]
