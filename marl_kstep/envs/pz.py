r"""PettingZoo environments driven by a :class:`~marl_kstep.envs.base.ScenarioModel`,
and their exact compilation.

The environment steps the same model that :func:`compile_env` enumerates, so the
observation an agent receives is exactly :math:`\phi_i(s)` of the compiled MDP, and the
reward is the model's team reward (undiscounted; ``gamma`` is only carried for
compilation and for :func:`marl_kstep.sampling.rollout`).

k-coupled execution in these (and any other) environments is
:mod:`marl_kstep.sampling`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..model import JointMDP
from ..validation import check_int
from .base import ScenarioModel, checked_observation, checked_reward, checked_transitions, compile_model
from .vectorised import VectorisedModel

__all__ = ["ModelParallelEnv", "JointMDPModel", "compile_env", "mdp_parallel_env"]


class ModelParallelEnv(ParallelEnv):
    """A ``pettingzoo.ParallelEnv`` that simulates a :class:`ScenarioModel`.

    Parameters
    ----------
    model : ScenarioModel
    name : str
        Versioned environment name for ``metadata["name"]``.
    max_cycles : int
        Episodes are truncated after this many steps (the model itself never terminates).
    render_mode : {None, "ansi", "rgb_array"}
        ``"rgb_array"`` only for a model that draws itself (overrides ``render_cells``); the
        modes this env offers are in ``metadata["render_modes"]``.

    Attributes
    ----------
    model_state
        The model's current state (``None`` before :meth:`reset`); :meth:`state` is PettingZoo's
        global state, the same state as an array.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "name": "marl_kstep_model_v0", "is_parallelizable": True}

    def __init__(self, model: ScenarioModel, name: str, max_cycles: int = 200, render_mode: str | None = None):
        draws = type(model).render_cells is not ScenarioModel.render_cells
        modes = [m for m in self.metadata["render_modes"] if m != "rgb_array" or draws]
        if render_mode is not None and (not isinstance(render_mode, str) or render_mode not in modes):
            why = "" if draws else f" ({type(model).__name__} draws no pictures: no rgb_array)"
            raise ValueError(f"render_mode must be None or one of {modes}{why}; got render_mode={render_mode!r}")
        self.max_cycles = check_int("max_cycles", max_cycles, minimum=1)
        self.metadata = dict(self.metadata, name=name, render_modes=modes)
        self.model = model
        self.render_mode = render_mode
        self.possible_agents = [f"agent_{i}" for i in range(model.n_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_spaces = {a: spaces.Discrete(model.n_obs[i]) for i, a in enumerate(self.possible_agents)}
        self._act_spaces = {a: spaces.Discrete(model.n_actions[i]) for i, a in enumerate(self.possible_agents)}
        self.model_state = None
        self.t = 0
        self.np_random = np.random.default_rng()

    def observation_space(self, agent):
        """``Discrete(O_i)``; the same object on every call."""
        return self._obs_spaces[agent]

    def action_space(self, agent):
        """``Discrete(A_i)``; the same object on every call."""
        return self._act_spaces[agent]

    def _observe(self):
        # 0-d int64 arrays: inside Discrete(O_i) and NumPy arrays, as the PettingZoo API test asks
        return {a: np.array(checked_observation(self.model, self.model_state, i), dtype=np.int64)
                for i, a in enumerate(self.possible_agents)}

    def state(self) -> np.ndarray:
        """PettingZoo's global state: the model state's code (array-protocol models) or
        ``np.asarray(model_state)``."""
        if self.model_state is None:
            raise ValueError("state() called before reset()")
        if isinstance(self.model, VectorisedModel):
            return np.array(self.model.encode(self.model_state), dtype=np.int64)
        return np.asarray(self.model_state)

    def reset(self, seed=None, options=None):
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
            self.np_random = np.random.default_rng(seed)
            for i, a in enumerate(self.possible_agents):
                self.action_space(a).seed(seed + 1 + i)
        self.agents = list(self.possible_agents)
        self.t = 0
        self.model_state = self.model.sample_initial(self.np_random)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        if not self.agents:
            raise ValueError("step() called after the episode ended; call reset() first")
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict from agent name to action; got {type(actions).__name__}")
        unknown = [a for a in actions if a not in self._index]
        if unknown:
            raise ValueError(f"actions names unknown agent(s) {unknown}; the agents are {self.possible_agents}")
        acts = []
        for i, a in enumerate(self.possible_agents):
            if a not in actions:
                raise ValueError(f"actions is missing an action for {a!r}")
            act = actions[a]
            n = self.model.n_actions[i]
            if isinstance(act, bool) or not isinstance(act, int | np.integer) or not 0 <= act < n:
                raise ValueError(f"actions[{a!r}] = {act!r} is not an action of {a} (0..{n - 1})")
            acts.append(int(act))
        acts = tuple(acts)
        r = checked_reward(self.model, self.model_state, acts)
        succ = checked_transitions(self.model, self.model_state, acts)
        if len(succ) == 1:
            self.model_state = succ[0][0]
        else:
            p = np.array([q for _, q in succ])
            self.model_state = succ[self.np_random.choice(len(succ), p=p / p.sum())][0]
        self.t += 1
        trunc = self.t >= self.max_cycles
        obs = self._observe()
        rewards = {a: r for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: trunc for a in self.agents}
        infos = {a: {} for a in self.agents}
        if trunc:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self):
        if self.render_mode is None:
            return None
        if self.model_state is None:
            raise ValueError("render() called before reset()")
        if self.render_mode == "ansi":
            return self.model.render_text(self.model_state)
        return self.model.render_rgb(self.model_state)

    def close(self):
        pass


class JointMDPModel(ScenarioModel):
    """A compiled :class:`~marl_kstep.model.JointMDP` seen as a :class:`ScenarioModel`: states are
    the indices ``0..N-1``, so :class:`ModelParallelEnv` can simulate any model (a .dpomdp file,
    a compiled scenario) and the sampled estimator can run its environment path on it."""

    def __init__(self, mdp: JointMDP):
        if not isinstance(mdp, JointMDP):
            raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
        self.mdp = mdp
        self.n_actions = tuple(mdp.n_actions)
        self.n_obs = tuple(mdp.n_obs)
        self.gamma = mdp.gamma
        self._strides = mdp.action_strides

    def initial_distribution(self):
        return [(int(s), float(self.mdp.mu[s])) for s in np.flatnonzero(self.mdp.mu)]

    def sample_initial(self, rng):
        return int(rng.choice(self.mdp.n_states, p=self.mdp.mu))

    def _row(self, state, actions):
        return int(state) * self.mdp.n_joint_actions + int(np.dot(self._strides, actions))

    def transitions(self, state, actions):
        q = self._row(state, actions)
        lo, hi = self.mdp.indptr[q], self.mdp.indptr[q + 1]
        return [(int(s), float(p)) for s, p in zip(self.mdp.indices[lo:hi], self.mdp.probs[lo:hi], strict=True)]

    def reward(self, state, actions):
        return float(self.mdp.rewards[int(state), int(np.dot(self._strides, actions))])

    def observe(self, state, agent):
        return int(self.mdp.obs[agent][int(state)])

    def estimate_states(self):
        return self.mdp.n_states

    def state_name(self, state):
        names = self.mdp.state_names
        return names[int(state)] if names is not None else str(state)


def mdp_parallel_env(mdp: JointMDP, max_cycles: int = 200, render_mode: str | None = None) -> ModelParallelEnv:
    """A PettingZoo ``ParallelEnv`` that simulates ``mdp`` (states are indices; team reward to every agent)."""
    return ModelParallelEnv(JointMDPModel(mdp), "joint_mdp_v0", max_cycles=max_cycles, render_mode=render_mode)


def compile_env(env, *, max_states: int | None = None) -> JointMDP:
    """The exact joint MDP of a scenario environment (parallel or AEC).

    Enumerates the joint states reachable from the initial distribution (through the array
    protocol when the scenario has it, see :func:`~marl_kstep.envs.base.compile_model`);
    refuses with a ``ValueError`` giving the estimate when the build would need more memory
    than ``Settings.max_model_bytes`` allows, or when an explicit ``max_states`` is below the
    scenario's state count estimate.
    ``mdp.state_names[s]`` is ``str`` of the environment state with index ``s``.
    """
    model = getattr(getattr(env, "unwrapped", env), "model", None)
    if not isinstance(model, ScenarioModel):
        raise ValueError(
            f"compile_env needs a marl_kstep scenario environment (with a .model); got {type(env).__name__}"
        )
    return compile_model(model, max_states=max_states)[0]
