r"""Restricted policies (SPEC §1): one table per agent, checked once.

A decentralized memoryless policy is one table per agent,
:math:`\theta_i[o, a] = \pi_i(a \mid o)`, each row on the probability simplex; the joint
policy is :math:`\pi(j \mid s) = \prod_i \theta_i[\phi_i(s), a_i]`.

The constructors take anything that states the table shapes -- a
:class:`~marl_kstep.model.JointMDP` or an estimator (attributes ``n_agents``, ``n_obs``,
``n_actions``) -- so a policy can be made for an environment that has no model. The
per-agent update rules live in :mod:`marl_kstep.optim`.

A policy is kept in a JSON file (:meth:`Policy.save`, :meth:`Policy.load`; the schema
``marl_kstep.policy/1`` is in :mod:`marl_kstep.policy_io`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import policy_io
from .settings import current
from .validation import check_bool, check_positive, check_seed, check_sequence, real_array

__all__ = ["Policy"]


def _space(mdp):
    """What states the table shapes: a JointMDP or an estimator (n_agents, n_obs, n_actions)."""
    if not all(hasattr(mdp, a) for a in ("n_agents", "n_obs", "n_actions")):
        raise ValueError(f"mdp must be a JointMDP or an estimator (with n_agents, n_obs, n_actions); "
                         f"got {type(mdp).__name__}")
    return mdp


class Policy:
    r"""A decentralized memoryless policy: ``theta[i]`` has shape ``(O_i, A_i)``.

    Use the constructors :meth:`uniform`, :meth:`random`, :meth:`deterministic` and
    :meth:`from_arrays`; they check shapes and that each row lies on the simplex. Their first
    argument ``mdp`` is a :class:`~marl_kstep.model.JointMDP` or an estimator: anything with
    ``n_agents``, ``n_obs`` and ``n_actions``.
    """

    __slots__ = ("theta", "free_entries")

    def __init__(self, theta: Sequence[np.ndarray], *, free_entries: bool = False):
        tables = [real_array(f"theta[{i}]", t) for i, t in enumerate(check_sequence("theta", theta))]
        for i, t in enumerate(tables):
            if t.ndim != 2:
                raise ValueError(f"theta[{i}] must be a 2-d table (observations x actions); got shape {t.shape}")
        self.theta = tables
        #: True for a point of the path-formula extension (rows need not be on the simplex).
        self.free_entries = check_bool("free_entries", free_entries)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, mdp, arrays: Sequence, *, check_simplex: bool = True) -> Policy:
        """Policy from one ``(O_i, A_i)`` array per agent.

        With ``check_simplex=False`` the rows may be any finite numbers: the result is a
        point of the path-formula extension of SPEC §3 (used for finite differences).
        """
        mdp = _space(mdp)
        arrays = check_sequence("arrays", arrays)
        if len(arrays) != mdp.n_agents:
            raise ValueError(f"arrays must hold one table per agent ({mdp.n_agents}); got {len(arrays)}")
        pol = cls(arrays, free_entries=not check_bool("check_simplex", check_simplex))
        pol.check_compatible(mdp)
        return pol

    @classmethod
    def uniform(cls, mdp) -> Policy:
        """Every agent plays uniformly at random in every observation."""
        mdp = _space(mdp)
        return cls([np.full((o, a), 1.0 / a) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])

    @classmethod
    def near_uniform(cls, mdp, seed=0, *, scale: float = 1e-3) -> Policy:
        r"""The uniform policy moved a small seeded step into the simplex (``train``'s default start).

        :math:`\theta = (1 - \varepsilon)\,\mathrm{uniform} + \varepsilon\,\theta_{\mathrm{rand}}` with
        :math:`\varepsilon` = ``scale`` and :math:`\theta_{\mathrm{rand}}` = :meth:`random` ``(mdp, seed)``.
        The exact uniform policy is often a *symmetric saddle* of :math:`J_k` (agents that are
        exchangeable stay exchangeable under exact ascent, SPEC §9 and ``docs/when-k-helps.md``);
        this start is off it by ``scale`` and still reproducible. :meth:`uniform` stays available.
        """
        scale = check_positive("scale", scale)
        if scale > 1.0:
            raise ValueError(f"scale must lie in (0, 1]; got scale={scale!r}")
        base, rand = cls.uniform(mdp), cls.random(mdp, seed)
        return cls([(1.0 - scale) * u + scale * r for u, r in zip(base.theta, rand.theta, strict=True)])

    @classmethod
    def random(cls, mdp, seed=None, *, concentration: float = 1.0) -> Policy:
        """Rows drawn from a symmetric Dirichlet(``concentration``) with ``default_rng(seed)``."""
        mdp = _space(mdp)
        concentration = check_positive("concentration", concentration)
        rng = np.random.default_rng(check_seed("seed", seed))
        return cls(
            [rng.dirichlet(np.full(a, concentration), size=o) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)]
        )

    @classmethod
    def deterministic(cls, mdp, tables: Sequence[Sequence[int]]) -> Policy:
        """Deterministic policy: ``tables[i][o]`` is agent ``i``'s action in observation ``o``."""
        mdp = _space(mdp)
        tables = check_sequence("tables", tables)
        if len(tables) != mdp.n_agents:
            raise ValueError(f"tables must hold one table per agent ({mdp.n_agents}); got {len(tables)}")
        theta = []
        for i, tab in enumerate(tables):
            tab = real_array(f"tables[{i}]", tab, dtype=None)
            if tab.shape != (mdp.n_obs[i],):
                raise ValueError(f"tables[{i}] must have shape ({mdp.n_obs[i]},); got {tab.shape}")
            for o, a in enumerate(tab):
                if not (np.isfinite(a) and 0 <= a < mdp.n_actions[i] and a == int(a)):
                    raise ValueError(
                        f"tables[{i}][{o}] = {a.item()!r} is not an action of agent {i} "
                        f"(0..{mdp.n_actions[i] - 1})"
                    )
            t = np.zeros((mdp.n_obs[i], mdp.n_actions[i]))
            t[np.arange(mdp.n_obs[i]), tab.astype(int)] = 1.0
            theta.append(t)
        return cls(theta)

    # --------------------------------------------------------------- checks
    def check_compatible(self, mdp) -> None:
        """Raise ``ValueError`` unless the tables fit ``mdp`` and (unless ``free_entries``)
        every row lies on the simplex (within ``Settings.simplex_tol``)."""
        self.flat(mdp)

    def flat(self, mdp) -> np.ndarray:
        """All tables, checked as in :meth:`check_compatible`, as one float64 vector (agent 0's
        rows first). Whole-vector tests run first; the scans only name a bad entry."""
        mdp = _space(mdp)
        if len(self.theta) != mdp.n_agents:
            raise ValueError(f"policy has {len(self.theta)} agents; the MDP has {mdp.n_agents}")
        for i, t in enumerate(self.theta):
            shape = (mdp.n_obs[i], mdp.n_actions[i])
            if t.shape != shape:
                raise ValueError(f"theta[{i}] must have shape {shape}; got {t.shape}")
        flat = np.concatenate([t.ravel() for t in self.theta])
        tol = current().simplex_tol
        ok = bool(np.isfinite(flat).all())
        if ok and not self.free_entries and flat.size:
            n_act = {t.shape[1] for t in self.theta}
            if len(n_act) == 1:  # the common case: one reshape, one sum
                A = n_act.pop()
                ok = flat.min() >= -tol and bool((np.abs(flat.reshape(-1, A).sum(axis=1) - 1.0) <= tol * A).all())
            else:
                ok = flat.min() >= -tol and all(
                    bool((np.abs(t.sum(axis=1) - 1.0) <= tol * max(1, t.shape[1])).all()) for t in self.theta)
        if not ok:
            self._name_bad_entry(tol)
        return flat

    def _name_bad_entry(self, tol: float) -> None:
        for i, t in enumerate(self.theta):
            if not np.isfinite(t).all():
                o, a = (int(x) for x in np.argwhere(~np.isfinite(t))[0])
                raise ValueError(f"theta[{i}][{o}, {a}] = {float(t[o, a])!r} is not finite")
        for i, t in enumerate(self.theta):
            if t.size and t.min() < -tol:
                o, a = (int(x) for x in np.argwhere(t < -tol)[0])
                raise ValueError(f"theta[{i}][{o}, {a}] = {float(t[o, a])!r} is negative")
            sums = t.sum(axis=1)
            off = np.abs(sums - 1.0) > tol * max(1, t.shape[1])
            if off.any():
                o = int(np.flatnonzero(off)[0])
                raise ValueError(f"row theta[{i}][{o}] sums to {float(sums[o])!r}; policy rows must lie on the simplex")

    # ----------------------------------------------------------------- files
    def to_dict(self, model=None, *, metadata=None) -> dict:
        """The policy as a JSON-ready document of schema ``marl_kstep.policy/1``.

        Parameters
        ----------
        model : JointMDP, estimator, scenario model or environment, optional
            Checked to fit the tables (:meth:`check_compatible`); gives the agent, observation and
            action names it has (else ``agent_i``, ``obs_o``, ``a_j``) and, for a JointMDP (or an
            estimator on one), the model fingerprint that :meth:`from_dict` checks.
        metadata : JSON-like, optional
            Free-form record kept in the document (e.g. the run spec); numpy scalars and arrays
            are converted, anything else that is not JSON is a ``ValueError``.
        """
        facts = None if model is None else policy_io.model_facts(model)
        self.check_compatible(self._own_shape() if facts is None else
                              SimpleNamespace(n_agents=len(facts.n_actions), n_obs=facts.n_obs,
                                              n_actions=facts.n_actions))
        return policy_io.encode(self.theta, free_entries=self.free_entries, facts=facts, metadata=metadata)

    @classmethod
    def from_dict(cls, doc, model=None, *, check_fingerprint: bool = True, source: str = "policy document") -> Policy:
        """The policy of a document made by :meth:`to_dict` (or read from a file).

        Checks the schema version, the structure and shapes, that every entry is finite and
        (unless the policy was saved with ``free_entries``) every row lies on the simplex within
        ``Settings.simplex_tol``; with ``model``, that it is the model the policy was saved for:
        agent count, per-agent observation and action counts, names where both sides have them
        and, with ``check_fingerprint`` (default), the fingerprint. Every ``ValueError`` names
        ``source``.
        """
        check_fingerprint = check_bool("check_fingerprint", check_fingerprint)
        pf = policy_io.decode(doc, source=source)
        pol = cls(pf.tables, free_entries=pf.free_entries)
        try:
            pol.check_compatible(pol._own_shape())
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        if model is not None:
            policy_io.check_model(pf, model, check_fingerprint=check_fingerprint, source=source)
        return pol

    def save(self, path, model=None, *, metadata=None) -> Path:
        """Write the policy to ``path`` as JSON (:meth:`to_dict`), atomically: an interruption leaves
        the old file or the new one. Returns the path."""
        return policy_io.write_document(path, self.to_dict(model, metadata=metadata))

    @classmethod
    def load(cls, path, model=None, *, check_fingerprint: bool = True) -> Policy:
        """Read a policy file written by :meth:`save`, checked as in :meth:`from_dict`.

        Without ``model`` the shapes come from the file. A damaged file (the line and column are
        named), a file of another schema or version, or a policy for another model is a
        ``ValueError`` naming the file. ``check_fingerprint=False`` accepts a model of the same
        shapes and names whose arrays differ (e.g. another discount). The metadata is
        :func:`marl_kstep.policy_io.read_document` ``(path)["metadata"]``.
        """
        source = f"policy file {str(Path(path))!r}"
        return cls.from_dict(policy_io.read_document(path), model, check_fingerprint=check_fingerprint,
                             source=source)

    def _own_shape(self):
        return SimpleNamespace(n_agents=len(self.theta), n_obs=tuple(t.shape[0] for t in self.theta),
                               n_actions=tuple(t.shape[1] for t in self.theta))

    # -------------------------------------------------------------- helpers
    @property
    def n_agents(self) -> int:
        return len(self.theta)

    def copy(self) -> Policy:
        return Policy([t.copy() for t in self.theta], free_entries=self.free_entries)

    def is_deterministic(self, atol: float = 1e-12) -> bool:
        return all(np.all((np.abs(t) < atol) | (np.abs(t - 1) < atol)) for t in self.theta)

    def greedy_tables(self) -> list[np.ndarray]:
        """Most probable action per observation, one int array per agent."""
        return [np.argmax(t, axis=1) for t in self.theta]

    def greedy(self) -> Policy:
        """The greedy rounding: in every row the most probable action with probability 1."""
        return Policy([np.eye(t.shape[1])[a] for t, a in zip(self.theta, self.greedy_tables(), strict=True)])

    def max_abs_diff(self, other: Policy) -> float:
        return max(float(np.max(np.abs(a - b))) for a, b in zip(self.theta, other.theta, strict=True))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{t.shape}" for t in self.theta)
        return f"Policy(tables: {shapes})"
