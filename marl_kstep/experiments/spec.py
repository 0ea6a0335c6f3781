r"""Run specs: every setting of one training run, typed, frozen, fully resolved and hashed.

A :class:`RunSpec` is made of typed frozen parts:

* :class:`Target` -- the problem, **fully resolved**: a built-in scenario with every argument of its
  ``parallel_env`` (the registry's defaults and the constructor's own filled in, so a record rebuilds
  exactly the problem it trained on even after a default changes), a ``.dpomdp`` file with its
  discount and the SHA-256 of its content (a changed file is refused, never silently used), or a
  user's PettingZoo env factory with its discount and keyword arguments;
* :class:`EstimatorSpec` -- exact, or sampled with every setting (episodes, horizon, floor);
* :class:`~marl_kstep.optim.TrainOptions` -- method, step, iteration cap, tolerance, escapes, ...;
* ``k``, ``seed``, ``start``;
* ``settings`` -- the :class:`~marl_kstep.settings.Settings` that differ from the defaults when the
  spec is made (``mk.configure(...)`` blocks, the environment): a run executes under them on every
  executor, so one spec gives one result.

Every part rejects unknown or misspelt keys with a ``ValueError`` naming the key and the allowed
ones, and normalises numbers (NumPy integers become ``int``; ``1`` and ``1.0`` are equal for float
fields). :attr:`RunSpec.hash` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of
:meth:`RunSpec.to_dict`: two specs are the same run exactly when every resolved setting agrees.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model import dpomdp_names, dpomdp_path, parse_dpomdp, random_model, random_model_args
from ..model.memory import check_nodes
from ..optim import TrainOptions
from ..sampling.encoders import encoder_from_spec
from ..settings import Settings, configure, current
from ..validation import check_choice, check_gamma, check_int, check_k, check_keys, json_data
from .scenarios import SCENARIOS

__all__ = ["EstimatorSpec", "RunSpec", "Target", "canonical_json", "spec_target", "SPEC_SCHEMA", "START_KINDS"]

#: Version of the spec's dictionary form (records say which form their spec has).
SPEC_SCHEMA = 2
START_KINDS = ("default", "uniform", "near_uniform", "random", "given")
_TARGET_KINDS = ("scenario", "dpomdp", "env", "random")


def canonical_json(obj) -> str:
    """JSON with sorted keys and no spaces: equal settings give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------- the problem
