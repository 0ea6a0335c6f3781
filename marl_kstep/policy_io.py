r"""Policy files: the JSON schema ``marl_kstep.policy/1`` (read and written by :class:`~marl_kstep.Policy`).

A policy file holds, per agent, its name, its observation and action names, the shape
``(O_i, A_i)`` and the table :math:`\theta_i[o, a]` as nested lists of floats. JSON numbers
are written by ``repr`` and read by ``float``, so every float64 (subnormals, ``-0.0`` and
``1 - 2**-53`` included) comes back bit for bit. When the policy was saved for a model, the
file also holds the model's *fingerprint*: one SHA-256 per part of a
:class:`~marl_kstep.model.JointMDP` (rewards, transitions, observation maps, action and
observation counts, initial distribution, discount) and one over all parts, so a file for
another model is refused by name of the part that differs. ``metadata`` is free-form JSON
(e.g. the run spec that produced the policy).

::

    {"schema": "marl_kstep.policy/1",
     "free_entries": false,
     "names_from_model": {"agents": true, "observations": false, "actions": true},
     "agents": [{"name": "agent_0", "observations": ["obs_0", ...], "actions": ["left", ...],
                 "shape": [O_0, A_0], "table": [[...], ...]}, ...],
     "model": {"fingerprint": "<sha256>", "parts": {"rewards": "<sha256>", ...},
               "n_states": N, "gamma": 0.9} or null,
     "metadata": ...}

This module works on plain arrays and documents only (:class:`~marl_kstep.Policy` wraps them);
it takes its model duck-typed and imports nothing above the base layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .validation import json_data

__all__ = ["SCHEMA", "ModelFacts", "PolicyFile", "model_facts", "model_fingerprint", "encode", "decode",
           "check_model", "dumps", "read_document", "write_document", "write_text_atomic"]

#: The schema version written into every policy file.
SCHEMA = "marl_kstep.policy/1"

#: The parts of a JointMDP that make up its fingerprint, in hashing order.
FINGERPRINT_PARTS = ("rewards", "transitions", "obs", "n_actions", "n_obs", "mu", "gamma")

_MAX_FLOAT = float(np.finfo(np.float64).max)

_NAME_KINDS = ("agents", "observations", "actions")


# ----------------------------------------------------------------------------- the model's side
@dataclass(frozen=True)
class ModelFacts:
    """What a policy file records about (and checks against) a model.

    Attributes
    ----------
    n_obs, n_actions : tuple of int
    agent_names : tuple of str or None
    obs_names, action_names : tuple of tuple of str or None
        ``obs_names[i][o]``, ``action_names[i][a]``; ``None`` when the model has none.
    fingerprint : dict or None
        ``{"fingerprint", "parts", "n_states", "gamma"}`` for a JointMDP, else ``None``.
    """

    n_obs: tuple[int, ...]
    n_actions: tuple[int, ...]
    agent_names: tuple[str, ...] | None = None
    obs_names: tuple[tuple[str, ...], ...] | None = None
    action_names: tuple[tuple[str, ...], ...] | None = None
    fingerprint: dict | None = None


def _names(value):
    return value() if callable(value) else value


def model_facts(model) -> ModelFacts:
    """Shapes, names and fingerprint of ``model``: a JointMDP, an estimator (its ``mdp`` when it has
    one, else its shapes), a scenario model, or a marl_kstep PettingZoo environment (its model: the
    environment's agent ids are generated, ``agent_i``, and are not names of the model)."""
    base = getattr(model, "unwrapped", model)
    if hasattr(base, "possible_agents") and hasattr(base, "model"):  # a scenario environment
        model = base.model
    if not hasattr(model, "indptr") and getattr(model, "mdp", None) is not None:  # an estimator or env on a model
        model = model.mdp
    if not all(hasattr(model, a) for a in ("n_agents", "n_obs", "n_actions")):
        raise ValueError(f"model must be a JointMDP, an estimator, a scenario model or environment "
                         f"(with n_agents, n_obs, n_actions); got {type(model).__name__}")
    n_obs = tuple(int(o) for o in model.n_obs)
    n_actions = tuple(int(a) for a in model.n_actions)
    agent_names = _names(getattr(model, "agent_names", None))
    agent_names = None if agent_names is None else tuple(str(a) for a in agent_names)
    obs_names, action_names = _names(getattr(model, "obs_names", None)), _names(getattr(model, "action_names", None))
    obs_names = None if obs_names is None else tuple(tuple(str(x) for x in row) for row in obs_names)
    action_names = None if action_names is None else tuple(tuple(str(x) for x in row) for row in action_names)
    fp = model_fingerprint(model) if all(hasattr(model, a) for a in ("rewards", "indptr", "mu", "gamma")) else None
    return ModelFacts(n_obs, n_actions, agent_names, obs_names, action_names, fp)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<") if a.dtype.kind == "f" else np.dtype("<i8"), copy=False)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_fingerprint(mdp) -> dict:
    r"""SHA-256 digests of a :class:`~marl_kstep.model.JointMDP`'s arrays, per part and over all.

    The parts are ``rewards`` (shape ``(N, J)``), ``transitions`` (``indptr``, ``indices``,
    ``probs``: canonical CSR, so the same model built two ways has one fingerprint), ``obs`` (the
    observation maps :math:`\phi_i`), ``n_actions``, ``n_obs``, ``mu`` and ``gamma``; every array is
    hashed as little-endian int64 or float64 with its shape.

    Returns
    -------
    dict
        ``{"fingerprint": hex, "parts": {part: hex}, "n_states": N, "gamma": gamma}``.
    """
    parts = {
        "rewards": _digest(np.asarray(mdp.rewards, dtype=np.float64)),
        "transitions": _digest(mdp.indptr, mdp.indices, np.asarray(mdp.probs, dtype=np.float64)),
        "obs": _digest(*mdp.obs),
        "n_actions": _digest(np.asarray(mdp.n_actions, dtype=np.int64)),
        "n_obs": _digest(np.asarray(mdp.n_obs, dtype=np.int64)),
        "mu": _digest(np.asarray(mdp.mu, dtype=np.float64)),
        "gamma": _digest(np.asarray([mdp.gamma], dtype=np.float64)),
    }
    total = hashlib.sha256("".join(f"{k}={parts[k]};" for k in FINGERPRINT_PARTS).encode()).hexdigest()
    return {"fingerprint": total, "parts": parts, "n_states": int(np.asarray(mdp.rewards).shape[0]),
            "gamma": float(mdp.gamma)}


# ----------------------------------------------------------------------------- documents
def encode(tables, *, free_entries: bool, facts: ModelFacts | None = None, metadata=None) -> dict:
    """The document of ``tables`` (one float64 ``(O_i, A_i)`` array per agent, already checked).

    Names come from the model's ``facts`` (:func:`model_facts`) where it has them, else
    ``agent_i``, ``obs_o``, ``a_j``; the model's fingerprint is recorded when it has one (a
    JointMDP, or an estimator on one). The caller checks that the tables fit the model.
    """
    given = {"agents": facts is not None and facts.agent_names is not None,
             "observations": facts is not None and facts.obs_names is not None,
             "actions": facts is not None and facts.action_names is not None}
    agents = []
    for i, t in enumerate(tables):
        n_o, n_a = t.shape
        agents.append({
            "name": facts.agent_names[i] if given["agents"] else f"agent_{i}",
            "observations": list(facts.obs_names[i]) if given["observations"] else [f"obs_{o}" for o in range(n_o)],
            "actions": list(facts.action_names[i]) if given["actions"] else [f"a_{a}" for a in range(n_a)],
            "shape": [n_o, n_a],
            "table": np.asarray(t, dtype=np.float64).tolist(),
        })
    return {"schema": SCHEMA, "marl_kstep": __version__, "free_entries": bool(free_entries),
            "names_from_model": given, "agents": agents,
            "model": None if facts is None else facts.fingerprint,
            "metadata": json_data(metadata, "metadata")}


@dataclass(frozen=True)
class PolicyFile:
    """A decoded policy document.

    Attributes
    ----------
    tables : list of ndarray
        ``tables[i]``, float64 of shape ``(O_i, A_i)``.
    free_entries : bool
    agent_names, obs_names, action_names : tuple or None
        As saved, or ``None`` where the file's names are the generic ones.
    model : dict or None
        The recorded fingerprint (:func:`model_fingerprint`).
    metadata : JSON value
    """

    tables: list
    free_entries: bool
    agent_names: tuple[str, ...] | None
    obs_names: tuple[tuple[str, ...], ...] | None
    action_names: tuple[tuple[str, ...], ...] | None
    model: dict | None
    metadata: object


def _get(doc: dict, key: str, types, where: str):
    if key not in doc:
        raise ValueError(f"{where} has no {key!r} entry")
    v = doc[key]
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise ValueError(f"{where}[{key!r}] must be {_type_name(types)}; got {v!r:.80}")
    return v


def _type_name(types: tuple) -> str:
    return " or ".join({dict: "an object", list: "a list", str: "a string", bool: "true or false",
                        int: "an integer", float: "a number", type(None): "null"}[t] for t in types)


def _string_list(v, n: int, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where} must be a list of {n} strings; got {v!r:.80}")
    return tuple(v)


def decode(doc, *, source: str = "policy document") -> PolicyFile:
    """Check a document's schema and structure and return its tables (float64), names and records.

    Every ``ValueError`` names ``source`` and the entry at fault. Shapes are checked against the
    stated ``shape`` of each agent and the names; rows are *not* checked here (see
    :meth:`marl_kstep.Policy.from_dict`), nor the fit to a model (:func:`check_model`).
    """
    if not isinstance(doc, dict):
        raise ValueError(f"{source} is not a marl_kstep policy (a JSON object with 'schema': {SCHEMA!r}); "
                         f"got a {type(doc).__name__}")
    if "schema" not in doc:
        raise ValueError(f"{source} is not a marl_kstep policy: it has no 'schema' entry (expected {SCHEMA!r})")
    if doc["schema"] != SCHEMA:
        raise ValueError(f"{source} has schema {doc['schema']!r}; this version of marl_kstep ({__version__}) "
                         f"reads {SCHEMA!r} only")
    free = _get(doc, "free_entries", bool, source)
    given = _get(doc, "names_from_model", dict, source)
    for kind in _NAME_KINDS:
        _get(given, kind, bool, f"{source}['names_from_model']")
    agents = _get(doc, "agents", list, source)
    if not agents:
        raise ValueError(f"{source}['agents'] is empty; a policy has at least one agent")
    tables, names, obs_names, act_names = [], [], [], []
    for i, ag in enumerate(agents):
        where = f"{source}['agents'][{i}]"
        if not isinstance(ag, dict):
            raise ValueError(f"{where} must be an object; got {ag!r:.80}")
        shape = _get(ag, "shape", list, where)
        if len(shape) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in shape):
            raise ValueError(f"{where}['shape'] must be [observations, actions], two integers >= 1; got {shape!r}")
        n_o, n_a = shape
        names.append(_get(ag, "name", str, where))
        obs_names.append(_string_list(ag.get("observations"), n_o, f"{where}['observations']"))
        act_names.append(_string_list(ag.get("actions"), n_a, f"{where}['actions']"))
        rows = _get(ag, "table", list, where)
        if len(rows) != n_o:
            raise ValueError(f"{where}['table'] has {len(rows)} rows; its shape says {n_o}")
        for o, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != n_a:
                raise ValueError(f"{where}['table'][{o}] must be a list of {n_a} numbers; got {row!r:.80}")
            for a, x in enumerate(row):
                if not isinstance(x, int | float) or isinstance(x, bool):
                    raise ValueError(f"{where}['table'][{o}][{a}] = {x!r:.40} is not a number")
                if isinstance(x, int) and abs(x) > _MAX_FLOAT:
                    raise ValueError(f"{where}['table'][{o}][{a}] is an integer beyond the float range")
        t = np.array(rows, dtype=np.float64).reshape(n_o, n_a)
        bad = np.argwhere(~np.isfinite(t))
        if bad.size:
            o, a = (int(x) for x in bad[0])
            raise ValueError(f"{where}['table'][{o}][{a}] = {float(t[o, a])!r} is not finite")
        tables.append(t)
    model = doc.get("model")
    if model is not None:
        where = f"{source}['model']"
        if not isinstance(model, dict):
            raise ValueError(f"{where} must be an object or null; got {model!r:.80}")
        _get(model, "fingerprint", str, where)
        parts = _get(model, "parts", dict, where)
        for p in FINGERPRINT_PARTS:
            _get(parts, p, str, f"{where}['parts']")
    return PolicyFile(tables, free,
                      tuple(names) if given["agents"] else None,
                      tuple(obs_names) if given["observations"] else None,
                      tuple(act_names) if given["actions"] else None,
                      model, doc.get("metadata"))


