r"""Load MADP ``.dpomdp`` Dec-POMDP files as joint MDPs (SPEC §6).

A Dec-POMDP has hidden states :math:`s`, joint actions :math:`a`, transition
:math:`T(s' \mid s, a)`, joint observations :math:`o` with :math:`O(o \mid a, s')` (observed
after each step) and rewards :math:`R(s, a, s', o)`. Its memoryless decentralized policies
act on each agent's most recent observation, so the observations are folded into the
state: the joint MDP's state is :math:`(s, o_0, \dots, o_{n-1})`, with the extra symbol
``start`` (index :math:`|\Omega_i|`) held by every agent at :math:`t = 0`, and

.. math::

    P((s', o') \mid (s, o), a) = T(s' \mid s, a)\, O(o' \mid a, s'), \qquad
    r((s, o), a) = \sum_{s', o'} T\, O\, R(s, a, s', o'), \qquad
    \phi_i((s, o)) = o_i .

Only states reachable from the start distribution are kept.

The parser follows the syntax documented in the MADP Toolbox's ``example.dpomdp``:
``agents`` (count or names), ``discount``, ``values`` (reward or cost), ``states``,
``start`` (vector, ``uniform``, one state, ``include``/``exclude``), ``actions`` and
``observations`` (a count or names per agent), then ``T``, ``O`` and ``R`` entries as single
values, row vectors, matrices, ``uniform`` or ``identity``, with ``*`` wildcards and joint
actions/observations given by components (names or indices) or by joint index. Later
entries overwrite earlier ones. The loader is strict: any malformed line raises
``ValueError`` naming the file, the line number and what was expected. Probability rows
(``T``, ``O``, ``start``) must sum to one within ``Settings.dpomdp_prob_tol`` (1e-6: files
print a few digits) and are then rescaled to sum to one exactly; sizes (agents, states,
actions, observations) are checked before anything of that size is built.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..settings import current
from .joint_mdp import JointMDP

__all__ = ["load_dpomdp", "parse_dpomdp", "DecPOMDP", "dpomdp_names", "dpomdp_path"]

#: Suffixes of .dpomdp files (plain or gzip-compressed).
_SUFFIXES = (".dpomdp.gz", ".dpomdp")

#: Most agents a file may declare (joint indices are mixed-radix numbers over the agents).
MAX_AGENTS = 32

# Limits (read at call time): Settings.dpomdp_max_dense_entries refuses models whose dense
# arrays J*N*N or J*N*|O| would hold more entries; Settings.dpomdp_prob_tol is the tolerance on
# T and O rows summing to one.

_HEADER = ("agents", "discount", "values", "states", "start", "actions", "observations")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


class _Lines:
    """Non-blank, non-comment lines with their 1-based line numbers."""

    def __init__(self, text: str, name: str):
        self.name = name
        self.items = []
        for no, raw in enumerate(text.splitlines(), start=1):
            s = raw.strip()
            if s and not s.startswith("#"):
                self.items.append((no, s))
        self.pos = 0

    def error(self, what: str, no: int | None = None) -> ValueError:
        if no is None:
            no = self.items[min(self.pos, len(self.items) - 1)][0] if self.items else 0
        return ValueError(f"{self.name}:{no}: {what}")

    def peek(self):
        return self.items[self.pos] if self.pos < len(self.items) else (None, None)

    def next(self, what: str):
        if self.pos >= len(self.items):
            last = self.items[-1][0] if self.items else 0
            raise ValueError(f"{self.name}:{last}: unexpected end of file; expected {what}")
        item = self.items[self.pos]
        self.pos += 1
        return item


def _float(tok: str, lines: _Lines, no: int, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise lines.error(f"expected {what} (a number), got {tok!r}", no) from None
    if not np.isfinite(v):
        raise lines.error(f"expected a finite {what}, got {tok!r}", no)
    return v


def _floats(toks, count: int, lines: _Lines, no: int, what: str) -> np.ndarray:
    if len(toks) != count:
        raise lines.error(f"expected {count} numbers ({what}), got {len(toks)}", no)
    return np.array([_float(t, lines, no, what) for t in toks])


def _int(tok: str, lines: _Lines, no: int, what: str) -> int:
    if not re.fullmatch(r"\d+", tok):
        raise lines.error(f"expected {what} (a non-negative integer), got {tok!r}", no)
    return int(tok)


def _names_or_count(toks, lines: _Lines, no: int, what: str, prefix: str, limit: int) -> tuple[str, ...]:
    if not toks:
        raise lines.error(f"expected a count or a list of {what}", no)
    if len(toks) == 1 and re.fullmatch(r"\d+", toks[0]):
        count = int(toks[0])
        if count < 1:
            raise lines.error(f"expected at least one {what[:-1]}, got {count}", no)
        if count > limit:
            raise lines.error(f"{count:,} {what} are more than this loader handles ({limit:,}; see "
                              "MAX_AGENTS and Settings.dpomdp_max_dense_entries)", no)
        return tuple(f"{prefix}{i}" for i in range(count))
    for t in toks:
        if not _IDENT.match(t):
            raise lines.error(f"expected {what} names (letter then letters, digits, '-', '_'), got {t!r}", no)
    if len(set(toks)) != len(toks):
        raise lines.error(f"duplicate names among {what}", no)
    if len(toks) > limit:
        raise lines.error(f"{len(toks):,} {what} are more than this loader handles ({limit:,})", no)
    return tuple(toks)


def _index(tok: str, names, lines: _Lines, no: int, what: str) -> int:
    if re.fullmatch(r"\d+", tok):
        i = int(tok)
        if i >= len(names):
            raise lines.error(f"{what} index {i} is out of range (0..{len(names) - 1})", no)
        return i
    try:
        return names.index(tok)
    except ValueError:
        raise lines.error(f"unknown {what} {tok!r}", no) from None


def _select(tok: str, names, lines, no, what) -> np.ndarray:
    if tok == "*":
        return np.arange(len(names))
    return np.array([_index(tok, names, lines, no, what)])


def _joint(toks, names_per_agent, lines: _Lines, no: int, what: str) -> np.ndarray:
    """Joint indices (agent 0 most significant) of a joint action/observation spec."""
    sizes = [len(x) for x in names_per_agent]
    total = int(np.prod(sizes))
    n = len(sizes)
    if not toks:
        raise lines.error(f"expected a joint {what}", no)
    if len(toks) == 1 and n > 1:
        if toks[0] == "*":
            return np.arange(total)
        j = _int(toks[0], lines, no, f"joint {what} index")
        if j >= total:
            raise lines.error(f"joint {what} index {j} is out of range (0..{total - 1})", no)
        return np.array([j])
    if len(toks) != n:
        raise lines.error(f"expected one {what} per agent ({n}) or a joint index, got {len(toks)} tokens", no)
    parts = [_select(t, names_per_agent[i], lines, no, f"{what} of agent {i}") for i, t in enumerate(toks)]
    grids = np.meshgrid(*parts, indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grids), sizes)


@dataclass
class DecPOMDP:
    """A parsed Dec-POMDP (dense arrays; joint indices with agent 0 most significant).

    ``T[a, s, s']``, ``O[a, s', o]``, ``R3[a, s, s']`` (reward when it does not depend on
    the observation) and ``R_obs[(a, s, s')]`` (per-observation reward vectors where it does).
    """

    name: str
    agent_names: tuple[str, ...]
    discount: float
    state_names: tuple[str, ...]
    action_names: tuple[tuple[str, ...], ...]
    obs_names: tuple[tuple[str, ...], ...]
    start: np.ndarray
    T: np.ndarray
    O: np.ndarray  # noqa: E741 - the model's name
    R3: np.ndarray
    R_obs: dict

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def expected_reward(self) -> np.ndarray:
        r"""``r[s, a] = sum_{s', o} T O R``, shape (N, J)."""
        r = np.einsum("ast,ast->sa", self.T, self.R3)
        for (a, s, t), vec in self.R_obs.items():
            r[s, a] += self.T[a, s, t] * (self.O[a, t] @ vec - self.R3[a, s, t])
        return r


def _matrix_or_keyword(lines: _Lines, rows: int, cols: int, what: str, allow_identity: bool):
    no, s = lines.next(what)
    if s == "uniform":
        return np.full((rows, cols), 1.0 / cols)
    if s == "identity":
        if not allow_identity or rows != cols:
            raise lines.error(f"'identity' is not valid here; expected {what}", no)
        return np.eye(rows)
    out = np.empty((rows, cols))
    out[0] = _floats(s.split(), cols, lines, no, what)
    for r in range(1, rows):
        no, s = lines.next(what)
        out[r] = _floats(s.split(), cols, lines, no, what)
    return out


def _vector_or_keyword(lines: _Lines, cols: int, what: str):
    no, s = lines.next(what)
    if s == "uniform":
        return np.full(cols, 1.0 / cols)
    return _floats(s.split(), cols, lines, no, what)


def _header(lines: _Lines, key: str):
    no, s = lines.next(f"'{key}:'")
    m = re.match(r"^([a-z]+)(\s+(include|exclude))?\s*:(.*)$", s)
    if not m or m.group(1) != key or (m.group(3) and key != "start"):
        order = ", ".join(_HEADER)
        raise lines.error(f"expected '{key}:' (the header entries come in the order {order}), got {s!r}", no)
    return no, m.group(3), m.group(4).split()


def parse_dpomdp(text: str, name: str = "<string>") -> DecPOMDP:
    """Parse the text of a ``.dpomdp`` file (see the module docstring)."""
    lines = _Lines(text, name)
    try:
        return _parse(lines)
    except ValueError:
        raise
    except (IndexError, KeyError, TypeError, OverflowError, MemoryError) as exc:  # last-resort context
        raise lines.error(f"could not parse ({type(exc).__name__}: {exc})") from exc


def _per_agent(lines: _Lines, key: str, n: int, prefix: str) -> list[tuple[str, ...]]:
    """``key:`` followed by one line per agent, each a count or a list of names."""
    _, _, toks = _header(lines, key)
    if toks:
        raise lines.error(f"expected the {key} of each agent on the lines after '{key}:'")
    out = []
    for i in range(n):
        no, s = lines.next(f"the {key} of agent {i}")
        out.append(_names_or_count(s.split(), lines, no, key, prefix, current().dpomdp_max_dense_entries))
    return out


def _parse(lines: _Lines) -> DecPOMDP:
    no, _, toks = _header(lines, "agents")
    agents = _names_or_count(toks, lines, no, "agents", "agent", MAX_AGENTS)
    n = len(agents)
    no, _, toks = _header(lines, "discount")
    if len(toks) != 1:
        raise lines.error("expected one number after 'discount:'", no)
    discount = _float(toks[0], lines, no, "discount")
    no, _, toks = _header(lines, "values")
    if toks not in (["reward"], ["cost"]):
        raise lines.error(f"expected 'values: reward' or 'values: cost', got {' '.join(toks)!r}", no)
    sign = 1.0 if toks == ["reward"] else -1.0
    no, _, toks = _header(lines, "states")
    states = _names_or_count(toks, lines, no, "states", "s", math.isqrt(current().dpomdp_max_dense_entries))
    N = len(states)

    no, mode, toks = _header(lines, "start")
    if mode is not None:
        if not toks:
            raise lines.error(f"expected states after 'start {mode}:'", no)
        chosen = np.zeros(N, bool)
        for t in toks:
            chosen[_index(t, states, lines, no, "state")] = True
        if mode == "exclude":
            chosen = ~chosen
        if not chosen.any():
            raise lines.error("the start distribution excludes every state", no)
        start = chosen / chosen.sum()
    elif not toks:
        start = _vector_or_keyword(lines, N, "the start distribution (N probabilities or 'uniform')")
    elif len(toks) == 1 and toks[0] == "uniform":
        start = np.full(N, 1.0 / N)
    elif len(toks) == 1 and (toks[0] in states or re.fullmatch(r"\d+", toks[0])) and not (N == 1 and "." in toks[0]):
        start = np.zeros(N)
        start[_index(toks[0], states, lines, no, "state")] = 1.0
    else:
        start = _floats(toks, N, lines, no, "start probabilities")
    prob_tol = current().dpomdp_prob_tol
    if np.any(start < 0) or abs(start.sum() - 1.0) > prob_tol:
        raise lines.error(
            f"the start distribution must be non-negative and sum to 1; it sums to {float(start.sum())!r}", no)

    actions = _per_agent(lines, "actions", n, "a")
    observations = _per_agent(lines, "observations", n, "o")
    J = math.prod(len(a) for a in actions)
    JO = math.prod(len(o) for o in observations)
    max_dense = current().dpomdp_max_dense_entries
    if J * N * max(N, JO) > max_dense:
        raise lines.error(
            f"model too large for the dense loader: {J} joint actions x {N} states x {max(N, JO)} "
            f"(more than Settings.dpomdp_max_dense_entries={max_dense:,})"
        )

    T = np.zeros((J, N, N))
    O = np.zeros((J, N, JO))  # noqa: E741
    R3 = np.zeros((J, N, N))
    R_obs: dict = {}
    t_line = np.zeros((J, N), np.int64)  # line that last wrote each T row (0: never)
    o_line = np.zeros((J, N), np.int64)

    while lines.peek()[0] is not None:
        no, s = lines.next("an entry")
        m = re.match(r"^([TOR])\s*:(.*)$", s)
        if not m:
            raise lines.error(f"expected an entry starting with 'T:', 'O:' or 'R:', got {s!r}", no)
        kind, fields = m.group(1), [f.split() for f in m.group(2).split(":")]
        if kind == "T":
            _entry_T(lines, no, fields, actions, states, T, t_line)
        elif kind == "O":
            _entry_O(lines, no, fields, actions, observations, states, O, o_line)
        else:
            _entry_R(lines, no, fields, actions, observations, states, R3, R_obs, JO, sign)

    for what, arr, written in (("T", T, t_line), ("O", O, o_line)):
        cond = "start state" if what == "T" else "end state"
        if np.any(arr < 0):
            a, s, t = (int(x) for x in np.argwhere(arr < 0)[0])
            raise lines.error(f"{what} has a negative probability {float(arr[a, s, t])!r} "
                              f"(joint action {a}, {cond} {states[s]!r})", int(written[a, s]))
        sums = arr.sum(axis=2)
        bad = np.argwhere(np.abs(sums - 1.0) > prob_tol)
        if bad.size:
            a, s = (int(x) for x in bad[0])
            hint = "" if written[a, s] else " (never specified)"
            raise lines.error(
                f"{what} row for joint action {a}, {cond} {states[s]!r} sums to {float(sums[a, s])!r}{hint}; "
                f"expected 1 (within {prob_tol:g})", int(written[a, s]) or None
            )
    # files print probabilities to a few digits: rows that passed the check above (within
    # Settings.dpomdp_prob_tol) are rescaled to sum to one, as the joint MDP requires (1e-9)
    T /= T.sum(axis=2, keepdims=True)
    O /= O.sum(axis=2, keepdims=True)  # noqa: E741
    start = start / start.sum()
    return DecPOMDP(lines.name, agents, discount, states, tuple(actions), tuple(observations), start,
                    T, O, R3, R_obs)


def _assign(arr, idx, value):
    arr[np.ix_(*idx)] = value


def _entry_T(lines, no, fields, actions, states, T, t_line):
    N = len(states)
    nf = len(fields)
    if nf == 4 and fields[3]:
        a = _joint(fields[0], actions, lines, no, "action")
        s = _sel1(fields[1], states, lines, no)
        t = _sel1(fields[2], states, lines, no)
        _assign(T, (a, s, t), _float(_one(fields[3], lines, no, "probability"), lines, no, "probability"))
    elif nf == 3 and not fields[2]:
        a = _joint(fields[0], actions, lines, no, "action")
        s = _sel1(fields[1], states, lines, no)
        _assign(T, (a, s, np.arange(N)), _vector_or_keyword(lines, N, f"a row of {N} transition probabilities"))
    elif nf == 2 and not fields[1]:
        a = _joint(fields[0], actions, lines, no, "action")
        M = _matrix_or_keyword(lines, N, N, f"a {N} x {N} transition matrix, 'uniform' or 'identity'", True)
        T[a] = M
        s = np.arange(N)
    else:
        raise lines.error("expected 'T: <a> : <s> : <s'> : <p>', 'T: <a> : <s> :' + row, or 'T: <a> :' + matrix", no)
    t_line[np.ix_(a, s)] = no


def _entry_O(lines, no, fields, actions, observations, states, O, o_line):  # noqa: E741
    N, JO = len(states), O.shape[2]
    nf = len(fields)
    if nf == 4 and fields[3]:
        a = _joint(fields[0], actions, lines, no, "action")
        t = _sel1(fields[1], states, lines, no)
        o = _joint(fields[2], observations, lines, no, "observation")
        _assign(O, (a, t, o), _float(_one(fields[3], lines, no, "probability"), lines, no, "probability"))
    elif nf == 3 and not fields[2]:
        a = _joint(fields[0], actions, lines, no, "action")
        t = _sel1(fields[1], states, lines, no)
        _assign(O, (a, t, np.arange(JO)), _vector_or_keyword(lines, JO, f"a row of {JO} observation probabilities"))
    elif nf == 2 and not fields[1]:
        a = _joint(fields[0], actions, lines, no, "action")
        O[a] = _matrix_or_keyword(lines, N, JO, f"a {N} x {JO} observation matrix or 'uniform'", False)
        t = np.arange(N)
    else:
        raise lines.error("expected 'O: <a> : <s'> : <o> : <p>', 'O: <a> : <s'> :' + row, or 'O: <a> :' + matrix", no)
    o_line[np.ix_(a, t)] = no


def _entry_R(lines, no, fields, actions, observations, states, R3, R_obs, JO, sign):
    N = len(states)
    nf = len(fields)
    a = _joint(fields[0], actions, lines, no, "action") if nf >= 3 else None
    if nf == 5 and fields[4]:
        s = _sel1(fields[1], states, lines, no)
        t = _sel1(fields[2], states, lines, no)
        v = sign * _float(_one(fields[4], lines, no, "reward"), lines, no, "reward")
        if fields[3] == ["*"]:
            _assign(R3, (a, s, t), v)
            for key, vec in R_obs.items():
                if key[0] in a and key[1] in s and key[2] in t:
                    vec[:] = v
        else:
            o = _joint(fields[3], observations, lines, no, "observation")
            _set_obs_rewards(R3, R_obs, a, s, t, lambda vec: vec.__setitem__(o, v), JO)
    elif nf == 4 and not fields[3]:
        s = _sel1(fields[1], states, lines, no)
        t = _sel1(fields[2], states, lines, no)
        rno, rtext = lines.next(f"a row of {JO} rewards")
        row = sign * _floats(rtext.split(), JO, lines, rno, "rewards")
        _set_obs_rewards(R3, R_obs, a, s, t, lambda vec: vec.__setitem__(slice(None), row), JO)
    elif nf == 3 and not fields[2]:
        s = _sel1(fields[1], states, lines, no)
        M = sign * _matrix_or_keyword(lines, N, JO, f"a {N} x {JO} reward matrix", False)
        for t in range(N):
            _set_obs_rewards(R3, R_obs, a, s, np.array([t]), lambda vec, t=t: vec.__setitem__(slice(None), M[t]), JO)
    else:
        raise lines.error(
            "expected 'R: <a> : <s> : <s'> : <o> : <r>', 'R: <a> : <s> : <s'> :' + row, or 'R: <a> : <s> :' + matrix",
            no,
        )


def _set_obs_rewards(R3, R_obs, a, s, t, update, JO):
    """Apply ``update`` to the per-observation reward vector of every (a, s, s') key."""
    for key in ((int(x), int(y), int(z)) for x in a for y in s for z in t):
        vec = R_obs.get(key)
        if vec is None:
            vec = np.full(JO, R3[key])
            R_obs[key] = vec
        update(vec)


def _sel1(field, states, lines, no):
    return _select(_one(field, lines, no, "state"), states, lines, no, "state")


def _one(field, lines, no, what):
    if len(field) != 1:
        raise lines.error(f"expected one {what}, got {' '.join(field) or 'nothing'!r}", no)
    return field[0]


def _shipped() -> dict:
    """The benchmark problems shipped in ``marl_kstep/data/dpomdp``: name -> resource."""
    folder = resources.files("marl_kstep").joinpath("data", "dpomdp")
    out = {}
    if folder.is_dir():
        for item in folder.iterdir():
            for suffix in _SUFFIXES:
                if item.name.endswith(suffix):
                    out[item.name[: -len(suffix)]] = item
                    break
    return out


def dpomdp_names() -> list[str]:
    """Names of the shipped benchmark problems, each loadable as ``load_dpomdp(name)``
    (see ``marl_kstep/data/dpomdp/README.md``)."""
    return sorted(_shipped(), key=str.lower)


def dpomdp_path(path) -> Path:
    """The file :func:`load_dpomdp` reads for ``path``: a shipped problem's file for a bare name
    (``"dectiger"``), else the path itself (a ``ValueError`` for an unknown name)."""
    if _is_name(path):
        shipped = _shipped()
        if path not in shipped:
            raise ValueError(f"no shipped .dpomdp problem is named {path!r}; the shipped problems are "
                             f"{', '.join(dpomdp_names())} (pass a path, e.g. {'./' + path!r}, to load a file)")
        return Path(str(shipped[path]))
    return Path(path)


def _is_name(path) -> bool:
    """A bare problem name: a ``str`` with no folder part and no ``.dpomdp`` suffix."""
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (isinstance(path, str) and path not in ("", ".", "..") and not any(c in path for c in seps)
            and not path.endswith(_SUFFIXES))


def load_dpomdp(path, gamma: float | None = None, *, max_states: int = 500_000) -> JointMDP:
    r"""Load a ``.dpomdp`` (or ``.dpomdp.gz``) file as the observation-augmented joint MDP.

    Parameters
    ----------
    path : str or Path
        A file, or the name of a shipped benchmark problem (a ``str`` without folder or
        ``.dpomdp`` suffix, e.g. ``"dectiger"``; :func:`dpomdp_names` lists them). Pass a path
        (``"./dectiger"``, a ``Path``) for a local file whose name has no suffix.
    gamma : float, optional
        Discount; overrides the file's. A file discount >= 1 needs an explicit ``gamma``.
    max_states : int
        Refuse when more augmented states are reachable.

    Returns
    -------
    JointMDP
        States ``(s, o_0, ..., o_{n-1})`` reachable from the start, named ``"s|o_0,o_1"``;
        agent ``i`` observes ``o_i`` (``start`` is observation ``|Omega_i|``); action and
        observation names are kept.
    """
    if _is_name(path):
        shipped = _shipped()
        if path not in shipped:
            raise ValueError(f"no shipped .dpomdp problem is named {path!r}; the shipped problems are "
                             f"{', '.join(dpomdp_names())} (pass a path, e.g. {'./' + path!r}, to load a file)")
        path = shipped[path]
    elif not isinstance(path, str | os.PathLike) or path == "":
        raise ValueError(f"path must be a file path or a problem name; got {path!r}")
    else:
        path = Path(path)
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, ValueError) as exc:
        stem = next((path.name[: -len(x)] for x in _SUFFIXES if path.name.endswith(x)), None)
        hint = f"; the shipped problem is load_dpomdp({stem!r})" if stem in _shipped() else ""
        raise ValueError(f"{path.name}: cannot read the file ({exc}){hint}") from exc
    dec = parse_dpomdp(text, path.name)
    return augment(dec, gamma, max_states=max_states)


def augment(dec: DecPOMDP, gamma: float | None = None, *, max_states: int = 500_000) -> JointMDP:
    """The joint MDP over (state, last joint observation) of SPEC §6."""
    if gamma is None:
        if not 0.0 <= dec.discount < 1.0:
            raise ValueError(
                f"{dec.name}: the file's discount is {dec.discount!r}; infinite-horizon evaluation needs "
                f"0 <= gamma < 1: pass gamma (e.g. load_dpomdp(path, gamma=0.9))"
            )
        gamma = dec.discount
    J, N, _ = dec.T.shape
    JO = dec.O.shape[2]
    obs_sizes = [len(o) for o in dec.obs_names]
    ext_sizes = [k + 1 for k in obs_sizes]
    JX = int(np.prod(ext_sizes))
    # extended joint observation index of every ordinary joint observation, and of "all start"
    ext_of = np.ravel_multi_index(np.unravel_index(np.arange(JO), obs_sizes), ext_sizes)
    start_code = int(np.ravel_multi_index(tuple(obs_sizes), ext_sizes))

    # base successors of (s, a): (s', o') with probability T O
    base_ptr = np.zeros(N * J + 1, dtype=np.int64)
    cols, probs = [], []
    for s in range(N):
        for a in range(J):
            t = np.flatnonzero(dec.T[a, s])
            w = dec.T[a, s, t][:, None] * dec.O[a, t]  # (len t, JO)
            ti, oi = np.nonzero(w)
            cols.append(t[ti] * JX + ext_of[oi])
            probs.append(w[ti, oi])
            base_ptr[s * J + a + 1] = base_ptr[s * J + a] + ti.size
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    probs = np.concatenate(probs) if probs else np.zeros(0)

    # reachable hidden states, then reachable augmented states
    reach = dec.start > 0
    adj = (dec.T > 0).any(axis=0)
    frontier = reach.copy()
    while frontier.any():
        new = adj[frontier].any(axis=0) & ~reach
        reach |= new
        frontier = new
    start_states = np.flatnonzero(dec.start > 0) * JX + start_code
    succ = [cols[base_ptr[s * J]:base_ptr[(s + 1) * J]] for s in np.flatnonzero(reach)]
    codes = np.unique(np.concatenate([start_states, *succ]))
    if codes.size > max_states:
        raise ValueError(f"{dec.name}: {codes.size:,} reachable augmented states, more than max_states={max_states:,}")
    index = np.full(N * JX, -1, dtype=np.int64)
    index[codes] = np.arange(codes.size)
    hid = codes // JX
    ext = codes % JX

    # CSR of the augmented MDP: row (x, a) copies base row (hid[x], a)
    rows = (hid[:, None] * J + np.arange(J)[None, :]).ravel()
    lo, hi = base_ptr[rows], base_ptr[rows + 1]
    counts = hi - lo
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    take = np.repeat(lo - indptr[:-1], counts) + np.arange(indptr[-1])
    indices = index[cols[take]]
    if np.any(indices < 0):  # pragma: no cover - reachability is closed by construction
        raise AssertionError("reachability closure failed")
    r_sa = dec.expected_reward()
    rewards = r_sa[hid]
    mu = np.zeros(codes.size)
    mu[index[start_states]] = dec.start[dec.start > 0]
    ext_parts = np.unravel_index(ext, ext_sizes)
    obs = [ext_parts[i].astype(np.int64) for i in range(len(obs_sizes))]
    obs_names = tuple(tuple(o) + ("start",) for o in dec.obs_names)
    state_names = [
        f"{dec.state_names[h]}|" + ",".join(obs_names[i][ext_parts[i][x]] for i in range(len(obs_sizes)))
        for x, h in enumerate(hid)
    ]
    return JointMDP.from_sparse(
        indptr, indices, probs[take], rewards, obs, [len(a) for a in dec.action_names], mu, gamma,
        n_obs=ext_sizes, state_names=state_names, agent_names=dec.agent_names,
        action_names=dec.action_names, obs_names=obs_names,
    )
