r"""The aggregated chain (SPEC §7.3): a state-aggregation trap of length L.

One agent on states ``0..L-1``, all with the same observation; actions ``L = 0`` (left)
and ``R = 1`` (right); the episode starts in state 0.

* ``L`` moves to ``max(s - 1, 0)``, ``R`` to ``min(s + 1, L - 1)``;
* taking ``L`` in state 0 pays ``small_reward`` (c); taking ``R`` in state ``L-1`` pays 1;
  everything else pays 0.

Always-L is worth :math:`c/(1-\gamma)`, always-R :math:`\gamma^{L-1}/(1-\gamma)` (the
optimum when :math:`\gamma^{L-1} > c`). Length 2 is the two-state trap of SPEC §5. Only a
window long enough to carry "right" to the far end sees the big reward, so the smallest
escaping k grows with L. Measured with projected ascent (eta 0.05) from
``theta[R] = 0.05``, c = 0.3, gamma = 0.95 (``scenarios/aggregated_chain.py``):

======  ==================  ========================
length  smallest escaping k J* (always R)
======  ==================  ========================
2       2                   19.0
3       4                   18.05
4       6                   17.1475
5       7                   16.290125
6       9                   15.47561875
======  ==================  ========================
"""

from __future__ import annotations

import numpy as np
from pettingzoo.utils.conversions import parallel_to_aec

from ..model import JointMDP
from ..policy import Policy
from ..validation import check_gamma, check_int, check_real
from .base import COLORS, ScenarioModel, agent_color, compile_model
from .pz import ModelParallelEnv
from .vectorised import VectorisedModel

__all__ = ["AggregatedChainModel", "parallel_env", "env", "raw_env", "build_mdp", "trap_start"]


class AggregatedChainModel(ScenarioModel, VectorisedModel):
    """Model of the aggregated chain; states are the integers ``0..length-1`` (also their codes)."""

    def __init__(self, length: int = 4, small_reward: float = 0.3, gamma: float = 0.95):
        self.length = check_int("length", length, minimum=2, maximum=2**62)
        self.small_reward = check_real("small_reward", small_reward, minimum=0.0)
        self.gamma = check_gamma(gamma)
        self.n_actions = (2,)
        self.n_obs = (1,)

    def initial_distribution(self):
        return [(0, 1.0)]

    def transitions(self, state, actions):
        return [(min(state + 1, self.length - 1) if actions[0] == 1 else max(state - 1, 0), 1.0)]

    def reward(self, state, actions):
        if state == 0 and actions[0] == 0:
            return self.small_reward
        if state == self.length - 1 and actions[0] == 1:
            return 1.0
        return 0.0

    def observe(self, state, agent):
        return 0

    def estimate_states(self):
        return self.length

    # ------------------------------------------------------------ array protocol
    def code_space(self):
        return self.length

    def outcomes(self):
        return 1

    def encode(self, state):
        return int(state)

    def decode(self, code):
        return int(code)

    def initial_codes(self):
        return np.zeros(1, np.int64), np.ones(1)

    def step_arrays(self, codes, joint):
        s = np.asarray(codes, np.int64)
        right = np.asarray(joint, np.int64) == 1
        succ = np.where(right, np.minimum(s + 1, self.length - 1), np.maximum(s - 1, 0))
        rewards = np.where((s == 0) & ~right, self.small_reward, np.where((s == self.length - 1) & right, 1.0, 0.0))
        return succ[:, None], np.ones((s.size, 1)), rewards

    def observe_arrays(self, codes):
        return np.zeros((1, np.size(codes)), np.int64)

    def action_names(self):
        return (("L", "R"),)

    def obs_names(self):
        return (("*",),)

    def render_text(self, state):
        return "".join("A" if s == state else ("G" if s == self.length - 1 else ".") for s in range(self.length))

    def render_cells(self, state):
        cells = np.tile(np.array(COLORS["floor"], np.uint8), (1, self.length, 1))
        cells[0, 0] = COLORS["decoy"]
        cells[0, -1] = COLORS["goal"]
        cells[0, state] = agent_color(0)
        return cells


def parallel_env(length: int = 4, small_reward: float = 0.3, gamma: float = 0.95, max_cycles: int = 200,
                 render_mode: str | None = None) -> ModelParallelEnv:
    """Aggregated chain as a PettingZoo ParallelEnv (see the module docstring)."""
    return ModelParallelEnv(AggregatedChainModel(length, small_reward, gamma), "aggregated_chain_v0",
                            max_cycles, render_mode)


def raw_env(**config):
    """AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env


def trap_start(mdp: JointMDP, p0: float = 0.05) -> Policy:
    """Near always-L: ``theta[R] = p0`` (SPEC §5 uses 0.05)."""
    return Policy.from_arrays(mdp, [np.array([[1.0 - p0, p0]])])


def build_mdp(**config) -> JointMDP:
    """The compiled chain (state s has index s)."""
    return compile_model(AggregatedChainModel(**config))[0]
