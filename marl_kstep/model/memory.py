r"""Finite-state controllers: agents with memory as a memoryless class on a bigger model (SPEC §10).

Agent :math:`i` gets :math:`Q_i` memory nodes :math:`q_i \in \{0, \dots, Q_i - 1\}`, all starting
in node 0. At every step it sees its observation :math:`o_i = \phi_i(x)` and its node, and draws
**one joint choice** :math:`(a_i, q_i')` from :math:`\theta_i[(q_i, o_i), (a_i, q_i')]`: it plays
:math:`a_i` and moves to node :math:`q_i'`. This is exactly a memoryless policy (SPEC §1) of the
*augmented* joint MDP built by :func:`with_memory`:

* state :math:`(x, q_0, \dots, q_{n-1})`, only those reachable from the start;
* agent observation :math:`\tilde\phi_i(x, q) = q_i O_i + \phi_i(x)`
  (:math:`\tilde O_i = Q_i O_i` observations);
* agent action :math:`c_i = a_i Q_i + q_i'` (:math:`\tilde A_i = A_i Q_i` actions), joint
  actions mixed-radix over the :math:`c_i`, agent 0 most significant, as in SPEC §1;
* :math:`P((x', q') \mid (x, q), c) = P(x' \mid x, a)\,[q' = q'']`, reward :math:`r(x, a)`,
  start :math:`\mu(x)\,[q = 0]`, the same :math:`\gamma`.

So every estimator and search of the package applies unchanged, with a slot
:math:`(i, (q_i, o_i))`; in a k-step window the first draw at a slot is reused at every revisit,
**memory writes included**. With every :math:`Q_i = 1` the augmented model is the original
model restricted to its reachable states (array for array when all of them are reachable).

Reachability needs no search of the augmented space: since every agent may write any node,
:math:`(x, q)` is reachable exactly when :math:`q = 0` and :math:`\mu(x) > 0`, or when :math:`x`
is a successor of a reachable original state (then with every :math:`q`).

States are ordered by :math:`x`, then by the node code :math:`\sum_i q_i \prod_{l>i} Q_l`
(agent 0 most significant).

A controller table of agent :math:`i` is the array ``T[q, o, a, q']`` of shape
``(Q_i, O_i, A_i, Q_i)``; it *is* the augmented policy table ``theta_i`` reshaped
(``theta_i.reshape(Q_i, O_i, A_i, Q_i)``), so the conversions both ways are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ..settings import current, model_bytes_limit
from ..validation import check_sequence, real_array
from .joint_mdp import JointMDP

__all__ = ["MemoryMDP", "with_memory", "check_nodes", "memory_sizes"]

#: Largest node count per agent accepted at all (sizes are checked against memory separately).
MAX_NODES = 2**20

#: State names are built for at most this many augmented states (they cost a string each).
STATE_NAMES_MAX = 100_000


def check_nodes(nodes, n_agents: int) -> tuple[int, ...]:
    """``nodes`` as one count :math:`Q_i \\ge 1` per agent (an int is used for every agent)."""
    if isinstance(nodes, bool | np.bool_):
        raise ValueError(f"nodes must be an integer >= 1 or one such integer per agent; got nodes={nodes!r}")
    if isinstance(nodes, int | np.integer):
        nodes = [int(nodes)] * n_agents
    items = check_sequence("nodes", nodes)
    if len(items) != n_agents:
        raise ValueError(f"nodes must give one node count per agent ({n_agents}); got nodes={list(items)}")
    out = []
    for i, q in enumerate(items):
        if isinstance(q, bool | np.bool_) or not isinstance(q, int | np.integer) or q < 1:
            raise ValueError(f"nodes[{i}] (agent {i}) must be an integer >= 1; got {q!r}")
        if q > MAX_NODES:
            raise ValueError(f"nodes[{i}] (agent {i}) = {int(q)} is above {MAX_NODES:,} (no such model fits in memory)")
        out.append(int(q))
    return tuple(out)


def _reachable(mdp: JointMDP) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the original states: reachable from ``mu``, and successors of a
    reachable state (under any joint action)."""
    N, J = mdp.n_states, mdp.n_joint_actions
    rows = np.repeat(np.arange(N * J, dtype=np.int64) // J, np.diff(mdp.indptr))
    adj = sparse.csr_matrix((np.ones(rows.size, np.int8), (rows, mdp.indices)), shape=(N + 1, N + 1))
    source = np.flatnonzero(mdp.mu > 0)  # a virtual state N leads to every start state
    adj = (adj + sparse.csr_matrix((np.ones(source.size, np.int8), (np.full(source.size, N), source)),
                                   shape=(N + 1, N + 1))).tocsr()
    order = csgraph.breadth_first_order(adj, N, directed=True, return_predecessors=False)
    reach = np.zeros(N + 1, bool)
    reach[order] = True
    reach = reach[:N]
    succ = np.zeros(N, bool)
    live = reach[rows]
    succ[mdp.indices[live]] = True
    return reach, succ


def memory_sizes(mdp: JointMDP, nodes) -> dict:
    """The sizes of ``with_memory(mdp, nodes)``, computed without building it.

    Returns
    -------
    dict
        ``states`` (reachable augmented states), ``states_bound`` (:math:`N \\prod_i Q_i`),
        ``joint_actions`` (:math:`\\prod_i A_i Q_i`), ``transitions`` (stored successor
        entries), ``bytes`` (estimated peak memory of the build), ``slots`` (augmented
        observations per agent) and ``actions`` (augmented actions per agent).
    """
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__}")
    nodes = check_nodes(nodes, mdp.n_agents)
    QQ = math.prod(nodes)
    reach, succ = _reachable(mdp)
    start_only = (mdp.mu > 0) & ~succ
    J = mdp.n_joint_actions
    nnz_state = np.diff(mdp.indptr).reshape(mdp.n_states, J).sum(axis=1)  # successor entries per state
    n_states = int(start_only.sum()) + int(succ.sum()) * QQ
    J_aug = J * QQ
    # every augmented state (x, q) has J * QQ rows, each original row (x, j) repeated QQ times
    nnz = (int(nnz_state[start_only].sum()) + int(nnz_state[succ].sum()) * QQ) * QQ
    rows = n_states * J_aug
    # indptr and rewards (8 bytes per row each), indices and probs (16 per entry), and about
    # three more entry-sized arrays while building and while JointMDP sorts and checks them;
    need = 16 * rows + 40 * nnz + 8 * mdp.n_states * QQ  # the last: the index of every (x, q)
    return dict(states=n_states, states_bound=mdp.n_states * QQ, joint_actions=J_aug, transitions=nnz,
                bytes=need, slots=tuple(q * o for q, o in zip(nodes, mdp.n_obs, strict=True)),
                actions=tuple(a * q for a, q in zip(mdp.n_actions, nodes, strict=True)))


