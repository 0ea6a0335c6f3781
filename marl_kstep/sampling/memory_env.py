r"""Finite-state controllers in any PettingZoo environment: the node-carrying wrapper (SPEC §10).

:class:`MemoryParallelEnv` wraps a ``ParallelEnv`` whose agents have Discrete actions and
Discrete observations (or an encoder per agent, as in :mod:`marl_kstep.sampling.encoders`) and
carries each agent's memory node :math:`q_i` (0 after ``reset``):

* agent :math:`i` observes :math:`q_i O_i + o_i`, with :math:`o_i` its encoded observation
  (``Discrete(Q_i O_i)``);
* it acts with :math:`c_i = a_i Q_i + q_i'` (``Discrete(A_i Q_i)``): the wrapped env receives
  :math:`a_i`, and the agent's node becomes :math:`q_i'` for the next step.

This is the encoding of :func:`marl_kstep.model.memory.with_memory`, so a policy of the
augmented :class:`~marl_kstep.model.memory.MemoryMDP` runs unchanged in the wrapper around the
model's environment, and :class:`~marl_kstep.SampledKStep` on the wrapper (env path) estimates
the same :math:`J_k` and gradient as the exact estimator on the augmented model.

:func:`with_memory` is the one entry point: a model gets the augmented model, an environment
this wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..model import JointMDP
from ..model.memory import MemoryMDP, check_nodes
from ..model.memory import with_memory as _model_with_memory
from .execution import env_spaces

__all__ = ["MemoryParallelEnv", "with_memory"]


def _is_parallel_env(x) -> bool:
    return all(callable(getattr(x, name, None)) for name in ("reset", "step", "observation_space", "action_space")) \
        and hasattr(x, "possible_agents")


class MemoryParallelEnv(ParallelEnv):
    r"""A ``ParallelEnv`` whose agents carry memory nodes (see the module docstring).

    Parameters
    ----------
    env : pettingzoo.ParallelEnv
        Discrete action spaces starting at 0; Discrete / MultiDiscrete observations, or ``encoders``.
    nodes : int or sequence of int
        :math:`Q_i` per agent (an int: the same for every agent).
    encoders : sequence of callables, optional
        ``encoders[i](raw) -> 0..O_i-1`` with an integer attribute ``n`` (:math:`O_i`).

    Attributes
    ----------
    nodes : tuple of int
    base_n_obs, base_n_actions : tuple of int
        The wrapped env's :math:`O_i` and :math:`A_i`.
    node : dict
        The current node of every agent.
    """

    def __init__(self, env, nodes=2, *, encoders: Sequence[Callable] | None = None):
        if not _is_parallel_env(env):
            raise ValueError(f"env must be a PettingZoo ParallelEnv; got {type(env).__name__}")
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self._encoders, self.base_n_obs, self.base_n_actions = env_spaces(env, encoders)
        self.nodes = check_nodes(nodes, len(self.possible_agents))
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_spaces = {a: spaces.Discrete(q * o) for a, q, o in
                            zip(self.possible_agents, self.nodes, self.base_n_obs, strict=True)}
        self._act_spaces = {a: spaces.Discrete(n * q) for a, n, q in
                            zip(self.possible_agents, self.base_n_actions, self.nodes, strict=True)}
        meta = dict(getattr(env, "metadata", None) or {})
        meta["name"] = f"memory_{meta.get('name', type(env).__name__)}"
        self.metadata = meta
        self.render_mode = getattr(env, "render_mode", None)
        base = getattr(env, "unwrapped", env)
        if getattr(base, "max_cycles", None) is not None:
            self.max_cycles = base.max_cycles
        self.agents: list[str] = []
        self.node: dict[str, int] = {}

    def observation_space(self, agent):
        """``Discrete(Q_i O_i)``; the same object on every call."""
        return self._obs_spaces[agent]

    def action_space(self, agent):
        """``Discrete(A_i Q_i)``; the same object on every call."""
        return self._act_spaces[agent]

    @property
    def state(self):
        """``(state of the wrapped env, nodes in agent order)``."""
        inner = getattr(getattr(self.env, "unwrapped", self.env), "state", None)
        return inner, tuple(self.node.get(a, 0) for a in self.possible_agents)

    def _observe(self, raw: dict) -> dict:
        out = {}
        for a, r in raw.items():
            i = self._index[a]
            o = self._encoders[i](r)
            o_int = int(o)
            if o_int != o or not 0 <= o_int < self.base_n_obs[i]:
                raise ValueError(f"the observation of agent {i} ({a!r}) encodes to {o!r}, "
                                 f"outside 0..{self.base_n_obs[i] - 1}")
            out[a] = np.array(self.node[a] * self.base_n_obs[i] + o_int, dtype=np.int64)
        return out

    def reset(self, seed=None, options=None):
        raw, infos = self.env.reset(seed=seed, options=options)
        if seed is not None:
            for i, a in enumerate(self.possible_agents):
                self._act_spaces[a].seed(seed + 1 + i)
        self.agents = list(self.env.agents)
        self.node = {a: 0 for a in self.possible_agents}
        return self._observe(raw), infos

    def step(self, actions):
        inner, written = {}, {}
        for a, c in actions.items():
            if a not in self._index:
                raise ValueError(f"actions: {a!r} is not an agent of this environment")
            i = self._index[a]
            c_int = int(c)
            if c_int != c or not 0 <= c_int < self.base_n_actions[i] * self.nodes[i]:
                raise ValueError(f"actions[{a!r}] = {c!r} is not a choice of agent {i} "
                                 f"(0..{self.base_n_actions[i] * self.nodes[i] - 1} = action * Q_i + next node)")
            inner[a], written[a] = divmod(c_int, self.nodes[i])
        raw, rew, term, trunc, infos = self.env.step(inner)
        self.node.update(written)
        self.agents = list(self.env.agents)
        return self._observe(raw), rew, term, trunc, infos

    def render(self):
        return self.env.render()

    def close(self):
        return self.env.close()


def with_memory(target, nodes=2, *, encoders: Sequence[Callable] | None = None) -> MemoryMDP | MemoryParallelEnv:
    r"""Agents with ``nodes`` memory nodes (finite-state controllers, SPEC §10).

    Parameters
    ----------
    target : JointMDP or pettingzoo.ParallelEnv
        A model (a ``.dpomdp`` model from :func:`~marl_kstep.load_dpomdp` too) or an environment.
    nodes : int or sequence of int
        :math:`Q_i` per agent (an int: the same for every agent); 1 is the memoryless class.
    encoders : sequence of callables, optional
        For an environment: the observation encoders (see :class:`MemoryParallelEnv`).

    Returns
    -------
    MemoryMDP or MemoryParallelEnv
        For a model, the augmented joint MDP (:func:`marl_kstep.model.memory.with_memory`: sizes
        checked before it is built); for an environment, :class:`MemoryParallelEnv`. Either way a
        policy is a memoryless policy of the result, with observation :math:`q_i O_i + o_i` and
        action :math:`a_i Q_i + q_i'`.
    """
    if isinstance(target, JointMDP):
        if encoders is not None:
            raise ValueError("encoders apply to an environment, not to a JointMDP")
        return _model_with_memory(target, nodes)
    if _is_parallel_env(target):
        return MemoryParallelEnv(target, nodes, encoders=encoders)
    raise ValueError(f"target must be a JointMDP or a PettingZoo ParallelEnv; got {type(target).__name__}")
