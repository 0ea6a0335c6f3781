r"""k-coupled execution in a PettingZoo ``ParallelEnv``: the one episode loop (SPEC §3, §8).

At times :math:`t = 0, k, 2k, \dots` every agent forgets its drawn table; at time
:math:`t` agent :math:`i` with observation :math:`o` plays the action it drew for slot
:math:`(i, o)` in this window, or draws :math:`a \sim \theta_i[o, \cdot]` now and keeps it
until the window ends (a *first-visit draw*, recorded with its time for the sampled gradient).
The team reward of a step is the mean of the agents' rewards unless the caller says otherwise.

:func:`k_coupled_episode` is the only episode loop of the package: :func:`rollout` and the
figures both run it. It needs Discrete action spaces and observations that are integer ids
(Discrete / MultiDiscrete observation spaces, or a per-agent ``encoder``, see
:mod:`marl_kstep.sampling.encoders`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..policy import Policy
from ..validation import check_gamma, check_int, check_k
from .encoders import space_encoder

__all__ = ["KCoupledAgent", "Episode", "env_spaces", "k_coupled_episode", "rollout"]


def draw_cdf(theta: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums with ``inf`` from the last action of positive probability on, so that
    inverting a uniform draw (``searchsorted(cdf[o], u, side="right")``) never picks an action of
    probability 0, rounding included."""
    theta = np.asarray(theta, dtype=float)
    cdf = np.cumsum(theta, axis=1)
    last = theta.shape[1] - 1 - np.argmax(theta[:, ::-1] > 0, axis=1)
    cdf[np.arange(theta.shape[0]), last] = np.inf
    return cdf


class KCoupledAgent:
    r"""Agent-side k-coupled execution of one agent's table ``theta_i`` (SPEC §3, §8).

    At steps ``0, k, 2k, ...`` the agent forgets its drawn table. At step ``t`` with
    observation ``o`` it plays the action it drew for ``o`` in this window, or draws
    :math:`a \sim \theta_i[o, \cdot]` now (a *first-visit draw*), keeps it until the window
    ends, and records ``(t, o, a)`` in :attr:`draws`. An action of probability 0 is never drawn.
    """

    def __init__(self, theta: np.ndarray, k: int, rng: np.random.Generator):
        self.theta = np.asarray(theta, dtype=float)
        self.cdf = draw_cdf(self.theta)
        self.k = int(k)
        self.rng = rng
        self.table = np.full(self.theta.shape[0], -1, dtype=np.int64)
        self.window = -1
        self.draws: list[tuple[int, int, int]] = []

    def reset(self) -> None:
        """Start an episode: forget the table and the recorded draws."""
        self.window = -1
        self.draws = []

    def act(self, obs: int, t: int) -> int:
        """The action at step ``t`` for observation id ``obs``."""
        w = t // self.k
        if w != self.window:
            self.window = w
            self.table[:] = -1
        a = int(self.table[obs])
        if a < 0:
            a = int(np.searchsorted(self.cdf[obs], self.rng.random(), side="right"))
            self.table[obs] = a
            self.draws.append((t, obs, a))
        return a


@dataclass
class Episode:
    """One k-coupled episode.

    Attributes
    ----------
    rewards : ndarray
        Team reward of every step.
    states : list or None
        ``env.unwrapped.model_state`` at the start and after every step, if asked for.
    draws : list of list of (t, o, a)
        ``draws[i]``: agent ``i``'s first-visit draws (SPEC §8).
    """

    rewards: np.ndarray
    states: list | None = None
    draws: list | None = None

    def discounted_return(self, gamma: float) -> float:
        return float(self.rewards @ gamma ** np.arange(self.rewards.size))


def _team_reward(how):
    if callable(how):
        return how
    if how == "mean":
        return lambda rew: float(np.mean([rew[a] for a in rew])) if rew else 0.0
    if how == "sum":
        return lambda rew: float(np.sum([rew[a] for a in rew])) if rew else 0.0
    raise ValueError(f"team_reward must be 'mean', 'sum' or a callable; got team_reward={how!r}")


