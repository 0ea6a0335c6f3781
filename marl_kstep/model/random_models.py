r"""Random problem families for measuring k-step ascent (in the spirit of QuantEcon's ``random_ddp``).

:func:`random_model` draws one :class:`~marl_kstep.model.JointMDP` of a *family* from
``np.random.default_rng(seed)``; :func:`random_model_args` resolves its arguments (every one,
defaults filled in) into a plain JSON dict, so ``random_model(**random_model_args(...))``
rebuilds the same model bit for bit, and a run spec's target ``{"random": args}`` names it
exactly.

Common to every family (``N`` states, ``J = A^n`` joint actions):

* **transitions** -- for every pair :math:`(s, j)`, ``branching`` distinct successors drawn
  uniformly without replacement, with probabilities drawn uniformly on the simplex
  (Dirichlet(1)), as ``random_ddp``'s ``num_s_next``;
* **rewards** -- :math:`r(s, j) \sim U[0, 1)` independently (the normalised gap
  :math:`(J^* - J) / (J^* - J_{\min})` of the study does not depend on the reward's scale or shift);
* **start** -- :math:`\mu` uniform over the states;
* **observation maps** -- a uniformly random *surjective* map :math:`\phi: \{0..N-1\} \to
  \{0..O-1\}` (a random permutation gives each observation one state, the other
  :math:`N - O` states draw an observation uniformly), so every observation is used.

Families
--------
``"aggregation"``
    One agent (``n_agents = 1``); :math:`\phi(s)` aggregates the ``n_states`` states into
    ``n_obs`` observations (state aggregation: the agent cannot tell aliased states apart).
``"decentralized"``
    ``n_agents`` agents on ``n_states`` joint states; each agent has its own independent random
    aliasing map :math:`\phi_i`, so no agent sees the state and the agents see it differently.
``"dec-pomdp"``
    Noisy observations. :class:`JointMDP` observations are a deterministic function of the
    state (SPEC §1), so the noise is folded into the state as for ``.dpomdp`` files (SPEC §6):
    a hidden model with ``n_states`` states, the transitions and rewards above, and per agent a
    random surjective *signal map* :math:`f_i`; after every step into :math:`s'`, agent
    :math:`i` observes

    .. math::

        O_i(o \mid s') = (1 - \varepsilon)\, 1[o = f_i(s')] + \varepsilon / O_i ,

    independently across agents (:math:`\varepsilon` = ``obs_noise``; the joint
    :math:`O(o \mid a, s') = \prod_i O_i(o_i \mid s')`). The joint MDP is then built by
    :func:`~marl_kstep.model.dpomdp.augment` (the same code as for files): its states are the
    reachable :math:`(s, o_0, \dots, o_{n-1})`, agent :math:`i` observes its latest
    :math:`o_i` (or ``start``, index :math:`O_i`, at :math:`t = 0`), and so ``n_obs + 1``
    observations per agent. With ``obs_noise = 0`` every agent sees :math:`f_i` of the current
    hidden state (the decentralized family with a start symbol); with ``obs_noise = 1`` the
    observations carry no information.

Sizes are checked (``ValueError`` naming the argument) and the memory of the build is
estimated and refused beyond :func:`~marl_kstep.settings.model_bytes_limit` before anything of
that size is drawn.
"""

from __future__ import annotations

import math

import numpy as np

from ..settings import model_bytes_limit
from ..validation import check_choice, check_gamma, check_int, check_probability
from .dpomdp import DecPOMDP, augment
from .joint_mdp import JointMDP

__all__ = ["FAMILIES", "random_model", "random_model_args"]

#: The families and their defaults (``None``: the argument does not apply to the family).
FAMILIES = {
    "aggregation": dict(n_agents=1, n_states=8, n_obs=3, n_actions=2, branching=2, obs_noise=0.0, gamma=0.9),
    "decentralized": dict(n_agents=2, n_states=8, n_obs=3, n_actions=2, branching=2, obs_noise=0.0, gamma=0.9),
    "dec-pomdp": dict(n_agents=2, n_states=4, n_obs=2, n_actions=2, branching=1, obs_noise=0.2, gamma=0.9),
}
# dec-pomdp: deterministic hidden dynamics by default, since the noisy observations already branch
# every step into prod_i O_i outcomes; the exact k-step windows cost about (b prod_i O_i)^k paths.

