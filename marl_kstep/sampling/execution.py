r"""k-coupled execution in a PettingZoo ``ParallelEnv``: the one episode loop (SPEC §3, §8).

At times :math:`t = 0, k, 2k, \dots` every agent forgets its drawn table; at time
:math:`t` agent :math:`i` with observation :math:`o` plays the action it drew for slot
:math:`(i, o)` in this window, or draws :math:`a \sim \theta_i[o, \cdot]` now and keeps it
until the window ends (a *first-visit draw*, recorded with its time for the sampled gradient).
The team reward of a step is the mean of the agents' rewards unless the caller says otherwise.

Every output of a user's env is checked as it arrives, before it is used (``ValueError``
naming the call, the step, the agent and the value): ``reset()`` returns
``(observations, infos)`` and leaves at least one agent in ``env.agents``; every live agent has
an observation inside its declared space (or that its encoder accepts); ``step()`` returns the
5-tuple ``(observations, rewards, terminations, truncations, infos)`` of dicts; rewards are
finite real numbers, one for every agent that acted and for no other. A step whose agents
received different rewards, when no ``team_reward`` was chosen (or ``"mean"`` / ``"sum"`` was
and it is 0), raises :class:`NonCooperativeRewardWarning` (the mean of a zero-sum game's rewards
is 0 whatever the agents do). An AEC env is converted with PettingZoo's ``aec_to_parallel`` (:func:`as_parallel_env`).
One env is never stepped by two episodes at a time (another thread's episode in progress is
refused, not interleaved).

:func:`k_coupled_episode` is the only episode loop of the package: :func:`rollout` and the
figures both run it. It needs Discrete action spaces and observations that are integer ids
(Discrete / MultiDiscrete observation spaces, or a per-agent ``encoder``, see
:mod:`marl_kstep.sampling.encoders`).
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..policy import Policy
from ..settings import current
from ..validation import check_gamma, check_int, check_k
from .encoders import space_encoder

__all__ = ["KCoupledAgent", "Episode", "NonCooperativeRewardWarning", "as_parallel_env", "env_spaces",
           "k_coupled_episode", "rollout"]


class NonCooperativeRewardWarning(UserWarning):
    """The agents of an env received different rewards in one step and either no ``team_reward``
    was chosen (the default team reward, their mean, is then not what any agent maximises), or
    ``"mean"`` / ``"sum"`` was and it is 0 (a zero-sum game: the team reward is 0 whatever the
    agents do). Raised once per estimator or ``rollout`` call; a callable ``team_reward`` silences it."""


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


def check_sample_steps(episodes: int, horizon: int) -> None:
    """Refuse ``episodes * horizon`` above ``Settings.max_sample_steps`` (read at call time)."""
    budget = current().max_sample_steps
    if episodes * horizon > budget:
        raise ValueError(f"episodes * horizon = {episodes} * {horizon} = {episodes * horizon:.3g} simulated steps per "
                         f"call exceed Settings.max_sample_steps = {budget:.3g}; lower episodes or horizon (or raise "
                         "the budget with marl_kstep.configure(max_sample_steps=...))")


def check_team_reward(how):
    """``None`` (the mean, with a warning when agents' rewards differ), ``"mean"``, ``"sum"`` or a callable."""
    if how is None or callable(how) or (isinstance(how, str) and how in ("mean", "sum")):
        return how
    raise ValueError(f"team_reward must be 'mean', 'sum' or a callable; got team_reward={how!r}")


def check_cooperative(env, team_reward) -> None:
    """Refuse an env that declares ``cooperative = False`` (e.g. a zero-sum OpenSpiel game,
    :class:`~marl_kstep.envs.openspiel.SpielParallelEnv`) unless a ``team_reward`` was chosen."""
    base = getattr(env, "unwrapped", env)
    if team_reward is None and getattr(base, "cooperative", True) is False:
        why = getattr(base, "utility", "not common-payoff")
        raise ValueError(f"env {type(base).__name__} is not cooperative ({why}): its agents do not share one "
                         "return; choose team_reward= ('mean', 'sum' or a callable of the reward dict)")


def as_parallel_env(env):
    """``env`` as a PettingZoo ParallelEnv: an AEC env (e.g. ``rps_v2.env()``) is converted with
    ``pettingzoo.utils.conversions.aec_to_parallel`` if its metadata says it is parallelizable,
    and refused otherwise; anything else is returned unchanged."""
    try:
        from pettingzoo import AECEnv
        from pettingzoo.utils.conversions import aec_to_parallel
    except ImportError:  # pragma: no cover - pettingzoo is a dependency
        return env
    if not isinstance(env, AECEnv):
        return env
    if not getattr(env, "metadata", {}).get("is_parallelizable", False):
        raise ValueError(f"env {env} is an AEC (turn-by-turn) env whose metadata does not declare "
                         "'is_parallelizable': True, so it cannot be converted to a ParallelEnv (every agent acting "
                         "at every step); give a ParallelEnv (e.g. the module's parallel_env())")
    return aec_to_parallel(env)


_IN_USE: set[int] = set()
_IN_USE_LOCK = threading.Lock()


@contextmanager
def _exclusive(env):
    """Refuse a second episode on ``env`` (its unwrapped base) while one is in progress: envs
    keep their state in themselves, so two interleaved episodes corrupt each other."""
    key = id(getattr(env, "unwrapped", env))
    with _IN_USE_LOCK:
        if key in _IN_USE:
            raise ValueError(f"env {type(env).__name__} is already running an episode (another thread, or a "
                             "call from inside its own step): one env object cannot be stepped concurrently; "
                             "give every thread its own env")
        _IN_USE.add(key)
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            _IN_USE.discard(key)


def _where(t: int) -> str:
    return "env.reset()" if t < 0 else f"env.step() at step {t}"


def _encoded(i, name, enc, raw, n, t):
    """Agent ``i``'s encoded observation, checked to be an integer id in ``0..n-1``."""
    try:
        o = enc(raw)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"{_where(t)}: the observation of agent {i} ({name!r}) is refused: {err}") from None
    if type(o) is int and 0 <= o < n:
        return o
    if isinstance(o, bool | np.bool_) or not isinstance(o, numbers.Integral):
        raise ValueError(f"{_where(t)}: the observation of agent {i} ({name!r}), {raw!r}, must encode to an "
                         f"integer id; its encoder gave {o!r} (give an encoder for this observation space)")
    if not 0 <= int(o) < n:
        raise ValueError(f"{_where(t)}: the observation of agent {i} ({name!r}), {raw!r}, encodes to {o!r}, "
                         f"outside 0..{n - 1}")
    return int(o)