def _encoded(i, name, enc, raw, n_obs):
    o = enc(raw)
    try:
        oi = int(o)
    except (TypeError, ValueError):
        raise ValueError(f"the observation of agent {i} ({name!r}) must encode to an integer id; got {o!r} "
                         "(give an encoder for this observation space)") from None
    if oi != o or not (0 <= oi < (n_obs[i] if n_obs is not None else oi + 1)):
        raise ValueError(f"the observation of agent {i} ({name!r}) encodes to {o!r}, outside 0..{n_obs[i] - 1}")
    return oi


def k_coupled_episode(env, agents: Sequence[KCoupledAgent], *, horizon: int, reset_seed=None,
                      encoders: Sequence[Callable] | None = None, record_states: bool = False,
                      team_reward="mean", n_obs: Sequence[int] | None = None) -> Episode:
    """Run one episode of k-coupled execution (see the module docstring).

    Parameters
    ----------
    env : pettingzoo.ParallelEnv
    agents : sequence of KCoupledAgent
        One per ``env.possible_agents`` entry, in that order.
    horizon : int
        At most this many steps (the episode also ends when the env ends it).
    reset_seed : int, optional
        Passed to ``env.reset(seed=...)``.
    encoders : sequence of callables, optional
        ``encoders[i](raw_observation) -> 0..O_i-1``; default ``int(raw_observation)``.
    record_states : bool
        Keep ``env.unwrapped.model_state`` at the start and after every step.
    team_reward : {"mean", "sum"} or callable
        The team reward of a step from the env's reward dict (default: the mean, SPEC §8).
    n_obs : sequence of int, optional
        :math:`O_i`, to check the encoded observations (a ValueError names a bad one).
    """
    names = list(env.possible_agents)
    encode = encoders or [int] * len(names)
    team = _team_reward(team_reward)
    obs, _ = env.reset(seed=reset_seed)
    for ag in agents:
        ag.reset()
    base = getattr(env, "unwrapped", env)
    states = [base.model_state] if record_states else None
    rewards = []
    for t in range(horizon):
        actions = {a: agents[i].act(_encoded(i, a, encode[i], obs[a], n_obs), t)
                   for i, a in enumerate(names) if a in obs}
        obs, rew, term, trunc, _ = env.step(actions)
        rewards.append(team(rew))
        if record_states:
            states.append(base.model_state)
        if not env.agents or all(term.get(a, False) or trunc.get(a, False) for a in rew):
            break
    return Episode(np.asarray(rewards, dtype=float), states, [ag.draws for ag in agents])


def env_spaces(env, encoders=None):
    """``(encoders, n_obs, n_actions)`` of a ParallelEnv: Discrete actions from 0, observations
    encoded by ``encoders[i]`` (callables with an attribute ``n``) or, by default, the exact
    encoder of Discrete / MultiDiscrete spaces. ValueErrors name the agent and its space."""
    names = list(env.possible_agents)
    n_act = []
    for i, a in enumerate(names):
        sp = env.action_space(a)
        if not hasattr(sp, "n") or getattr(sp, "start", 0) != 0:
            raise ValueError(f"the action space of agent {i} ({a!r}) must be Discrete(n) starting at 0; got {sp}")
        n_act.append(int(sp.n))
    if encoders is None:
        encoders = []
        for i, a in enumerate(names):
            try:
                encoders.append(space_encoder(env.observation_space(a)))
            except ValueError as err:
                raise ValueError(f"encoders: agent {i} ({a!r}) has observation space {env.observation_space(a)}; "
                                 f"give encoders[{i}] (e.g. BoxDiscretiser or ObservationIndexer)") from err
    else:
        if not isinstance(encoders, Sequence) or len(encoders) != len(names):
            raise ValueError(f"encoders must be a sequence of {len(names)} callables (one per agent)")
        for i, e in enumerate(encoders):
            if not callable(e) or not isinstance(getattr(e, "n", None), int | np.integer) or e.n < 1:
                raise ValueError(f"encoders[{i}] must be callable with an integer attribute n >= 1 "
                                 f"(the number of observation ids); got {e!r}")
    return list(encoders), tuple(int(e.n) for e in encoders), tuple(n_act)


