"""marl_kstep: exact k-step coupled policy gradients for cooperative multi-agent MDPs
with restricted (local-observation) policies.

See ``SPEC`` §1–§5 in the project docs for the definitions; the main entry points are
:class:`JointMDP`, :class:`Policy`, the estimators (:class:`ExactKStep`, with the wrappers
:func:`value` and :func:`value_and_grad`), :func:`train` and :func:`best_deterministic`.
The module map and the direction of imports are in ``docs/architecture.md``; nothing inside
the package imports this file.
"""

from . import interrupt  # noqa: F401, I001  (first: a Ctrl-C while a command loads exits cleanly)
from . import _jitcache  # noqa: F401  (drops numba cache files older than the source)
from ._version import __version__
from .bounds import best_blind, fast_informed_bound
from .certificates import Certificate, Deviation, certify, slot_visitation
from .envs import compile_env
from .estimators import (
    Estimate,
    Estimator,
    ExactKStep,
    SingularSystemError,
    count_path_steps,
    estimate_path_steps,
    value,
    value_and_grad,
    value_vector,
    values_and_grad,
)
from .model import (
    JointMDP,
    Lumping,
    LumpingSkippedWarning,
    dpomdp_names,
    dpomdp_path,
    load_dpomdp,
    lump,
    random_model,
    random_model_args,
)
from .model.memory import MemoryMDP, memory_sizes
from .optim import SaddleWarning, TrainOptions, TrainResult, mirror_step, pgd_step, project_simplex, train
from .policy import Policy
from .sampling import BoxDiscretiser, NonCooperativeRewardWarning, ObservationIndexer, SampledKStep, rollout
from .sampling.evaluate import evaluate as evaluate_policy
from .sampling.memory_env import MemoryParallelEnv, with_memory
from .search import alternating_best_response, best_deterministic, best_response
from .settings import Settings, configure
from .threads import thread_report  # sets OMP_WAIT_POLICY=passive unless the user set it (threads.py)

__all__ = [
    "best_blind",
    "fast_informed_bound",
    "Certificate",
    "Deviation",
    "Estimate",
    "Estimator",
    "ExactKStep",
    "JointMDP",
    "Lumping",
    "LumpingSkippedWarning",
    "MemoryMDP",
    "MemoryParallelEnv",
    "BoxDiscretiser",
    "ObservationIndexer",
    "Policy",
    "SaddleWarning",
    "NonCooperativeRewardWarning",
    "SampledKStep",
    "Settings",
    "thread_report",
    "SingularSystemError",
    "TrainOptions",
    "TrainResult",
    "__version__",
    "alternating_best_response",
    "best_deterministic",
    "best_response",
    "certify",
    "compile_env",
    "configure",
    "count_path_steps",
    "estimate_path_steps",
    "evaluate_policy",
    "dpomdp_names",
    "dpomdp_path",
    "load_dpomdp",
    "lump",
    "memory_sizes",
    "mirror_step",
    "pgd_step",
    "project_simplex",
    "random_model",
    "random_model_args",
    "rollout",
    "slot_visitation",
    "train",
    "value",
    "value_and_grad",
    "value_vector",
    "values_and_grad",
    "with_memory",
]