def _reward(v, a, t) -> float:
    """A reward as a float: a finite real number (bools, strings, None, NaN, inf refused)."""
    if type(v) is not float and (isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real)):
        raise ValueError(f"{_where(t)}: the reward of agent {a!r} must be a real number; got {v!r}")
    try:
        f = float(v)
    except OverflowError:  # an int beyond float64
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{_where(t)}: the reward of agent {a!r} must be finite; got {v!r}")
    return f


def _flag(v, what, a, t) -> bool:
    """A termination / truncation flag: a bool (NumPy's too) or the integer 0 or 1."""
    if isinstance(v, bool | np.bool_) or (isinstance(v, numbers.Integral) and v in (0, 1)):
        return bool(v)
    raise ValueError(f"{_where(t)}: the {what} of agent {a!r} must be True or False; got {v!r}")


class Checked:
    """One env's outputs checked against its agents and spaces (module docstring); build one per
    run of episodes and pass it to :func:`checked_episode`."""

    def __init__(self, env, encoders, n_obs, team_reward):
        self.env = env
        names = getattr(env, "possible_agents", None)
        if not isinstance(names, list | tuple) or not names:
            raise ValueError(f"env.possible_agents must be a non-empty list of agents; got {names!r}")
        self.names = list(names)
        self.index = {a: i for i, a in enumerate(self.names)}
        if encoders is None:
            encoders, n_obs, _ = env_spaces(env)
        self.encode = list(encoders)
        self.n_obs = [int(getattr(e, "n", 2**62)) for e in self.encode] if n_obs is None else list(n_obs)
        self.team = check_team_reward(team_reward)
        self.differed = False

    def live(self, obs, t):
        """``[(i, name)]`` of ``env.agents``, each with an observation in ``obs`` (a dict)."""
        if not isinstance(obs, dict):
            raise ValueError(f"{_where(t)}: observations must be a dict keyed by agent; got {type(obs).__name__}")
        agents = getattr(self.env, "agents", None)
        if not isinstance(agents, list | tuple):
            raise ValueError(f"{_where(t)}: env.agents must be a list of agents; got {agents!r}")
        if not agents:
            raise ValueError(f"{_where(t)}: env.agents is empty; the env has no agent to act")
        index = self.index
        live = []
        for a in agents:
            try:
                i = index.get(a)
            except TypeError:  # unhashable
                i = None
            if i is None:
                raise ValueError(f"{_where(t)}: env.agents holds {a!r}, which is not in possible_agents {self.names}")
            if a not in obs:
                raise ValueError(f"{_where(t)}: agent {i} ({a!r}) is live (in env.agents) but has no observation; "
                                 f"observations hold {list(obs)}")
            live.append((i, a))
        if len(obs) > len(live):
            extra = [a for a in obs if a not in index]
            if extra:
                raise ValueError(f"{_where(t)}: an observation for {extra[0]!r}, which is not in possible_agents "
                                 f"{self.names}")
        return live

    def reset(self, seed):
        out = self.env.reset(seed=seed)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ValueError("env.reset() must return (observations, infos) (PettingZoo >= 1.22); got "
                             f"{type(out).__name__}{'' if not isinstance(out, tuple) else f' of length {len(out)}'}")
        return out[0], self.live(out[0], -1)

    def step(self, actions, t):
        """``(observations, team reward, done)`` of one checked ``env.step(actions)``."""
        out = self.env.step(actions)
        if not isinstance(out, tuple) or len(out) != 5:
            raise ValueError(f"{_where(t)} must return (observations, rewards, terminations, truncations, infos); "
                             f"got {type(out).__name__}{f' of length {len(out)}' if isinstance(out, tuple) else ''}")
        obs, rew, term, trunc, _ = out
        for what, d in (("observations", obs), ("rewards", rew), ("terminations", term), ("truncations", trunc)):
            if not isinstance(d, dict):
                raise ValueError(f"{_where(t)}: {what} must be a dict keyed by agent; got {d!r}")
        if len(rew) != len(actions) or any(a not in actions for a in rew):
            self._reward_keys(rew, actions, t)
        total, lo, hi = 0.0, math.inf, -math.inf
        for a, v in rew.items():
            f = _reward(v, a, t)
            total += f
            lo, hi = min(lo, f), max(hi, f)
        team = self.team
        if team is None or team == "mean":
            r = total / len(rew)
        elif team == "sum":
            r = total
        else:
            r = team(rew)
            if isinstance(r, bool | np.bool_) or not isinstance(r, numbers.Real) or not math.isfinite(float(r)):
                raise ValueError(f"{_where(t)}: team_reward({rew!r}) must return a finite real number; got {r!r}")
            r = float(r)
        if lo != hi and not self.differed and (team is None or (total == 0.0 and not callable(team))):
            self.differed = True
            why = ("no team_reward was chosen; the team reward is their mean. Pass team_reward='mean' (to keep it), "
                   "'sum' or a callable" if team is None else
                   f"their {team} is 0 (a zero-sum game?): the team reward ignores what the agents do. Pass a "
                   "callable team_reward to score the agents' rewards another way")
            warnings.warn(f"{_where(t)}: the agents received different rewards ({dict(rew)}) and {why}",
                          NonCooperativeRewardWarning, stacklevel=2)
        if not math.isfinite(r):
            raise ValueError(f"{_where(t)}: the team reward of rewards {dict(rew)} overflows float64 ({r})")
        ended = True
        for a in actions:
            if a not in term or a not in trunc:
                raise ValueError(f"{_where(t)}: terminations and truncations must hold every agent that acted; "
                                 f"{a!r} is missing")
            te, tr = term[a], trunc[a]
            if te.__class__ is not bool or tr.__class__ is not bool:
                te, tr = _flag(te, "termination", a, t), _flag(tr, "truncation", a, t)
            ended = ended and (te or tr)
        done = ended or not getattr(self.env, "agents", None)
        return obs, r, done

    def _reward_keys(self, rew, actions, t):
        for a in rew:
            if a not in self.index:
                raise ValueError(f"{_where(t)}: a reward for {a!r}, which is not in possible_agents {self.names}")
            if a not in actions:
                raise ValueError(f"{_where(t)}: a reward for agent {a!r}, which did not act in this step")
        missing = [a for a in actions if a not in rew]
        raise ValueError(f"{_where(t)}: no reward for agent {missing[0]!r}, which acted in this step "
                         f"(rewards hold {list(rew)})")


