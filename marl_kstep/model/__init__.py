"""The joint MDP (SPEC §1), its exact lumping, the .dpomdp loader (SPEC §6) and random problem families."""

from .dpomdp import DecPOMDP, dpomdp_names, dpomdp_path, load_dpomdp, parse_dpomdp
from .joint_mdp import JointMDP
from .lumping import Lumping, LumpingSkippedWarning, lump
from .random_models import random_model, random_model_args

__all__ = ["DecPOMDP", "JointMDP", "Lumping", "LumpingSkippedWarning", "dpomdp_names", "dpomdp_path", "load_dpomdp",
           "lump", "parse_dpomdp", "random_model", "random_model_args"]
