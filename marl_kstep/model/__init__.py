"""The joint MDP (SPEC §1), its exact lumping, and the .dpomdp loader (SPEC §6)."""

from .dpomdp import DecPOMDP, dpomdp_names, dpomdp_path, load_dpomdp, parse_dpomdp
from .joint_mdp import JointMDP
from .lumping import Lumping, LumpingSkippedWarning, lump

__all__ = ["DecPOMDP", "JointMDP", "Lumping", "LumpingSkippedWarning", "dpomdp_names", "dpomdp_path", "load_dpomdp",
           "lump", "parse_dpomdp"]