def check_model(pf: PolicyFile, model, *, check_fingerprint: bool = True, source: str = "policy document") -> None:
    """Refuse (``ValueError``) a decoded policy that is for another model than ``model``.

    Checked in order: the number of agents, each agent's observation and action counts, the
    names where both the file and the model have them, and (with ``check_fingerprint``, when the
    file and the model both have one) the fingerprint, naming the parts that differ.
    """
    facts = model_facts(model)
    n = len(pf.tables)
    head = f"{source} is for another model"
    if n != len(facts.n_actions):
        raise ValueError(f"{head}: it has {n} agents; the model has {len(facts.n_actions)}")
    for i, t in enumerate(pf.tables):
        if t.shape[0] != facts.n_obs[i]:
            raise ValueError(f"{head}: agent {i} has {t.shape[0]} observations in the file; "
                             f"the model gives it {facts.n_obs[i]}")
        if t.shape[1] != facts.n_actions[i]:
            raise ValueError(f"{head}: agent {i} has {t.shape[1]} actions in the file; "
                             f"the model gives it {facts.n_actions[i]}")
    for label, mine, theirs in (("agent names", pf.agent_names, facts.agent_names),
                                ("observation names", pf.obs_names, facts.obs_names),
                                ("action names", pf.action_names, facts.action_names)):
        if mine is not None and theirs is not None and tuple(mine) != tuple(theirs):
            i = next((j for j, (x, y) in enumerate(zip(mine, theirs, strict=True)) if x != y), 0)
            raise ValueError(f"{head}: the {label} differ at agent {i}: file {mine[i]!r}, model {theirs[i]!r}")
    if check_fingerprint and pf.model is not None and facts.fingerprint is not None:
        if pf.model["fingerprint"] != facts.fingerprint["fingerprint"]:
            differ = [p for p in FINGERPRINT_PARTS if pf.model["parts"][p] != facts.fingerprint["parts"][p]]
            what = ", ".join(differ) if differ else "the fingerprint"
            notes = []
            if "gamma" in differ and isinstance(pf.model.get("gamma"), int | float):
                notes.append(f"gamma: file {pf.model['gamma']!r}, model {facts.fingerprint['gamma']!r}")
            if isinstance(pf.model.get("n_states"), int) and pf.model["n_states"] != facts.fingerprint["n_states"]:
                notes.append(f"states: file {pf.model['n_states']}, model {facts.fingerprint['n_states']}")
            detail = f" ({'; '.join(notes)})" if notes else ""
            raise ValueError(f"{head}: its fingerprint differs in {what}{detail}; pass check_fingerprint=False "
                             "to use it with this same-shaped model")