def k_coupled_episode(env, agents: Sequence[KCoupledAgent], *, horizon: int, reset_seed=None,
                      encoders: Sequence[Callable] | None = None, record_states: bool = False,
                      team_reward=None, n_obs: Sequence[int] | None = None) -> Episode:
    """Run one episode of k-coupled execution (see the module docstring), checking every output
    of ``env`` as it arrives (module docstring; a ValueError names the call, step, agent and value).

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
        ``encoders[i](raw_observation) -> 0..O_i-1``; default the exact encoders of the env's
        Discrete / MultiDiscrete observation spaces (:func:`env_spaces`).
    record_states : bool
        Keep ``env.unwrapped.model_state`` at the start and after every step.
    team_reward : {"mean", "sum"} or callable, optional
        The team reward of a step from the env's reward dict. Default (``None``): the mean
        (SPEC §8), with a :class:`NonCooperativeRewardWarning` when the agents' rewards differ.
    n_obs : sequence of int, optional
        :math:`O_i`, to check the encoded observations (default the encoders' ``n``).
    """
    return checked_episode(Checked(env, encoders, n_obs, team_reward), agents, horizon=horizon,
                           reset_seed=reset_seed, record_states=record_states)


def checked_episode(chk: Checked, agents, *, horizon: int, reset_seed=None, record_states: bool = False) -> Episode:
    """:func:`k_coupled_episode` with its checker built once by the caller (one per run of many
    episodes: :class:`NonCooperativeRewardWarning` is then raised once per run)."""
    env, encode = chk.env, chk.encode
    if len(agents) != len(chk.names):
        raise ValueError(f"agents must hold one KCoupledAgent per possible agent ({len(chk.names)}); got {len(agents)}")
    n_obs = [min(n, ag.theta.shape[0]) for n, ag in zip(chk.n_obs, agents, strict=True)]
    with _exclusive(env):
        obs, live = chk.reset(reset_seed)
        for ag in agents:
            ag.reset()
        base = getattr(env, "unwrapped", env)
        states = [base.model_state] if record_states else None
        rewards = []
        for t in range(horizon):
            actions = {a: agents[i].act(_encoded(i, a, encode[i], obs[a], n_obs[i], t - 1), t) for i, a in live}
            obs, r, done = chk.step(actions, t)
            rewards.append(r)
            if record_states:
                states.append(base.model_state)
            if done:
                break
            live = chk.live(obs, t)
    return Episode(np.asarray(rewards, dtype=float), states, [ag.draws for ag in agents])