def with_memory(mdp: JointMDP, nodes=2) -> MemoryMDP:
    r"""The augmented joint MDP of finite-state controllers with ``nodes`` memory nodes (SPEC §10).

    Parameters
    ----------
    mdp : JointMDP
        Any joint MDP (a ``.dpomdp`` model from :func:`~marl_kstep.load_dpomdp` too: there the
        observation is the agent's most recent one, ``start`` at :math:`t = 0`).
    nodes : int or sequence of int
        :math:`Q_i` per agent (an int: the same for every agent). ``1`` gives the memoryless class.

    Returns
    -------
    MemoryMDP
        A :class:`JointMDP` (see the module docstring for the encoding) that also knows its
        controller layout: :meth:`MemoryMDP.controller`, :meth:`MemoryMDP.augmented_tables`,
        :meth:`MemoryMDP.describe`.

    Raises
    ------
    ValueError
        For bad ``nodes``, or when the model would pass ``Settings.max_model_bytes`` (checked
        from the sizes before anything of that size is allocated).
    """
    if not isinstance(mdp, JointMDP):
        raise ValueError(f"mdp must be a JointMDP; got {type(mdp).__name__} "
                         "(for a PettingZoo env use marl_kstep.sampling.memory_env.MemoryParallelEnv)")
    nodes = check_nodes(nodes, mdp.n_agents)
    size = memory_sizes(mdp, nodes)
    limit = model_bytes_limit()
    if size["bytes"] > limit:
        source = "Settings.max_model_bytes" if current().max_model_bytes else "half of this machine's memory"
        raise ValueError(
            f"with_memory(nodes={list(nodes)}): the augmented model has {size['states']:,} states "
            f"(N * prod Q_i = {mdp.n_states:,} * {math.prod(nodes):,} at most) and {size['joint_actions']:,} "
            f"joint actions (prod A_i Q_i, A = {list(mdp.n_actions)}), {size['transitions']:,} transitions: about "
            f"{size['bytes'] / 2**30:,.2f} GiB, more than the limit of {limit / 2**30:,.2f} GiB ({source}); "
            "use fewer nodes, or raise the limit with mk.configure(max_model_bytes=...)")
    return _build(mdp, nodes)