def _check_policy_fits(policy, n_obs, n_act) -> None:
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a marl_kstep.Policy; got {type(policy).__name__}")
    if len(policy.theta) != len(n_act):
        raise ValueError(f"policy has {len(policy.theta)} agents; the environment has {len(n_act)}")
    if getattr(policy, "free_entries", False):
        raise ValueError("policy must lie on the simplex to be executed (it was built with check_simplex=False)")
    policy.flat(SimpleNamespace(n_agents=len(n_act), n_obs=tuple(n_obs), n_actions=tuple(n_act)))


def rollout(env, policy, k: int, episodes: int, horizon: int | None = None, seed=None, *,
            gamma: float | None = None, encoders: Sequence[Callable] | None = None,
            team_reward="mean") -> np.ndarray:
    r"""Discounted returns :math:`\sum_{t<H} \gamma^t r_t` of k-coupled execution in ``env``.

    Parameters
    ----------
    env : pettingzoo.ParallelEnv
        Discrete action and observation spaces (a marl_kstep scenario, or any such env).
    policy : Policy
        One table per agent, rows on the simplex.
    k : int
        Window length.
    episodes : int
    horizon : int, optional
        Steps per episode (default, and maximum, the env's ``max_cycles`` when it has one);
        choose it with :math:`\gamma^H` small so truncation bias is negligible.
    seed : int or numpy.random.SeedSequence, optional
        Seeds the environment (``reset(seed=...)``) and the agents' draws.
    gamma : float, optional
        Discount; default the scenario model's ``gamma`` (required for other envs).
    encoders : sequence of callables, optional
        Observation encoders (see :mod:`marl_kstep.sampling.encoders`); default the exact
        encoders of Discrete / MultiDiscrete observation spaces.
    team_reward : {"mean", "sum"} or callable
        The team reward of a step (default the mean of the agents' rewards).

    Returns
    -------
    ndarray, shape (episodes,)
    """
    k = check_k(k)
    episodes = check_int("episodes", episodes, minimum=1)
    base = getattr(env, "unwrapped", env)
    if not hasattr(base, "possible_agents") or not callable(getattr(base, "step", None)):
        raise ValueError(f"rollout needs a PettingZoo ParallelEnv; got {type(env).__name__}")
    model = getattr(base, "model", None)
    if gamma is None:
        if model is None or not hasattr(model, "gamma"):
            raise ValueError("gamma is required for an environment that does not carry a model with a discount")
        gamma = model.gamma
    gamma = check_gamma(gamma)
    max_cycles = getattr(base, "max_cycles", None)
    if horizon is None:
        if max_cycles is None:
            raise ValueError("horizon is required for an environment without max_cycles")
        horizon = max_cycles
    horizon = check_int("horizon", horizon, minimum=1, maximum=max_cycles)
    encoders, n_obs, n_act = env_spaces(env, encoders)
    _check_policy_fits(policy, n_obs, n_act)
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(None if seed is None else check_int("seed", seed, minimum=0))
    env_seed, agent_seed = seed.spawn(2)
    agents = [KCoupledAgent(t, k, rng) for t, rng in
              zip(policy.theta, np.random.default_rng(agent_seed).spawn(len(policy.theta)), strict=True)]
    first = int(env_seed.generate_state(1)[0])
    returns = np.empty(episodes)
    for e in range(episodes):
        returns[e] = k_coupled_episode(env, agents, horizon=horizon, reset_seed=(first + e) % (2**31),
                                       encoders=encoders, team_reward=team_reward,
                                       n_obs=n_obs).discounted_return(gamma)
    return returns