def env_spaces(env, encoders=None):
    """``(encoders, n_obs, n_actions)`` of a ParallelEnv: Discrete actions from 0, observations
    encoded by ``encoders[i]`` (callables with an attribute ``n``) or, by default, the exact
    encoder of Discrete / MultiDiscrete spaces. ValueErrors name the agent and its space."""
    names = env.possible_agents
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"env.possible_agents must be a non-empty list of agents; got {names!r}")
    names = list(names)
    try:
        if len(set(names)) != len(names):
            raise ValueError(f"env.possible_agents has a repeated agent: {names!r}")
    except TypeError:
        raise ValueError(f"env.possible_agents must hold hashable agent names; got {names!r}") from None
    for method in ("reset", "step", "observation_space", "action_space"):
        if not callable(getattr(env, method, None)):
            raise TypeError(f"env.{method} must be callable (a PettingZoo ParallelEnv); got "
                            f"{getattr(env, method, None)!r}")
    n_act = []
    for i, a in enumerate(names):
        sp = env.action_space(a)
        n = getattr(sp, "n", None)
        if (not isinstance(n, numbers.Integral) or isinstance(n, bool | np.bool_) or n < 1
                or getattr(sp, "start", 0) != 0):
            raise ValueError(f"the action space of agent {i} ({a!r}) must be Discrete(n) starting at 0; got {sp}")
        n_act.append(int(n))
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
            team_reward=None) -> np.ndarray:
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
    team_reward : {"mean", "sum"} or callable, optional
        The team reward of a step (default the mean of the agents' rewards, with a
        :class:`NonCooperativeRewardWarning` when they differ).

    Returns
    -------
    ndarray, shape (episodes,)
    """
    k = check_k(k)
    episodes = check_int("episodes", episodes, minimum=1)
    team_reward = check_team_reward(team_reward)
    env = as_parallel_env(env)
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
    check_sample_steps(episodes, horizon)
    encoders, n_obs, n_act = env_spaces(env, encoders)
    check_cooperative(env, team_reward)
    _check_policy_fits(policy, n_obs, n_act)
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(None if seed is None else check_int("seed", seed, minimum=0))
    env_seed, agent_seed = seed.spawn(2)
    agents = [KCoupledAgent(t, k, rng) for t, rng in
              zip(policy.theta, np.random.default_rng(agent_seed).spawn(len(policy.theta)), strict=True)]
    first = int(env_seed.generate_state(1)[0])
    returns = np.empty(episodes)
    chk = Checked(env, encoders, n_obs, team_reward)
    with np.errstate(over="ignore"):  # an overflow is refused below, by name
        for e in range(episodes):
            returns[e] = checked_episode(chk, agents, horizon=horizon,
                                         reset_seed=(first + e) % (2**31)).discounted_return(gamma)
    if not np.all(np.isfinite(returns)):
        raise ValueError("the discounted returns overflow float64 (rewards too large); rescale the rewards")
    return returns