#: Largest number of agents (joint actions are A^n).
MAX_AGENTS = 8


def random_model_args(family: str, *, seed: int, n_agents: int | None = None, n_states: int | None = None,
                      n_obs: int | None = None, n_actions: int | None = None, branching: int | None = None,
                      obs_noise: float | None = None, gamma: float | None = None) -> dict:
    """Every argument of :func:`random_model`, checked, with the family's defaults filled in.

    Parameters
    ----------
    family : {"aggregation", "decentralized", "dec-pomdp"}
    seed : int
        Seed of ``np.random.default_rng`` (>= 0).
    n_agents : int, optional
        Agents (``aggregation``: 1 only).
    n_states : int, optional
        States ``N`` (``dec-pomdp``: hidden states).
    n_obs : int, optional
        Observations per agent, ``1 <= n_obs <= n_states`` (``dec-pomdp``: signals per agent,
        the joint MDP adds ``start``).
    n_actions : int, optional
        Actions per agent.
    branching : int, optional
        Successors of every ``(s, j)``, ``1 <= branching <= n_states``.
    obs_noise : float, optional
        ``dec-pomdp`` only (``epsilon`` of the module docstring); must be 0 for the other families.
    gamma : float, optional
        Discount in ``[0, 1)`` (default 0.9).

    Returns
    -------
    dict
        ``{"family", "n_agents", "n_states", "n_obs", "n_actions", "branching", "obs_noise",
        "gamma", "seed"}``, plain ints, floats and a string (JSON-able, canonical).
    """
    family = check_choice("family", family, tuple(FAMILIES))
    given = dict(n_agents=n_agents, n_states=n_states, n_obs=n_obs, n_actions=n_actions, branching=branching,
                 obs_noise=obs_noise, gamma=gamma)
    args = {key: FAMILIES[family][key] if val is None else val for key, val in given.items()}
    out = {"family": family, "seed": check_int("seed", seed, minimum=0)}
    out["n_agents"] = check_int("n_agents", args["n_agents"], minimum=1, maximum=MAX_AGENTS)
    if family == "aggregation" and out["n_agents"] != 1:
        raise ValueError(f"n_agents must be 1 for family 'aggregation' (one agent); got n_agents={out['n_agents']}")
    out["n_states"] = check_int("n_states", args["n_states"], minimum=1)
    out["n_obs"] = check_int("n_obs", args["n_obs"], minimum=1)
    out["n_actions"] = check_int("n_actions", args["n_actions"], minimum=1)
    out["branching"] = check_int("branching", args["branching"], minimum=1)
    for key, why in (("n_obs", "every observation is seen in some state"), ("branching", "distinct successors")):
        if out[key] > out["n_states"]:
            raise ValueError(f"{key} must be <= n_states = {out['n_states']} ({why}); got {key}={out[key]}")
    out["obs_noise"] = check_probability("obs_noise", args["obs_noise"])
    if family != "dec-pomdp" and out["obs_noise"] != 0.0:
        raise ValueError(f"obs_noise applies to family 'dec-pomdp' only (observations of {family!r} are "
                         f"deterministic); got obs_noise={out['obs_noise']!r}")
    out["gamma"] = check_gamma(args["gamma"])
    _check_bytes(out)
    return {key: out[key] for key in ("family", "n_agents", "n_states", "n_obs", "n_actions", "branching",
                                      "obs_noise", "gamma", "seed")}


def _check_bytes(args: dict) -> None:
    """Refuse a build whose arrays would pass the memory limit (estimated from the sizes alone)."""
    N, b, n = args["n_states"], args["branching"], args["n_agents"]
    J = args["n_actions"] ** n
    need = 8 * N * J * (N + 4 * b + 2)  # the successor draw (N per row), CSR arrays, rewards
    if args["family"] == "dec-pomdp":
        JO = args["n_obs"] ** n
        ext = (args["n_obs"] + 1) ** n
        need += 8 * J * N * (3 * N + JO) + 48 * N * ext * J * b * JO  # T, R3, O; the augmented rows
    if need > model_bytes_limit():
        raise ValueError(f"random_model({args['family']!r}) with n_states={N}, n_actions={args['n_actions']}, "
                         f"n_agents={n}, branching={b} would take about {need / 2**30:,.2f} GiB, more than the "
                         f"limit of {model_bytes_limit() / 2**30:,.2f} GiB (Settings.max_model_bytes)")