def _scenario_config(name: str, config) -> dict:
    """Every argument of the scenario's ``parallel_env``: constructor defaults, then the registry's, then
    ``config`` (checked by name; a float argument given as an integer becomes a float)."""
    module, registry_defaults, _ = SCENARIOS[name]
    params = {p.name: p for p in inspect.signature(module.parallel_env).parameters.values() if p.name != "render_mode"}
    config = check_keys(f"config of scenario {name!r}", {} if config is None else config, params)
    full = {key: p.default for key, p in params.items() if p.default is not inspect.Parameter.empty}
    full.update(registry_defaults)
    full.update(config)
    missing = [key for key in params if key not in full]
    if missing:
        raise ValueError(f"config of scenario {name!r} lacks {', '.join(missing)}")
    out = {}
    for key, value in full.items():
        value = json_data(value, f"config[{key!r}] of scenario {name!r}")
        if params[key].annotation in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (cached by path, modification time and size)."""
    st = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.cache
def _shipped_name(path: str) -> str | None:
    """The shipped problem that ``path`` is (the same file, or a file of the same name and bytes: the
    shipped copy of another checkout, as in a facts cache made there), else None."""
    file = Path(path)
    for name in dpomdp_names():
        shipped = dpomdp_path(name)
        if shipped.name != file.name:
            continue
        if shipped.resolve() == file.resolve() or (file.is_file() and file.read_bytes() == shipped.read_bytes()):
            return name
    return None


def spec_target(path, gamma: float, memory: int = 1) -> dict:
    """The target of a run on one ``.dpomdp`` problem: a shipped problem by its name
    (``{"dpomdp": "dectiger", "gamma": 0.9}``), so that run records, whose hashes cover the target, are
    found again from any checkout (the resolved spec also carries the file's SHA-256); any other file by
    its path. ``memory`` >= 2 adds the finite-state controller's node count (``"memory"``)."""
    name = _shipped_name(str(path))
    target = {"dpomdp": name if name is not None else str(path), "gamma": gamma}
    if memory != 1:
        target["memory"] = memory
    return target


@functools.lru_cache(maxsize=64)
def _dpomdp_agents(path: str, digest: str) -> int:
    import gzip

    file = dpomdp_path(path)  # a shipped problem by name, else the path
    raw = file.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    return len(parse_dpomdp(text, file.name).agent_names)


def _n_agents(resolved: dict) -> int:
    """The number of agents of a resolved memoryless target (to resolve an int ``memory``)."""
    if "scenario" in resolved:
        module = SCENARIOS[resolved["scenario"]][0]
        return len(module.parallel_env(**resolved["config"]).possible_agents)
    if "dpomdp" in resolved:
        return _dpomdp_agents(resolved["dpomdp"], resolved["sha256"])
    if "random" in resolved:
        return random_model(**resolved["random"]).n_agents
    import importlib

    mod_name, _, fn_name = resolved["env"].partition(":")
    try:
        env = getattr(importlib.import_module(mod_name), fn_name)(**resolved["kwargs"])
    except Exception as exc:  # a user factory: any failure is named
        raise ValueError(f"target['env'] {resolved['env']!r}: cannot build it to count its agents for "
                         f"target['memory'] ({type(exc).__name__}: {exc})") from exc
    return len(env.possible_agents)


class Target:
    """The problem of a run, fully resolved (see the module docstring).

    Built from a dict: ``{"scenario": name, "config": {...}}``, ``{"dpomdp": path or shipped name, "gamma": g or None}``
    (the file's content hash is added; given, it must match), ``{"random": {"family": f, ..., "seed": s}}``
    (:func:`~marl_kstep.random_model`, every argument resolved by :func:`~marl_kstep.random_model_args`) or
    ``{"env": "module:factory", "gamma": g, "kwargs": {...}}`` (sampled estimator only). Immutable;
    ``to_dict()`` gives the resolved form.

    Any kind takes an optional ``"memory"``: finite-state controllers with that many nodes per agent
    (docs/memory.md; the run is on ``with_memory(problem, memory)``). An int is resolved to one count
    per agent (``2`` -> ``[2, 2]``); the key is absent from the resolved form when not given, so a
    memoryless target keeps its dict and hash.
    """

    __slots__ = ("_data", "_json")

    def __init__(self, target):
        if isinstance(target, Target):
            data = target.to_dict()
        else:
            data = self._resolve(target)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_json", canonical_json(data))

    def __setattr__(self, name, value):
        raise AttributeError("Target is immutable")

    def __reduce__(self):
        return (Target, (self.to_dict(),))

    @staticmethod
    def _resolve(target) -> dict:
        if not isinstance(target, dict):
            raise ValueError(f"target must be a dict with one of {_TARGET_KINDS}; got target={target!r}")
        kinds = [key for key in _TARGET_KINDS if key in target]
        if len(kinds) != 1:
            raise ValueError(f"target must have exactly one of the keys {', '.join(_TARGET_KINDS)}; "
                             f"got keys {sorted(target)}")
        kind = kinds[0]
        if "memory" in target:
            out = Target._resolve({key: v for key, v in target.items() if key != "memory"})
            out["memory"] = list(check_nodes(json_data(target["memory"], "target['memory']"), _n_agents(out)))
            return out
        if kind == "scenario":
            check_keys("target", target, ("scenario", "config", "memory"))
            name = target["scenario"]
            if not isinstance(name, str) or name not in SCENARIOS:
                raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
            return {"scenario": name, "config": _scenario_config(name, target.get("config"))}
        if kind == "dpomdp":
            check_keys("target", target, ("dpomdp", "gamma", "sha256", "memory"))
            path = target["dpomdp"]
            if not isinstance(path, str) or not path:
                raise ValueError(f"target['dpomdp'] must be a file path or a shipped problem's name; got {path!r}")
            file = dpomdp_path(path)  # a shipped problem by name ("dectiger"), else the path
            if not file.is_file():
                raise ValueError(f"target['dpomdp']: no such file {path!r}")
            gamma = target.get("gamma")
            gamma = None if gamma is None else check_gamma(json_data(gamma, "target['gamma']"))
            digest = file_sha256(file)
            if target.get("sha256") is not None and target["sha256"] != digest:
                raise ValueError(f"target['dpomdp'] {path!r} has changed since the spec was written (SHA-256 "
                                 f"{digest[:16]}..., the spec says {str(target['sha256'])[:16]}...): rerun it")
            return {"dpomdp": path, "gamma": gamma, "sha256": digest}
        if kind == "random":
            check_keys("target", target, ("random", "memory"))
            if not isinstance(target["random"], dict):
                raise ValueError(f"target['random'] must be a dict of random_model's arguments; "
                                 f"got {target['random']!r}")
            try:  # every argument, defaults filled: equal models, equal hashes
                return {"random": json_data(random_model_args(**target["random"]), "target['random']")}
            except TypeError as exc:  # an unknown or missing argument
                raise ValueError(f"target['random']: {exc}") from None
        check_keys("target", target, ("env", "gamma", "kwargs", "memory", "encoders"))
        ref = target["env"]
        if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
            raise ValueError(f"target['env'] must be 'module:factory'; got {ref!r}")
        if target.get("gamma") is None:
            raise ValueError("target['gamma'] is required with an env (the discount of the sampled objective)")
        kwargs = json_data(target.get("kwargs") or {}, "target['kwargs']")
        if not isinstance(kwargs, dict):
            raise ValueError(f"target['kwargs'] must be a dict of the factory's keyword arguments; got {kwargs!r}")
        out = {"env": ref, "gamma": check_gamma(json_data(target["gamma"], "target['gamma']")), "kwargs": kwargs}
        if target.get("encoders"):  # per agent, as data: {agent: {"kind": "box" | "index", ...}}
            encoders = json_data(target["encoders"], "target['encoders']")
            if not isinstance(encoders, dict):
                raise ValueError(f"target['encoders'] must map agent names to encoder specs; got {encoders!r}")
            for agent, spec in encoders.items():
                encoder_from_spec(spec, f"target['encoders'][{agent!r}]")  # checked now, built in the run
            out["encoders"] = encoders
        return out

    @property
    def kind(self) -> str:
        """``"scenario"``, ``"dpomdp"`` or ``"env"``."""
        return next(key for key in _TARGET_KINDS if key in self._data)

    @property
    def name(self) -> str:
        """The scenario name, the file name, the env reference or ``random-FAMILY-SEED``."""
        value = self._data[self.kind]
        if self.kind == "random":
            return f"random-{value['family']}-{value['seed']}"
        return Path(value).name if self.kind == "dpomdp" else value

    def to_dict(self) -> dict:
        return json.loads(self._json)

    def __getitem__(self, key):
        return self.to_dict()[key]

    def get(self, key, default=None):
        return self.to_dict().get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __eq__(self, other) -> bool:
        return isinstance(other, Target) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self._json)

    def __repr__(self) -> str:
        return f"Target({self._json})"


