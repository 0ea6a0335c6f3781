r"""The two-state aggregation trap (SPEC §5, §7.3).

One agent, states ``{0, 1}``, one observation for both (fully aggregated), actions
``L = 0`` and ``R = 1``, start in state 0:

* state 0: ``L`` stays in 0 with reward ``small_reward`` (c); ``R`` moves to 1 with reward 0;
* state 1: ``R`` stays in 1 with reward 1; ``L`` moves to 0 with reward 0.

Always-L is worth :math:`c/(1-\gamma)` (5.0 at c = 0.5, gamma = 0.9) and always-R
:math:`\gamma/(1-\gamma)` (9.0). The ordinary gradient at always-L prefers L (50 vs 40.5),
so k = 1 stays trapped; a window of k >= 3 escapes under projected ascent.
"""

from __future__ import annotations

from ..model import JointMDP
from .base import ScenarioModel, compile_model

__all__ = ["TwoStateModel", "build_mdp"]


class TwoStateModel(ScenarioModel):
    """Model of the two-state trap; ``small_reward`` is c, the reward of staying in 0."""

    def __init__(self, small_reward: float = 0.5, gamma: float = 0.9):
        small_reward = float(small_reward)
        if not 0.0 <= small_reward:
            raise ValueError(f"small_reward must be >= 0; got small_reward={small_reward!r}")
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must lie in [0, 1); got gamma={gamma!r}")
        self.small_reward = small_reward
        self.gamma = float(gamma)
        self.n_actions = (2,)
        self.n_obs = (1,)

    def initial_distribution(self):
        return [(0, 1.0)]

    def transitions(self, state, actions):
        return [(1 if actions[0] == 1 else 0, 1.0)]

    def reward(self, state, actions):
        a = actions[0]
        if state == 0:
            return self.small_reward if a == 0 else 0.0
        return 1.0 if a == 1 else 0.0

    def observe(self, state, agent):
        return 0

    def estimate_states(self):
        return 2

    def action_names(self):
        return (("L", "R"),)

    def obs_names(self):
        return (("*",),)


def build_mdp(small_reward: float = 0.5, gamma: float = 0.9) -> JointMDP:
    """The compiled two-state trap (states 0 and 1 in that order)."""
    return compile_model(TwoStateModel(small_reward, gamma))[0]