def _surjection(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """A uniformly random map ``0..n-1 -> 0..m-1`` that uses every value (``m <= n``)."""
    perm = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm[:m]] = np.arange(m)
    out[perm[m:]] = rng.integers(m, size=n - m)
    return out


def _transitions(rng: np.random.Generator, n_rows: int, n_states: int, branching: int):
    """CSR arrays of ``n_rows`` rows, each ``branching`` distinct successors with Dirichlet(1) probabilities."""
    succ = np.sort(np.argsort(rng.random((n_rows, n_states)), axis=1)[:, :branching], axis=1)
    probs = rng.dirichlet(np.ones(branching), size=n_rows)
    indptr = np.arange(0, n_rows * branching + 1, branching, dtype=np.int64)
    return indptr, succ.ravel(), probs.ravel()


def random_model(family: str, *, seed: int, n_agents: int | None = None, n_states: int | None = None,
                 n_obs: int | None = None, n_actions: int | None = None, branching: int | None = None,
                 obs_noise: float | None = None, gamma: float | None = None) -> JointMDP:
    """One random problem of ``family``, reproducible from ``seed`` (see the module docstring).

    The arguments are those of :func:`random_model_args` (which resolves the defaults: pass its
    dict back as ``random_model(**args)`` to rebuild the same model).

    Returns
    -------
    JointMDP
        ``aggregation`` and ``decentralized``: ``n_states`` states, ``n_obs`` observations per
        agent; ``dec-pomdp``: the reachable (hidden state, last joint observation) pairs and
        ``n_obs + 1`` observations per agent (the last is ``start``).

    Examples
    --------
    >>> mdp = random_model("aggregation", seed=0)
    >>> mdp.n_states, mdp.n_obs, mdp.n_actions
    (8, (3,), (2,))
    """
    a = random_model_args(family, seed=seed, n_agents=n_agents, n_states=n_states, n_obs=n_obs,
                          n_actions=n_actions, branching=branching, obs_noise=obs_noise, gamma=gamma)
    rng = np.random.default_rng(a["seed"])
    n, N, n_obs, A, b = a["n_agents"], a["n_states"], a["n_obs"], a["n_actions"], a["branching"]
    J = A**n
    maps = [_surjection(rng, N, n_obs) for _ in range(n)]
    indptr, succ, probs = _transitions(rng, N * J, N, b)
    rewards = rng.random((N, J))
    mu = np.full(N, 1.0 / N)
    if a["family"] != "dec-pomdp":
        return JointMDP.from_sparse(indptr, succ, probs, rewards, maps, [A] * n, mu, a["gamma"], n_obs=[n_obs] * n)
    # dec-pomdp: dense hidden model, observation noise, folded into the state by augment (SPEC §6)
    T = np.zeros((J, N, N))
    rows = np.repeat(np.arange(N * J), b)
    T[rows % J, rows // J, succ] = probs
    eps = a["obs_noise"]
    per_agent = [(1.0 - eps) * np.eye(n_obs)[f] + eps / n_obs for f in maps]  # O_i[s', o], shape (N, O)
    joint_obs = per_agent[0]
    for Oi in per_agent[1:]:  # agent 0 most significant, as joint actions
        joint_obs = (joint_obs[:, :, None] * Oi[:, None, :]).reshape(N, -1)
    dec = DecPOMDP(
        name=f"random dec-pomdp seed {a['seed']}", agent_names=tuple(f"agent{i}" for i in range(n)),
        discount=a["gamma"], state_names=tuple(f"s{s}" for s in range(N)),
        action_names=tuple(tuple(f"a{x}" for x in range(A)) for _ in range(n)),
        obs_names=tuple(tuple(f"o{x}" for x in range(n_obs)) for _ in range(n)),
        start=mu, T=T, O=np.broadcast_to(joint_obs, (J, N, joint_obs.shape[1])),
        R3=np.broadcast_to(rewards.T[:, :, None], (J, N, N)), R_obs={})
    return augment(dec, a["gamma"], max_states=max(1, N * math.prod([n_obs + 1] * n)))
