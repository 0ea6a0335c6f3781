r"""PettingZoo environments driven by a :class:`~marl_kstep.envs.base.ScenarioModel`,
their exact compilation, and k-coupled simulation.

The environment steps the same model that :func:`compile_env` enumerates, so the
observation an agent receives is exactly :math:`\phi_i(s)` of the compiled MDP, and the
reward is the model's team reward (undiscounted; ``gamma`` is only carried for
compilation and for :func:`rollout`).

:func:`rollout` runs **k-coupled execution** (SPEC §3) inside the environment: every agent
holds a :class:`KCoupledAgent` that, at times ``0, k, 2k, ...``, draws one action per
observation from its own table and plays that table for the rest of the window.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..model import JointMDP
from .base import DEFAULT_MAX_STATES, ScenarioModel, compile_model

__all__ = ["ModelParallelEnv", "KCoupledAgent", "compile_env", "rollout"]


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
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "name": "marl_kstep_model_v0", "is_parallelizable": True}

    def __init__(self, model: ScenarioModel, name: str, max_cycles: int = 200, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}; got render_mode={render_mode!r}"
            )
        if isinstance(max_cycles, bool) or int(max_cycles) != max_cycles or max_cycles < 1:
            raise ValueError(f"max_cycles must be an integer >= 1; got max_cycles={max_cycles!r}")
        self.metadata = dict(self.metadata, name=name)
        self.model = model
        self.max_cycles = int(max_cycles)
        self.render_mode = render_mode
        self.possible_agents = [f"agent_{i}" for i in range(model.n_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_spaces = {a: spaces.Discrete(model.n_obs[i]) for i, a in enumerate(self.possible_agents)}
        self._act_spaces = {a: spaces.Discrete(model.n_actions[i]) for i, a in enumerate(self.possible_agents)}
        self._init_states, init_p = zip(*model.initial_distribution(), strict=True)
        self._init_p = np.asarray(init_p, dtype=float)
        self.state = None
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
        return {a: np.array(self.model.observe(self.state, i), dtype=np.int64)
                for i, a in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
            for i, a in enumerate(self.possible_agents):
                self.action_space(a).seed(seed + 1 + i)
        self.agents = list(self.possible_agents)
        self.t = 0
        self.state = self._init_states[self.np_random.choice(len(self._init_states), p=self._init_p)]
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        if not self.agents:
            raise ValueError("step() called after the episode ended; call reset() first")
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
        r = float(self.model.reward(self.state, acts))
        succ = self.model.transitions(self.state, acts)
        if len(succ) == 1:
            self.state = succ[0][0]
        else:
            p = np.array([q for _, q in succ])
            self.state = succ[self.np_random.choice(len(succ), p=p / p.sum())][0]
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
        if self.state is None:
            raise ValueError("render() called before reset()")
        if self.render_mode == "ansi":
            return self.model.render_text(self.state)
        return self.model.render_rgb(self.state)

    def close(self):
        pass


def compile_env(env, *, max_states: int = DEFAULT_MAX_STATES) -> JointMDP:
    """The exact joint MDP of a scenario environment (parallel or AEC).

    Enumerates the joint states reachable from the initial distribution; refuses with a
    ``ValueError`` when the scenario's state count estimate exceeds ``max_states``.
    ``mdp.state_names[s]`` is ``str`` of the environment state with index ``s``.
    """
    model = getattr(getattr(env, "unwrapped", env), "model", None)
    if not isinstance(model, ScenarioModel):
        raise ValueError(
            f"compile_env needs a marl_kstep scenario environment (with a .model); got {type(env).__name__}"
        )
    return compile_model(model, max_states=max_states)[0]


class KCoupledAgent:
    r"""Agent-side k-coupled execution of one agent's table ``theta_i`` (SPEC §3).

    At steps ``0, k, 2k, ...`` it draws, independently for each observation ``o``, an
    action :math:`d(o) \sim \theta_i[o, \cdot]`; :meth:`act` returns :math:`d(o)` for the
    observation it is shown.
    """

    def __init__(self, theta: np.ndarray, k: int, rng: np.random.Generator):
        self.cdf = np.cumsum(np.asarray(theta, dtype=float), axis=1)
        self.cdf[:, -1] = 1.0
        self.k = int(k)
        self.rng = rng
        self.t = 0
        self.table = None

    def reset(self) -> None:
        self.t = 0

    def act(self, obs: int) -> int:
        if self.t % self.k == 0:
            u = self.rng.random(self.cdf.shape[0])
            self.table = (u[:, None] >= self.cdf).sum(axis=1)
        self.t += 1
        return int(self.table[int(obs)])


def rollout(env, policy, k: int, episodes: int, horizon: int | None = None, seed=None) -> np.ndarray:
    r"""Discounted returns :math:`\sum_{t<H} \gamma^t r_t` of k-coupled execution in ``env``.

    Parameters
    ----------
    env : ModelParallelEnv
        A scenario's parallel environment (``gamma`` is taken from its model).
    policy : Policy
        One table per agent, rows on the simplex.
    k : int
        Window length.
    episodes : int
    horizon : int, optional
        Steps per episode (default and maximum: ``env.max_cycles``); choose it with
        :math:`\gamma^H` small so truncation bias is negligible.
    seed : int, optional
        Seeds the environment (``reset(seed=...)``) and the agents' draws.

    Returns
    -------
    ndarray, shape (episodes,)
    """
    from ..kernel import _check_k

    k = _check_k(k)
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, ModelParallelEnv):
        raise ValueError(f"rollout needs a marl_kstep parallel scenario environment; got {type(env).__name__}")
    horizon = env.max_cycles if horizon is None else int(horizon)
    if not 1 <= horizon <= env.max_cycles:
        raise ValueError(f"horizon must lie in 1..max_cycles={env.max_cycles}; got horizon={horizon}")
    if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1; got episodes={episodes!r}")
    model = env.model
    if len(policy.theta) != model.n_agents:
        raise ValueError(f"policy has {len(policy.theta)} agents; the environment has {model.n_agents}")
    for i, t in enumerate(policy.theta):
        if t.shape != (model.n_obs[i], model.n_actions[i]):
            raise ValueError(f"theta[{i}] must have shape {(model.n_obs[i], model.n_actions[i])}; got {t.shape}")
    seeds = np.random.SeedSequence(seed)
    env_seed, agent_seed = seeds.spawn(2)
    agents = [KCoupledAgent(t, k, rng) for t, rng in
              zip(policy.theta, np.random.default_rng(agent_seed).spawn(model.n_agents), strict=True)]
    first = int(env_seed.generate_state(1)[0])
    discounts = model.gamma ** np.arange(horizon)
    returns = np.empty(int(episodes))
    for e in range(int(episodes)):
        obs, _ = env.reset(seed=first + e)
        for ag in agents:
            ag.reset()
        total = 0.0
        for t in range(horizon):
            actions = {a: agents[i].act(obs[a]) for i, a in enumerate(env.possible_agents)}
            obs, rew, _, _, _ = env.step(actions)
            total += discounts[t] * rew[env.possible_agents[0]]
            if not env.agents:
                break
        returns[e] = total
    return returns
