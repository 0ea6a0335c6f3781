r"""The two-state aggregation trap (SPEC §5, §7.3): the aggregated chain of length 2.

One agent, states ``{0, 1}``, one observation for both (fully aggregated), actions
``L = 0`` and ``R = 1``, start in state 0:

* state 0: ``L`` stays in 0 with reward ``small_reward`` (c); ``R`` moves to 1 with reward 0;
* state 1: ``R`` stays in 1 with reward 1; ``L`` moves to 0 with reward 0.

Always-L is worth :math:`c/(1-\gamma)` (5.0 at c = 0.5, gamma = 0.9) and always-R
:math:`\gamma/(1-\gamma)` (9.0). The ordinary gradient at always-L prefers L (50 vs 40.5),
so k = 1 stays trapped; a window of k >= 3 escapes under projected ascent.
"""

from __future__ import annotations

from pettingzoo.utils.conversions import parallel_to_aec

from ..model import JointMDP
from .aggregated_chain import AggregatedChainModel, trap_start
from .base import compile_model
from .pz import ModelParallelEnv

__all__ = ["TwoStateModel", "parallel_env", "env", "raw_env", "build_mdp", "trap_start"]


class TwoStateModel(AggregatedChainModel):
    """The two-state trap: :class:`AggregatedChainModel` with ``length=2``."""

    def __init__(self, small_reward: float = 0.5, gamma: float = 0.9):
        super().__init__(length=2, small_reward=small_reward, gamma=gamma)


def parallel_env(small_reward: float = 0.5, gamma: float = 0.9, max_cycles: int = 200,
                 render_mode: str | None = None) -> ModelParallelEnv:
    """The two-state trap as a PettingZoo ParallelEnv."""
    return ModelParallelEnv(TwoStateModel(small_reward, gamma), "two_state_v0", max_cycles, render_mode)


def raw_env(**config):
    """AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env


def build_mdp(small_reward: float = 0.5, gamma: float = 0.9) -> JointMDP:
    """The compiled two-state trap (states 0 and 1 in that order)."""
    return compile_model(TwoStateModel(small_reward, gamma))[0]