# ---------------------------------------------------------------------------- the estimator
@dataclass(frozen=True)
class EstimatorSpec:
    """The estimator of a run: ``kind="exact"`` (:class:`~marl_kstep.ExactKStep`) or ``"sampled"``
    (:class:`~marl_kstep.SampledKStep` with ``episodes``, ``horizon`` (``None``: its default) and
    ``floor``; its seed is the run's)."""

    kind: str = "exact"
    episodes: int | None = None
    horizon: int | None = None
    floor: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        check_choice("estimator kind", self.kind, ("exact", "sampled"))
        if self.kind == "exact":
            for key in ("episodes", "horizon", "floor"):
                if getattr(self, key) is not None:
                    raise ValueError(f"estimator {key!r} applies to the sampled estimator only; got "
                                     f"{key}={getattr(self, key)!r} with kind='exact'")
            return
        set_(self, "episodes", int(check_int("estimator episodes", 1000 if self.episodes is None else self.episodes,
                                             minimum=1, maximum=2**62)))
        if self.horizon is not None:
            set_(self, "horizon", int(check_int("estimator horizon", self.horizon, minimum=1, maximum=2**62)))
        floor = 0.01 if self.floor is None else self.floor
        if isinstance(floor, bool | np.bool_) or not isinstance(floor, numbers.Real) or not 0.0 <= floor < 1.0:
            raise ValueError(f"estimator floor must be a number in [0, 1); got floor={floor!r}")
        set_(self, "floor", float(floor))

    @classmethod
    def from_dict(cls, d) -> EstimatorSpec:
        if isinstance(d, EstimatorSpec):
            return d
        d = check_keys("estimator", {"kind": "exact"} if d is None else d, [f.name for f in dataclasses.fields(cls)])
        return cls(**d)

    def to_dict(self) -> dict:
        if self.kind == "exact":
            return {"kind": "exact"}
        return dataclasses.asdict(self)

    def get(self, key, default=None):
        return self.to_dict().get(key, default)

    def __getitem__(self, key):
        return self.to_dict()[key]