# ----------------------------------------------------------------------------- files
def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, ``fsync`` and
    ``os.replace``: an interruption leaves the old file or the new one, never a partial file. The
    file is readable by everyone (mode 0644 less the umask), like any other file the user writes.
    (The package's one atomic write: result files use it too.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o644 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _format(x, depth: int) -> str:
    """JSON of ``x``: objects and lists of containers one entry per line, lists of scalars on one line."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(x, dict) and x:
        body = ",\n".join(f"{inner}{json.dumps(k, ensure_ascii=False)}: {_format(v, depth + 1)}" for k, v in x.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(x, list) and any(isinstance(v, dict | list) for v in x):
        return "[\n" + ",\n".join(inner + _format(v, depth + 1) for v in x) + "\n" + pad + "]"
    return json.dumps(x, allow_nan=False, ensure_ascii=False)


def dumps(doc: dict) -> str:
    """The document as indented JSON: one object entry or table row per line, names and rows inline."""
    return _format(doc, 0) + "\n"


def write_document(path, doc: dict) -> Path:
    """Write a policy document to ``path`` atomically (:func:`write_text_atomic`)."""
    return write_text_atomic(path, dumps(doc))


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def read_document(path):
    """The JSON document in ``path``; a ``ValueError`` naming the file (and the line and column of a
    syntax error) when it is not UTF-8 JSON. NaN and Infinity literals are refused."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"policy file {str(path)!r} is not a JSON text (byte {err.start} is not UTF-8)") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ValueError(f"policy file {str(path)!r} is damaged: {err.msg} at line {err.lineno} "
                         f"column {err.colno}") from None
    except ValueError as err:
        raise ValueError(f"policy file {str(path)!r} is damaged: {err}") from None
