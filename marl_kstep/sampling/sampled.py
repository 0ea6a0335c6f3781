r"""The sampled k-step estimator ``SampledKStep`` (SPEC §8), for any PettingZoo env or model.

Episodes of k-coupled execution (:mod:`marl_kstep.sampling.execution`) give

* :math:`\hat J_k` = the mean of the returns :math:`G = \sum_{t<T} \gamma^t r_t`, with
  standard error ``std / sqrt(n)``;
* the gradient: each first-visit draw :math:`(t, i, o, a)` adds
  :math:`(G_{\ge t} - b_t) / \theta_i[o, a]` to entry :math:`(i, o, a)` of its episode's
  vector, :math:`G_{\ge t} = \sum_{t' \ge t} \gamma^{t'} r_{t'}`; each row of the episode
  vector is centred (minus its mean over actions), and the estimate is the mean of the
  centred vectors, ``grad_se`` their standard error. Its expectation is :math:`C \nabla J_k`
  (``C`` centres each row) on the simplex's interior: rewards before a draw and the baseline
  are fixed before the draw, so they add the same amount to every action of its row.

The baseline :math:`b_t` is the mean of :math:`G_{\ge t}` over the earlier episodes of the
same random stream (``baseline="mean"``, the default), or 0 (``baseline="none"``).

Three paths compute the same estimator:

* **env path** -- any PettingZoo ``ParallelEnv``: a Python loop over env steps
  (:func:`~marl_kstep.sampling.k_coupled_episode`);
* **batched path** -- a scenario with the array protocol
  (:class:`~marl_kstep.envs.vectorised.VectorisedModel`, e.g. every built-in scenario's env):
  thousands of episodes advance together through ``observe_arrays`` / ``step_arrays``, with no
  enumeration, so models of 10^8 joint states and more are sampled directly;
* **fast path** -- a :class:`~marl_kstep.model.JointMDP` (a compiled scenario, a .dpomdp file):
  one compiled pass simulates all episodes in fixed chunks with their own streams and
  accumulates the estimator (:mod:`marl_kstep.sampling._kernels`); threads never change the
  result.

Every call of :meth:`SampledKStep.estimate` draws from its own stream, the ``c``-th call of an
estimator made with ``seed`` uses ``SeedSequence(seed, spawn_key=(c,))`` (or pass ``seed=``),
so a training run is reproducible from its seed.

Limits, checked before any work (``ValueError`` naming the argument): ``episodes * horizon``
at most ``Settings.max_sample_steps`` per call (the default horizon at a discount near 1
included), the scratch memory of one call at most ``settings.model_bytes_limit()``, and
returns that overflow float64 (rewards near 1e308) are an error, never an infinite estimate.
Keywords that would have no effect are refused: ``tail`` where the horizon is given or comes
from the env, ``encoders`` and a ``team_reward`` other than ``"mean"`` off the env path (a
model's reward is already the team's).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence

import numba
import numpy as np

from ..envs.pz import mdp_parallel_env
from ..envs.vectorised import VectorisedModel, checked_model
from ..estimators.base import Estimate
from ..model import JointMDP
from ..policy import Policy
from ..settings import model_bytes_limit
from ..threads import parallel_section
from ..validation import check_choice, check_gamma, check_int, check_k, check_positive, check_seed
from . import _kernels
from .execution import (
    Checked,
    KCoupledAgent,
    as_parallel_env,
    check_cooperative,
    check_sample_steps,
    check_team_reward,
    checked_episode,
    draw_cdf,
    env_spaces,
)

__all__ = ["SampledKStep", "horizon_for"]

#: Chunks of the fast path (each with its own stream); fixed, so results do not depend on threads.
N_CHUNKS = 16
#: Episodes advanced together on the batched path.
BATCH = 4096
#: Below this many simulated steps per call the fast path runs on the calling thread.
PARALLEL_MIN_STEPS = 200_000
#: Longest horizon (the compiled kernels index time and draws with int64; scratch grows with it).
MAX_HORIZON = 2**31 - 1
#: The default ``tail`` of :func:`horizon_for` (``gamma^H <= tail``).
DEFAULT_TAIL = 1e-4


def horizon_for(gamma: float, tail: float) -> int:
    r"""The smallest ``H`` with :math:`\gamma^H \le` ``tail`` (at least 1).

    Truncating a JointMDP's episodes at ``H`` changes :math:`J_k` by at most
    :math:`\gamma^H \max|r| / (1-\gamma)` (SPEC §8).
    """
    gamma = check_gamma(gamma)
    tail = check_positive("tail", tail)
    if gamma == 0.0 or tail >= 1.0:
        return 1
    h = math.log(tail) / math.log(gamma) - 1e-12
    if h > MAX_HORIZON:
        raise ValueError(f"the horizon with gamma^H <= tail={tail:g} at gamma={gamma!r} is {h:.3g} steps, more than "
                         f"{MAX_HORIZON}; give horizon= (truncation moves J_k by at most gamma^H max|r| / (1-gamma))")
    return max(1, math.ceil(h))


def _seed_root(seed):
    """The root ``SeedSequence`` of a seed: an int, a SeedSequence (copied: its entropy and spawn
    key), or a Generator / BitGenerator (one 63-bit draw from it, kept as an int seed)."""
    seed = check_seed("seed", seed)
    if isinstance(seed, np.random.BitGenerator):
        seed = np.random.Generator(seed)
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(0, 2**63))
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size)
    return np.random.SeedSequence(seed)


def check_sample_budget(episodes: int, horizon: int, n_agents: int, n_rows: int, path: str) -> None:
    """Refuse a call of more than ``Settings.max_sample_steps`` simulated steps, or whose
    scratch memory exceeds :func:`~marl_kstep.settings.model_bytes_limit` (before any work)."""
    check_sample_steps(episodes, horizon)
    per_episode = 8 * (4 * (horizon + 1) + 3 * horizon * n_agents)  # returns, baseline, draws of one episode
    if path == "batched":
        need = min(BATCH, episodes) * (per_episode + 16 * n_rows)
    elif path == "fast":
        need = min(N_CHUNKS, episodes, max(1, numba.get_num_threads())) * (per_episode + 16 * n_rows)
    else:
        need = per_episode
    if need > model_bytes_limit():
        raise ValueError(f"horizon={horizon} needs about {need / 2**30:.3g} GiB of scratch memory per call, more than "
                         f"{model_bytes_limit() / 2**30:.3g} GiB (Settings.max_model_bytes); lower horizon")


def _is_parallel_env(x) -> bool:
    base = getattr(x, "unwrapped", x)
    return hasattr(base, "possible_agents") and callable(getattr(base, "step", None)) \
        and callable(getattr(base, "reset", None))


class SampledKStep:
    r"""Sampled :math:`J_k` and row-centred :math:`\nabla J_k` from k-coupled episodes (SPEC §8).

    Parameters
    ----------
    target : JointMDP, VectorisedModel or pettingzoo.ParallelEnv
        A model (fast path, or the env path with ``path="env"``), a scenario model with the array
        protocol (batched path), or any ParallelEnv whose agents have Discrete action spaces and
        Discrete observations or an encoder (env path; a built-in scenario's env runs on the
        batched path unless ``path="env"``). A parallelizable AEC env is converted with
        ``aec_to_parallel``. Every output of an env is checked as it arrives
        (:mod:`marl_kstep.sampling.execution`).
    k : int
        Window length (1 = ordinary REINFORCE).
    gamma : float, optional
        Discount. Required for an env (unless it carries a marl_kstep model); for a JointMDP it
        is the model's and must not be given otherwise.
    episodes : int
        Episodes per :meth:`estimate` call.
    horizon : int, optional
        Steps per episode. JointMDP: default :func:`horizon_for` ``(gamma, tail)``. Env: default
        the env's ``max_cycles``; one of the two is required.
    tail : float, optional
        For the default horizon on a model: :math:`\gamma^H \le` ``tail`` (default 1e-4);
        refused where it has no effect (with ``horizon``, or on an environment).
    baseline : {"mean", "none"}
        Per-time running-mean baseline (default) or none.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Base seed; ``None`` draws one (kept in :attr:`seed`, so runs can be repeated). Call
        ``c`` uses ``SeedSequence(entropy, spawn_key=(*spawn_key, c))`` of a SeedSequence; a
        Generator gives one 63-bit draw, used as an int seed.
    encoders : sequence of callables, optional
        Env path: ``encoders[i](raw) -> 0..O_i-1`` with an attribute ``n`` (see
        :mod:`marl_kstep.sampling.encoders`); default the exact encoder of Discrete /
        MultiDiscrete spaces.
    team_reward : {"mean", "sum"} or callable, optional
        Env path only: the team reward of a step from the env's reward dict. Default: the mean,
        with a :class:`~marl_kstep.sampling.NonCooperativeRewardWarning` when the agents'
        rewards differ; an env declaring ``cooperative = False`` (a zero-sum OpenSpiel game)
        needs an explicit choice.
    path : {"auto", "fast", "batched", "env"}
        ``auto``: the fast path for a JointMDP, the batched path for a VectorisedModel (or an env
        that simulates one), the env path for other envs.
    floor : float
        Smallest probability that training keeps in every entry (:func:`marl_kstep.train` reads
        it): the estimator cannot see the partial of an entry at 0 (it is never drawn), so
        ``pgd`` projects onto :math:`\{\theta \ge \text{floor}\}` and ``mirror`` mixes in
        ``floor`` per entry. Default 0.01; 0 turns it off.
    """

    #: Estimates carry sampling error (the protocol's ``exact``).
    exact = False

    def __init__(self, target, k: int, *, gamma: float | None = None, episodes: int = 1000,
                 horizon: int | None = None, tail: float | None = None, baseline: str = "mean", seed=None,
                 encoders: Sequence[Callable] | None = None, team_reward=None, path: str = "auto",
                 floor: float = 0.01):
        self.k = check_k(k)
        self.episodes = check_int("episodes", episodes, minimum=1)
        self.baseline = check_choice("baseline", baseline, ("mean", "none"))
        self.path = check_choice("path", path, ("auto", "fast", "batched", "env"))
        self.floor = check_positive("floor", floor, allow_zero=True)
        if horizon is not None:
            horizon = check_int("horizon", horizon, minimum=1, maximum=MAX_HORIZON)
            if tail is not None:
                raise ValueError(f"tail sets the default horizon; give horizon or tail, not both (horizon={horizon}, "
                                 f"tail={tail!r})")
        if tail is not None:
            tail = check_positive("tail", tail)
        self._root = _seed_root(seed)
        if seed is None:
            self._root = np.random.SeedSequence(int(self._root.entropy % (2**63)))
        #: The base seed (an int; a SeedSequence given as seed is kept as it is).
        self.seed = self._root if isinstance(seed, np.random.SeedSequence) else int(self._root.entropy)
        self._calls = 0
        self.team_reward = check_team_reward(team_reward)
        target = as_parallel_env(target)
        if isinstance(target, JointMDP):
            if gamma is not None:
                raise ValueError(f"gamma is the model's ({target.gamma}) for a JointMDP; got gamma={gamma!r}")
            if encoders is not None:
                raise ValueError("encoders apply to an environment, not to a JointMDP")
            if self.path == "batched":
                raise ValueError("path='batched' needs a scenario model with the array protocol (VectorisedModel); "
                                 "a JointMDP runs on path='fast' (or 'env')")
            self.path = "fast" if self.path == "auto" else self.path
            if team_reward not in (None, "mean") and self.path != "env":
                raise ValueError(f"team_reward applies to the env path; a JointMDP has one (team) reward per step "
                                 f"(got team_reward={team_reward!r}; pass path='env' to use it)")
            self._mdp = target
            self.gamma = target.gamma
            self.horizon = horizon_for(self.gamma, DEFAULT_TAIL if tail is None else tail) if horizon is None \
                else horizon
            self._n_obs, self._n_actions = tuple(target.n_obs), tuple(target.n_actions)
            self.env = None
            if self.path == "env":
                self.env = mdp_parallel_env(target, max_cycles=self.horizon)
                self.encoders = env_spaces(self.env)[0]
            else:
                self._arrays = _mdp_arrays(target)
        elif isinstance(target, VectorisedModel) or (
                _is_parallel_env(target) and isinstance(getattr(getattr(target, "unwrapped", target), "model", None),
                                                        VectorisedModel) and self.path in ("auto", "batched")):
            if self.path not in ("auto", "batched"):
                raise ValueError(f"path={self.path!r} does not apply to a scenario model; use 'batched' (or pass the "
                                 "scenario's env for path='env', its compiled JointMDP for path='fast')")
            model = target if isinstance(target, VectorisedModel) else target.unwrapped.model
            model = checked_model(model)  # every answer of the user's model is checked before use
            if gamma is not None:
                raise ValueError(f"gamma is the model's ({model.gamma}) for a scenario model; got gamma={gamma!r}")
            if encoders is not None:
                raise ValueError("encoders apply to an environment, not to a scenario model")
            if team_reward not in (None, "mean"):
                raise ValueError(f"team_reward applies to the env path; a scenario model has one reward per step "
                                 f"(got team_reward={team_reward!r}; pass path='env' to use it)")
            self.path = "batched"
            self._mdp = None
            self.env = None
            self._vmodel = model
            self.gamma = check_gamma(model.gamma)
            self.horizon = horizon_for(self.gamma, DEFAULT_TAIL if tail is None else tail) if horizon is None \
                else horizon
            self._n_obs, self._n_actions = tuple(model.n_obs), tuple(model.n_actions)
            codes, p = model.initial_codes()
            self._init = (np.asarray(codes, dtype=np.int64), np.asarray(p, dtype=float) / np.sum(p))
        elif _is_parallel_env(target):
            if self.path in ("fast", "batched"):
                raise ValueError(f"path={self.path!r} needs a JointMDP (fast) or a scenario model (batched); "
                                 "this environment runs on the env path")
            if tail is not None:
                raise ValueError(f"tail sets the default horizon of a model; an environment's horizon is horizon= "
                                 f"or its max_cycles (got tail={tail!r})")
            self.path = "env"
            self._mdp = None
            self.env = target
            base = getattr(target, "unwrapped", target)
            model = getattr(base, "model", None)
            if gamma is None:
                if model is None or not hasattr(model, "gamma"):
                    raise ValueError("gamma is required for an environment (SampledKStep(env, k, gamma=...))")
                gamma = model.gamma
            self.gamma = check_gamma(gamma)
            max_cycles = getattr(base, "max_cycles", None)
            if horizon is None:
                if max_cycles is None:
                    raise ValueError("horizon is required for an environment without max_cycles")
                if isinstance(max_cycles, bool) or not isinstance(max_cycles, numbers.Integral) \
                        or not 1 <= max_cycles <= MAX_HORIZON:
                    raise ValueError(f"horizon: the env's max_cycles = {max_cycles!r} is not a usable default horizon "
                                     f"(an integer in 1..{MAX_HORIZON}); give horizon=")
                horizon = int(max_cycles)
            self.horizon = horizon
            self.encoders, self._n_obs, self._n_actions = env_spaces(target, encoders)
            check_cooperative(target, self.team_reward)
        else:
            raise ValueError(f"target must be a JointMDP or a PettingZoo ParallelEnv; got {type(target).__name__}")
        if self.path == "env":
            self._checked = Checked(self.env, self.encoders, self._n_obs, self.team_reward)
        self._layout = _layout(self._n_obs, self._n_actions)
        check_sample_budget(self.episodes, self.horizon, self.n_agents, self._layout[1].size, self.path)

    # ------------------------------------------------------------------ protocol
    @property
    def mdp(self):
        """The model, or ``None`` for an environment."""
        return self._mdp

    @property
    def n_agents(self) -> int:
        return len(self._n_actions)

    @property
    def n_obs(self) -> tuple[int, ...]:
        return self._n_obs

    @property
    def n_actions(self) -> tuple[int, ...]:
        return self._n_actions

    @property
    def truncation_bound(self) -> float | None:
        r""":math:`\gamma^H \max|r| / (1-\gamma)`, the most truncation can move :math:`J_k` (models only)."""
        if self._mdp is None:
            return None
        return float(self.gamma ** self.horizon * np.abs(self._mdp.rewards).max() / (1.0 - self.gamma))

    def __repr__(self) -> str:
        return (f"SampledKStep(k={self.k}, path={self.path!r}, episodes={self.episodes}, horizon={self.horizon}, "
                f"gamma={self.gamma}, seed={self.seed})")

    def estimate(self, policy: Policy, *, seed=None) -> Estimate:
        r"""Sampled :math:`J_k` and row-centred gradient at ``policy``, with standard errors.

        ``seed`` (an int, SeedSequence or Generator) overrides the estimator's stream for this call
        (the call counter still advances).
        """
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be a marl_kstep.Policy; got {type(policy).__name__}")
        if policy.free_entries:
            raise ValueError("policy must lie on the simplex to be sampled (it was built with check_simplex=False)")
        policy.check_compatible(self)
        check_sample_budget(self.episodes, self.horizon, self.n_agents, self._layout[1].size, self.path)
        root = self._root
        ss = (np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, self._calls), pool_size=root.pool_size)
              if seed is None else _seed_root(seed))
        self._calls += 1
        theta = np.concatenate([t.ravel() for t in policy.theta]).astype(float)
        P = theta.size
        if self.path == "fast":
            chunks = min(N_CHUNKS, self.episodes)
            per = np.full(chunks, self.episodes // chunks, dtype=np.int64)
            per[: self.episodes % chunks] += 1
            seeds = ss.generate_state(chunks, dtype=np.uint64)
            acc_sum = np.zeros((chunks, P))
            acc_sq = np.zeros((chunks, P))
            jstats = np.zeros((chunks, 3))
            parallel = self.episodes * self.horizon >= PARALLEL_MIN_STEPS
            with parallel_section() if parallel else contextlib.nullcontext():
                # a window longer than the episode is one window: the same execution as k = horizon
                _kernels.simulate_chunks(parallel, per, seeds, self.baseline == "mean", min(self.k, self.horizon),
                                         self.horizon,
                                         self.gamma, theta, self._layout, self._arrays, acc_sum, acc_sq, jstats)
            with np.errstate(over="ignore"):  # an overflow is refused below, by name
                tot_sum, tot_sq, js = acc_sum.sum(axis=0), acc_sq.sum(axis=0), jstats.sum(axis=0)
        elif self.path == "batched":
            tot_sum, tot_sq, js = self._batched_episodes(policy, theta, ss)
        else:
            tot_sum, tot_sq, js = self._env_episodes(policy, theta, ss)
        n = js[2]
        if not (np.all(np.isfinite(js)) and np.all(np.isfinite(tot_sum)) and np.all(np.isfinite(tot_sq))):
            raise ValueError("the sampled returns overflow float64: the sum of the returns, of their squares or of the "
                             "score terms is infinite (rewards too large, near 1e154 or more, or an env whose rewards "
                             "grow without bound); rescale the rewards")
        J = js[0] / n
        var_J = max(js[1] / n - J * J, 0.0) * n / max(n - 1, 1)
        g = tot_sum / n
        var_g = np.maximum(tot_sq / n - g * g, 0.0) * n / max(n - 1, 1)
        grad, grad_se, off = [], [], 0
        for o, a in zip(self._n_obs, self._n_actions, strict=True):
            grad.append(g[off:off + o * a].reshape(o, a).copy())
            grad_se.append(np.sqrt(var_g[off:off + o * a] / n).reshape(o, a))
            off += o * a
        return Estimate(J_k=float(J), grad=grad, J_k_se=float(math.sqrt(var_J / n)), grad_se=grad_se)

    # ------------------------------------------------------------------ env path
    def _env_episodes(self, policy, theta, ss):
        env_seed, agent_seed = ss.spawn(2)
        rngs = np.random.default_rng(agent_seed).spawn(self.n_agents)
        agents = [KCoupledAgent(t, self.k, r) for t, r in zip(policy.theta, rngs, strict=True)]
        row_offset, row_first, row_len, entry_row = self._layout
        H, P = self.horizon, theta.size
        scratch = _Scratch(H, P, row_first.size, self.n_agents)
        first = int(env_seed.generate_state(1)[0])
        disc = self.gamma ** np.arange(H)
        for e in range(self.episodes):
            ep = checked_episode(self._checked, agents, horizon=H, reset_seed=(first + e) % (2**31))
            T = ep.rewards.size
            scratch.rd[:T] = ep.rewards * disc[:T]
            D = 0
            for i, draws in enumerate(ep.draws):
                for t, o, a in draws:
                    ent = row_first[row_offset[i] + o] + a
                    scratch.d_t[D], scratch.d_entry[D], scratch.d_prob[D] = t, ent, theta[ent]
                    D += 1
            self._finish(scratch, T, D, row_first, row_len, entry_row)
        return scratch.acc_sum[0], scratch.acc_sq[0], scratch.jstats[0]

    # ------------------------------------------------------------------ batched path
    def _batched_episodes(self, policy, theta, ss):
        model, k, H, n = self._vmodel, self.k, self.horizon, self.n_agents
        row_offset, row_first, row_len, entry_row = self._layout
        n_rows, P = row_first.size, theta.size
        rng = np.random.default_rng(ss)
        cdf = [draw_cdf(t) for t in policy.theta]
        codes0, p0 = self._init
        sc = _Scratch(H, P, n_rows, n)
        disc = self.gamma ** np.arange(H)
        done = 0
        while done < self.episodes:
            B = min(BATCH, self.episodes - done)
            ar = np.arange(B)
            codes = codes0[rng.choice(codes0.size, size=B, p=p0)]
            stamp = np.full((B, n_rows), -1, dtype=np.int64)
            drawn = np.zeros((B, n_rows), dtype=np.int64)
            d_t = np.zeros((B, H * n), dtype=np.int64)
            d_entry = np.zeros((B, H * n), dtype=np.int64)
            d_prob = np.ones((B, H * n))
            D = np.zeros(B, dtype=np.int64)
            rd = np.zeros((B, H + 1))
            for t in range(H):
                w = t // k
                obs = model.observe_arrays(codes)
                joint = np.zeros(B, dtype=np.int64)
                for i in range(n):
                    rows = row_offset[i] + obs[i]
                    need = np.flatnonzero(stamp[ar, rows] != w)
                    if need.size:
                        r = rows[need]
                        u = rng.random(need.size)
                        a = (u[:, None] >= cdf[i][obs[i][need]]).sum(axis=1)
                        drawn[need, r] = a
                        stamp[need, r] = w
                        pos = D[need]
                        ent = row_first[r] + a
                        d_t[need, pos] = t
                        d_entry[need, pos] = ent
                        d_prob[need, pos] = theta[ent]
                        D[need] += 1
                    joint = joint * self._n_actions[i] + drawn[ar, rows]
                succ, probs, rew = model.step_arrays(codes, joint)
                rd[:, t] = disc[t] * np.asarray(rew, dtype=float)
                if succ.shape[1] == 1:
                    codes = np.asarray(succ[:, 0], dtype=np.int64)
                else:
                    u = rng.random(B)
                    # u scaled by the row's own total (which may be 1 - 1e-10): a trailing outcome of
                    # probability 0 (padding, whose successor code may be anything) is never picked
                    outcome_cdf = np.cumsum(probs, axis=1)
                    pick = np.minimum((u[:, None] * outcome_cdf[:, -1:] >= outcome_cdf).sum(axis=1),
                                      succ.shape[1] - 1)
                    codes = np.asarray(succ[ar, pick], dtype=np.int64)
            _kernels.finish_batch(B, H, rd, d_t, d_entry, d_prob, D, self.baseline == "mean", entry_row, row_first,
                                  row_len, sc.bsum, sc.bcount, sc.G, sc.v, sc.rows, sc.row_mark, sc.acc_sum[0],
                                  sc.acc_sq[0], sc.jstats[0])
            done += B
        return sc.acc_sum[0], sc.acc_sq[0], sc.jstats[0]

    def _finish(self, sc, T, D, row_first, row_len, entry_row):
        if self.baseline == "none":
            sc.bcount[0] = 0
        _kernels.finish_episode(T, sc.rd, sc.d_t, sc.d_entry, sc.d_prob, D, entry_row, row_first, row_len,
                                sc.bsum, sc.bcount, sc.G, sc.v, sc.rows, sc.row_mark, sc.acc_sum[0], sc.acc_sq[0],
                                sc.jstats[0])


class _Scratch:
    def __init__(self, H, P, n_rows, n_agents):
        self.rd = np.zeros(H + 1)
        self.G = np.zeros(H + 1)
        self.bsum = np.zeros(H + 1)
        self.bcount = np.zeros(1, dtype=np.int64)
        m = H * n_agents
        self.d_t = np.empty(m, dtype=np.int64)
        self.d_entry = np.empty(m, dtype=np.int64)
        self.d_prob = np.empty(m)
        self.v = np.zeros(P)
        self.rows = np.empty(max(1, min(m, n_rows)), dtype=np.int64)
        self.row_mark = np.zeros(n_rows, dtype=np.bool_)
        self.acc_sum = np.zeros((1, P))
        self.acc_sq = np.zeros((1, P))
        self.jstats = np.zeros((1, 3))


def _layout(n_obs, n_actions):
    """Flattened entries: ``row_offset[i]``, ``row_first[row]``, ``row_len[row]``, ``entry_row[entry]``."""
    row_offset = np.concatenate([[0], np.cumsum(n_obs)[:-1]]).astype(np.int64)
    row_len = np.concatenate([np.full(o, a) for o, a in zip(n_obs, n_actions, strict=True)]).astype(np.int64)
    row_first = np.concatenate([[0], np.cumsum(row_len)[:-1]]).astype(np.int64)
    entry_row = np.repeat(np.arange(row_len.size), row_len).astype(np.int64)
    return row_offset, row_first, row_len, entry_row


def _mdp_arrays(mdp: JointMDP):
    mu_cdf = np.cumsum(mdp.mu)
    # rounding: the last state with positive probability gets the tail of [0, 1)
    last = int(np.flatnonzero(mdp.mu > 0)[-1])
    mu_cdf[last:] = np.inf
    return (mdp.obs_matrix, np.asarray(mdp.n_actions, dtype=np.int64), mu_cdf, mdp.indptr.astype(np.int64),
            mdp.indices.astype(np.int64), mdp.probs.astype(float), np.ascontiguousarray(mdp.rewards, dtype=float))