# ---------------------------------------------------------------------------- settings
def changed_settings() -> dict:
    """The :class:`~marl_kstep.settings.Settings` now in force that differ from the defaults."""
    now, default = current(), Settings()
    return {f.name: getattr(now, f.name) for f in dataclasses.fields(Settings)
            if getattr(now, f.name) != getattr(default, f.name)}


def _check_settings(settings) -> dict:
    settings = check_keys("settings", settings, [f.name for f in dataclasses.fields(Settings)])
    settings = json_data(settings, "settings")
    with configure(**settings):  # the settings' own checks
        pass
    return settings


# ---------------------------------------------------------------------------- the spec
@dataclass(frozen=True, init=False)
class RunSpec:
    """Every setting of one training run (see the module docstring).

    ``RunSpec(target, k, options=None, *, seed=None, start="default", estimator=None, settings=None,
    init=None, **option_overrides)``: ``target`` a :class:`Target` or its dict; ``options`` a
    :class:`~marl_kstep.optim.TrainOptions` or its dict, with any of its fields as keywords
    (``method="mirror"``, ``iters=200``, ``escape=True``); ``estimator`` an :class:`EstimatorSpec` or
    its dict; ``settings``: the non-default Settings to run under (default: those in force now).

    Attributes
    ----------
    start : {"default", "uniform", "near_uniform", "random", "given"}
        ``default``: the scenario's trap start (the exact uniform policy for files and envs);
        ``uniform``: the exact uniform policy; ``near_uniform``: ``Policy.near_uniform`` (seed
        ``seed`` or 0), ``train``'s own default; ``random``: a Dirichlet(1) start from ``seed``;
        ``given``: the policy ``init``.
    init : list or None
        With ``start="given"`` (and only then): the start policy, one table of rows per agent, as
        data (checked against the problem when the run starts). Absent from :meth:`to_dict` otherwise,
        so the other specs keep their hashes.
    seed : int or None
        Seed of a ``random`` start, of a sampled estimator and of the escapes' probes.
    """

    target: Target
    k: int
    options: TrainOptions
    seed: int | None
    start: str
    estimator: EstimatorSpec
    settings: dict = field(default_factory=dict)
    init: list | None = None

    def __init__(self, target, k, options=None, *, seed=None, start="default", estimator=None, settings=None,
                 init=None, **overrides):
        set_ = object.__setattr__
        set_(self, "target", Target(target))
        set_(self, "k", int(check_k(k)))
        if options is None:
            options = TrainOptions()
        elif isinstance(options, dict):
            options = TrainOptions.from_dict(options)
        elif not isinstance(options, TrainOptions):
            raise ValueError(f"options must be a TrainOptions or a dict of its fields; got options={options!r}")
        set_(self, "options", options.replace(**overrides) if overrides else options)
        if seed is not None:
            seed = int(check_int("seed", seed, minimum=0))
        set_(self, "seed", seed)
        set_(self, "start", check_choice("start", start, START_KINDS))
        set_(self, "estimator", EstimatorSpec.from_dict(estimator))
        set_(self, "settings", changed_settings() if settings is None else _check_settings(settings))
        if self.start == "random" and self.seed is None:
            raise ValueError("start='random' needs a seed")
        if (init is None) != (self.start != "given"):
            raise ValueError(f"init is given exactly when start='given'; got start={self.start!r} and "
                             f"init={'None' if init is None else 'a policy'}")
        if init is not None:
            init = json_data(init, "init")
            if not isinstance(init, list) or not init or not all(
                    isinstance(t, list) and t and all(isinstance(r, list) and r and all(
                        isinstance(x, int | float) and not isinstance(x, bool) for x in r) for r in t) for t in init):
                raise ValueError("init must be one non-empty table of rows of numbers per agent")
            init = [[[float(x) for x in r] for r in t] for t in init]
        set_(self, "init", init)
        if self.target.kind == "env" and self.estimator.kind != "sampled":
            raise ValueError("a user environment has no model: its runs need the sampled estimator")
        if self.target.kind == "env" and self.options.escape:
            raise ValueError("escape=True certifies on a model; a user environment has none")

    # the options as attributes, for reading
    @property
    def method(self) -> str:
        return self.options.method

    @property
    def step(self) -> float:
        return self.options.step

    @property
    def iters(self) -> int:
        return self.options.iters

    @property
    def tol(self) -> float:
        return self.options.tol

    @property
    def escape(self) -> bool:
        return self.options.escape

    def to_dict(self) -> dict:
        """The spec as plain JSON data (canonical: the same settings give the same dict)."""
        d = dict(schema=SPEC_SCHEMA, target=self.target.to_dict(), k=self.k, options=self.options.to_dict(),
                 seed=self.seed, start=self.start, estimator=self.estimator.to_dict(), settings=self.settings)
        if self.init is not None:
            d["init"] = self.init
        return json.loads(canonical_json(d))

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        """A spec from :meth:`to_dict`'s form (unknown keys refused)."""
        if isinstance(d, RunSpec):
            return d
        d = check_keys("spec", d, ("schema", "target", "k", "options", "seed", "start", "estimator", "settings",
                                   "init"))
        if d.get("schema", SPEC_SCHEMA) != SPEC_SCHEMA:
            raise ValueError(f"spec schema {d.get('schema')!r} is not {SPEC_SCHEMA} (written by another version of "
                             "marl_kstep): rerun it")
        if "target" not in d or "k" not in d:
            raise ValueError(f"a spec needs 'target' and 'k'; got keys {sorted(d)}")
        return cls(d["target"], d["k"], d.get("options"), seed=d.get("seed"), start=d.get("start", "default"),
                   estimator=d.get("estimator"), settings=d.get("settings", {}), init=d.get("init"))

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of every setting."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    def replace(self, **changes) -> RunSpec:
        """A copy with ``changes`` (spec fields or option names)."""
        fields = dict(target=self.target, k=self.k, options=self.options, seed=self.seed, start=self.start,
                      estimator=self.estimator, settings=self.settings, init=self.init)
        opts = {key: changes.pop(key) for key in list(changes) if key in TrainOptions.names()}
        check_keys("changes", changes, fields)
        fields.update(changes)
        target, k, options = fields.pop("target"), fields.pop("k"), fields.pop("options")
        return RunSpec(target, k, options, **fields, **opts)

    def label(self) -> str:
        return f"k={self.k} {self.method} seed={self.seed} {self.estimator.kind}"

    def __reduce__(self):  # pickled as data (worker processes, Dask)
        return (RunSpec.from_dict, (self.to_dict(),))