def _build(mdp: JointMDP, nodes: tuple[int, ...]) -> MemoryMDP:
    n, N, J = mdp.n_agents, mdp.n_states, mdp.n_joint_actions
    QQ = math.prod(nodes)
    _, succ = _reachable(mdp)
    start_only = np.flatnonzero((mdp.mu > 0) & ~succ)
    succ_states = np.flatnonzero(succ)
    codes = np.unique(np.concatenate([start_only * QQ,
                                      (succ_states[:, None] * QQ + np.arange(QQ)[None, :]).ravel()]))
    x_of = codes // QQ
    qcode = codes % QQ
    index = np.full(N * QQ, -1, np.int64)  # counted in memory_sizes' bytes
    index[codes] = np.arange(codes.size)
    q_of = np.stack(np.unravel_index(qcode, nodes)).astype(np.int64)  # (n, N_aug)

    # augmented joint actions: digits c_i = a_i Q_i + q_i'' -> original j and the written node code
    aug_actions = tuple(a * q for a, q in zip(mdp.n_actions, nodes, strict=True))
    digits = np.stack(np.unravel_index(np.arange(J * QQ), aug_actions))  # (n, J_aug)
    a_dig = digits // np.asarray(nodes)[:, None]
    q_dig = digits % np.asarray(nodes)[:, None]
    j_of_c = np.ravel_multi_index(tuple(a_dig), mdp.n_actions).astype(np.int64)
    qn_of_c = np.ravel_multi_index(tuple(q_dig), nodes).astype(np.int64)

    src_row = (x_of[:, None] * J + j_of_c[None, :]).ravel()  # original row of every augmented row
    lo = mdp.indptr[src_row]
    counts = mdp.indptr[src_row + 1] - lo
    indptr = np.zeros(src_row.size + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    take = np.repeat(lo - indptr[:-1], counts) + np.arange(indptr[-1])
    written = np.repeat(np.tile(qn_of_c, codes.size), counts)
    indices = index[mdp.indices[take] * QQ + written]
    probs = mdp.probs[take]
    rewards = mdp.rewards[x_of][:, j_of_c]
    mu = mdp.mu[x_of] * (qcode == 0)
    obs = [q_of[i] * mdp.n_obs[i] + mdp.obs[i][x_of] for i in range(n)]
    n_obs = [q * o for q, o in zip(nodes, mdp.n_obs, strict=True)]

    obs_names = [[f"q{q}:{name}" for q in range(nodes[i]) for name in _names(mdp.obs_names, i, mdp.n_obs[i])]
                 for i in range(n)]
    action_names = [[f"{name}>q{q}" for name in _names(mdp.action_names, i, mdp.n_actions[i]) for q in range(nodes[i])]
                    for i in range(n)]
    state_names = None
    if mdp.state_names is not None and codes.size <= STATE_NAMES_MAX:
        state_names = [f"{mdp.state_names[x]}|q=" + ",".join(str(int(q)) for q in q_of[:, s])
                       for s, x in enumerate(x_of)]
    base = JointMDP.from_sparse(indptr, indices, probs, rewards, obs, aug_actions, mu, mdp.gamma, n_obs=n_obs,
                                state_names=state_names, agent_names=mdp.agent_names,
                                action_names=action_names, obs_names=obs_names)
    del indptr, indices, probs, take, written
    return MemoryMDP(**{f.name: getattr(base, f.name) for f in fields(JointMDP)}, nodes=nodes,
                     base_n_obs=tuple(mdp.n_obs), base_n_actions=tuple(mdp.n_actions),
                     base_state=x_of, node_of_state=q_of,
                     base_obs_names=tuple(tuple(_names(mdp.obs_names, i, mdp.n_obs[i])) for i in range(n)),
                     base_action_names=tuple(tuple(_names(mdp.action_names, i, mdp.n_actions[i])) for i in range(n)))


def _names(names, i: int, count: int) -> list[str]:
    return list(names[i]) if names is not None else [str(v) for v in range(count)]


@dataclass(frozen=True, eq=False, repr=False)
class MemoryMDP(JointMDP):
    r"""The augmented joint MDP of finite-state controllers (built by :func:`with_memory`).

    A :class:`JointMDP` in every respect (every estimator, search and trainer takes it); it
    also keeps the layout, so a policy of it reads as controllers.

    Attributes
    ----------
    nodes : tuple of int
        :math:`Q_i` per agent.
    base_n_obs, base_n_actions : tuple of int
        The original model's :math:`O_i` and :math:`A_i`.
    base_state : ndarray, shape (N,)
        The original state :math:`x` of every augmented state.
    node_of_state : ndarray, shape (n, N)
        ``node_of_state[i, s]`` is agent ``i``'s node :math:`q_i` in augmented state ``s``.
    base_obs_names, base_action_names : tuple of tuple of str
        The original observation and action names (indices as strings when it had none).
    """

    nodes: tuple[int, ...] = ()
    base_n_obs: tuple[int, ...] = ()
    base_n_actions: tuple[int, ...] = ()
    base_state: np.ndarray | None = None
    node_of_state: np.ndarray | None = None
    base_obs_names: tuple[tuple[str, ...], ...] | None = None
    base_action_names: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        put = object.__setattr__
        n, N = self.n_agents, self.n_states
        nodes = check_nodes(self.nodes, n)
        put(self, "nodes", nodes)
        for name in ("base_n_obs", "base_n_actions"):
            vals = tuple(int(v) for v in getattr(self, name))
            if len(vals) != n or min(vals) < 1:
                raise ValueError(f"{name} must give one count >= 1 per agent ({n}); got {vals}")
            put(self, name, vals)
        for i in range(n):
            if self.n_obs[i] != nodes[i] * self.base_n_obs[i] or self.n_actions[i] != self.base_n_actions[i] * nodes[i]:
                raise ValueError(f"agent {i}: n_obs {self.n_obs[i]} and n_actions {self.n_actions[i]} must be "
                                 f"nodes * base_n_obs = {nodes[i] * self.base_n_obs[i]} and "
                                 f"base_n_actions * nodes = {self.base_n_actions[i] * nodes[i]}")
        x = real_array("base_state", self.base_state, dtype=np.int64)
        q = real_array("node_of_state", self.node_of_state, dtype=np.int64)
        if x.shape != (N,) or q.shape != (n, N):
            raise ValueError(f"base_state and node_of_state must have shapes ({N},) and ({n}, {N}); "
                             f"got {x.shape} and {q.shape}")
        for i in range(n):
            if not np.array_equal(self.obs[i] // self.base_n_obs[i], q[i]):
                s = int(np.flatnonzero(self.obs[i] // self.base_n_obs[i] != q[i])[0])
                raise ValueError(f"obs[{i}][{s}] = {int(self.obs[i][s])} does not encode node "
                                 f"node_of_state[{i}, {s}] = {int(q[i, s])} (observation q * O_i + o)")
        x.setflags(write=False)
        q.setflags(write=False)
        put(self, "base_state", x)
        put(self, "node_of_state", q)
        for name, counts in (("base_obs_names", self.base_n_obs), ("base_action_names", self.base_n_actions)):
            vals = getattr(self, name)
            vals = (tuple(tuple(str(v) for v in range(c)) for c in counts) if vals is None
                    else tuple(tuple(str(v) for v in lst) for lst in vals))
            if len(vals) != n or any(len(v) != c for v, c in zip(vals, counts, strict=True)):
                raise ValueError(f"{name} must give {list(counts)} names per agent")
            put(self, name, vals)

    def __repr__(self) -> str:
        return (f"MemoryMDP(nodes={list(self.nodes)}, n_states={self.n_states}, n_agents={self.n_agents}, "
                f"n_actions={self.n_actions} (= A_i * Q_i), n_obs={self.n_obs} (= Q_i * O_i), "
                f"transitions={self.probs.size}, gamma={self.gamma})")

    # ------------------------------------------------------------- encoding
    def slot(self, agent: int, node: int, observation: int) -> int:
        """Augmented observation id :math:`q O_i + o` of agent ``agent``."""
        return int(node) * self.base_n_obs[agent] + int(observation)

    def choice(self, agent: int, action: int, next_node: int) -> int:
        """Augmented action id :math:`a Q_i + q'` of agent ``agent``."""
        return int(action) * self.nodes[agent] + int(next_node)

    def controller(self, policy) -> list[np.ndarray]:
        r"""The controller tables of a policy of this model.

        Parameters
        ----------
        policy : Policy or sequence of arrays
            One table of shape ``(Q_i O_i, A_i Q_i)`` per agent.

        Returns
        -------
        list of ndarray
            ``T[i][q, o, a, q'] = theta_i[q O_i + o, a Q_i + q']``, shape ``(Q_i, O_i, A_i, Q_i)``
            (new arrays; the values are copied, not recomputed).
        """
        tables = self._tables("policy", getattr(policy, "theta", policy), self.n_obs, self.n_actions)
        return [t.reshape(self._shape(i)).copy() for i, t in enumerate(tables)]

    def augmented_tables(self, controller) -> list[np.ndarray]:
        r"""The inverse of :meth:`controller`: one ``(Q_i O_i, A_i Q_i)`` table per agent, for
        ``Policy.from_arrays(model, tables)``."""
        shapes = [self._shape(i) for i in range(self.n_agents)]
        tables = check_sequence("controller", controller, self.n_agents)
        out = []
        for i, (t, shape) in enumerate(zip(tables, shapes, strict=True)):
            t = real_array(f"controller[{i}]", t)
            if t.shape != shape:
                raise ValueError(f"controller[{i}] must have shape {shape} (Q_i, O_i, A_i, Q_i); got {t.shape}")
            out.append(t.reshape(self.n_obs[i], self.n_actions[i]))
        return out

    def factored_tables(self, psi, eta) -> list[np.ndarray]:
        r"""Augmented tables of a factored Mealy controller:
        :math:`\theta_i[(q, o), (a, q')] = \psi_i(a \mid q, o)\, \eta_i(q' \mid q, o, a)`.

        ``psi[i]`` has shape ``(Q_i, O_i, A_i)``, ``eta[i]`` shape ``(Q_i, O_i, A_i, Q_i)``.
        """
        psi = check_sequence("psi", psi, self.n_agents)
        eta = check_sequence("eta", eta, self.n_agents)
        joint = []
        for i, (p, e) in enumerate(zip(psi, eta, strict=True)):
            shape = self._shape(i)
            p, e = real_array(f"psi[{i}]", p), real_array(f"eta[{i}]", e)
            if p.shape != shape[:3] or e.shape != shape:
                raise ValueError(f"psi[{i}] and eta[{i}] must have shapes {shape[:3]} and {shape}; "
                                 f"got {p.shape} and {e.shape}")
            joint.append(p[..., None] * e)
        return self.augmented_tables(joint)

    def moore_tables(self, psi, eta, *, start_obs=None) -> list[np.ndarray]:
        r"""Augmented tables that play Moore controllers exactly (the form of NLP, DEC-BPI, EM).

        A Moore controller of agent :math:`i` has :math:`M_i` nodes, starts in node 0, plays
        :math:`a \sim \psi_i(\cdot \mid m)` and, after the next observation :math:`o'`, moves to
        :math:`m' \sim \eta_i(\cdot \mid m, a, o')`. It needs ``nodes[i] = M_i * A_i`` here: node
        :math:`m A_i + a` remembers the Moore node and the action just played. At the ``start``
        observation (time 0) the controller plays :math:`\psi_i(\cdot \mid 0)`; at slot
        :math:`(m A_i + a, o)` it draws :math:`m' \sim \eta_i(\cdot \mid m, a, o)`, then
        :math:`a' \sim \psi_i(\cdot \mid m')`, and writes node :math:`m' A_i + a'`:
        :math:`\theta_i[(m A_i + a, o), (a', m'' A_i + a'')] = \eta_i(m'' \mid m, a, o)\,
        \psi_i(a' \mid m'')\,[a'' = a']`.

        Parameters
        ----------
        psi : sequence of array_like
            ``psi[i]`` shape ``(M_i, A_i)``.
        eta : sequence of array_like
            ``eta[i]`` shape ``(M_i, A_i, O_i, M_i)`` (``O_i`` the original model's observations).
        start_obs : sequence of int, optional
            The observation every agent has at time 0 only; default the last one when the
            model's observation names end with ``"start"`` (a ``.dpomdp`` model, SPEC §6).
        """
        n = self.n_agents
        psi = check_sequence("psi", psi, n)
        eta = check_sequence("eta", eta, n)
        if start_obs is None:
            if not all(names and names[-1] == "start" for names in self.base_obs_names):
                raise ValueError("start_obs is needed: the model has no 'start' observation (a Moore controller "
                                 "acts before its first observation)")
            start_obs = [c - 1 for c in self.base_n_obs]
        start_obs = check_sequence("start_obs", start_obs, n)
        out = []
        for i in range(n):
            A, n_o, Q = self.base_n_actions[i], self.base_n_obs[i], self.nodes[i]
            if Q % A:
                raise ValueError(f"nodes[{i}] = {Q} must be M * A_{i} = M * {A} for a Moore controller "
                                 f"(node m * A + a remembers the Moore node and the last action)")
            M = Q // A
            p, e = real_array(f"psi[{i}]", psi[i]), real_array(f"eta[{i}]", eta[i])
            if p.shape != (M, A) or e.shape != (M, A, n_o, M):
                raise ValueError(f"psi[{i}] and eta[{i}] must have shapes {(M, A)} and {(M, A, n_o, M)}; "
                                 f"got {p.shape} and {e.shape}")
            s = int(start_obs[i])
            if not 0 <= s < n_o:
                raise ValueError(f"start_obs[{i}] = {s} is out of range 0..{n_o - 1}")
            T = np.zeros((M, A, n_o, A, M, A))  # (m, a, o, a', m'', a'')
            step = np.einsum("maon,nb->maobn", e, p)  # eta(m''|m, a, o) psi(a'|m'')
            idx = np.arange(A)
            T[:, :, :, idx, :, idx] = np.moveaxis(step, 3, 0)  # a'' = a'
            T[:, :, s] = 0.0
            for a in range(A):  # time 0: psi(.|0), node (0, a')
                T[:, :, s, a, 0, a] = p[0, a]
            out.append(T.reshape(Q, n_o, A, Q))
        return self.augmented_tables(out)

    def lift(self, policy) -> list[np.ndarray]:
        r"""Augmented tables of a memoryless policy of the original model played in every node
        with the node kept: :math:`\theta_i[(q, o), (a, q')] = \pi_i(a \mid o)\,[q' = q]`.

        Its value equals the memoryless policy's value (only node 0 is ever visited); use it
        to start ascent from a memoryless solution.
        """
        tables = self._tables("policy", getattr(policy, "theta", policy), self.base_n_obs, self.base_n_actions)
        out = []
        for t, Q in zip(tables, self.nodes, strict=True):
            T = np.zeros((Q, t.shape[0], t.shape[1], Q))
            for q in range(Q):
                T[q, :, :, q] = t
            out.append(T)
        return self.augmented_tables(out)

    def used_slots(self) -> list[np.ndarray]:
        """``used[i][q, o]``: True when agent ``i`` sees slot ``(q, o)`` in some reachable state."""
        out = []
        for i in range(self.n_agents):
            u = np.zeros(self.n_obs[i], bool)
            u[self.obs[i]] = True
            out.append(u.reshape(self.nodes[i], self.base_n_obs[i]))
        return out

    def describe(self, policy, *, tol: float = 1e-9, all_slots: bool = False) -> str:
        """The controllers of a policy as text: per agent, per node and observation, the
        choices ``action -> next node`` with probability above ``tol`` (slots never seen in a
        reachable state are left out unless ``all_slots``)."""
        ctrl = self.controller(policy)
        used = self.used_slots()
        agents = self.agent_names or tuple(f"agent {i}" for i in range(self.n_agents))
        lines = []
        for i, T in enumerate(ctrl):
            lines.append(f"{agents[i]} ({self.nodes[i]} nodes):")
            for q in range(self.nodes[i]):
                for o in range(self.base_n_obs[i]):
                    if not (all_slots or used[i][q, o]):
                        continue
                    a_idx, q_idx = np.nonzero(T[q, o] > tol)
                    parts = [f"{self.base_action_names[i][a]} -> q{qn}"
                             + ("" if abs(T[q, o, a, qn] - 1.0) <= tol else f" ({T[q, o, a, qn]:.3f})")
                             for a, qn in zip(a_idx, q_idx, strict=True)]
                    lines.append(f"  q{q}, {self.base_obs_names[i][o]}: " + (", ".join(parts) or "-"))
        return "\n".join(lines)

    def _shape(self, i: int) -> tuple[int, int, int, int]:
        """``(Q_i, O_i, A_i, Q_i)``: the shape of agent ``i``'s controller table."""
        return self.nodes[i], self.base_n_obs[i], self.base_n_actions[i], self.nodes[i]

    def _tables(self, name, tables, n_obs, n_actions) -> list[np.ndarray]:
        tables = check_sequence(name, tables, self.n_agents)
        out = []
        for i, t in enumerate(tables):
            t = real_array(f"{name}[{i}]", t)
            if t.shape != (n_obs[i], n_actions[i]):
                raise ValueError(f"{name}[{i}] must have shape ({n_obs[i]}, {n_actions[i]}); got {t.shape}")
            out.append(t)
        return out
