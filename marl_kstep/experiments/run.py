r"""One run: a :class:`~marl_kstep.experiments.spec.RunSpec` in, a :class:`RunRecord` out.

:func:`run_one` is pure and picklable: it rebuilds the spec's problem from its resolved target,
trains under the spec's :class:`~marl_kstep.settings.Settings` and returns the record: the spec
(as data) and its hash, the result, the versions of the numerical stack, the git commit, the date
and the host. The result holds three values of the final policy, so that a table can say what it
judges:

* ``final_J`` -- the exact ordinary value :math:`J` of the returned policy (``None`` without a model);
* ``J_greedy`` -- the exact :math:`J` of its greedy rounding (one action per observation; the policy
  a sampled learner, whose entries stay at its floor, is judged by, docs/sampled.md);
* ``final_J_k`` -- the estimator's :math:`J_k` of the returned policy;

and ``judged`` says which of ``final_J`` (``"returned"``: exact estimators) and ``J_greedy``
(``"greedy"``: sampled estimators) is the run's value ``J_judged``.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import json
import math
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..envs import compile_env
from ..estimators import ExactKStep, value
from ..model import load_dpomdp, random_model
from ..optim import SaddleWarning, train
from ..policy import Policy
from ..sampling import SampledKStep
from ..sampling.encoders import encoder_from_spec, space_encoder
from ..sampling.memory_env import with_memory
from ..settings import configure
from .io import versions
from .scenarios import SCENARIOS
from .spec import RunSpec, Target, canonical_json

__all__ = ["RECORD_SCHEMA", "RunRecord", "build_target", "commit", "run_one"]

#: Version of a record's dictionary form.
RECORD_SCHEMA = 2
#: Above this many joint states a record leaves out the exact value of the greedy rounding.
GREEDY_MAX_STATES = 100_000


# ---------------------------------------------------------------------------- problems
@functools.lru_cache(maxsize=8)
def _build(canonical: str):
    target = json.loads(canonical)
    if "memory" in target:  # finite-state controllers: the augmented model (or the node-carrying env)
        nodes = target.pop("memory")
        mdp, env, start = _build(canonical_json(target))
        aug = with_memory(mdp, nodes) if mdp is not None else None
        lifted = None if start is None else (lambda m, base=mdp, start=start: Policy(m.lift(start(base))))
        return aug, (with_memory(env, nodes) if env is not None else None), lifted
    if "scenario" in target:
        module, _, start = SCENARIOS[target["scenario"]]
        env = module.parallel_env(**target["config"])
        return compile_env(env), env, start
    if "dpomdp" in target:
        return load_dpomdp(target["dpomdp"], gamma=target.get("gamma")), None, None
    if "random" in target:
        return random_model(**target["random"]), None, None
    mod_name, _, fn_name = target["env"].partition(":")
    env = getattr(importlib.import_module(mod_name), fn_name)(**target.get("kwargs", {}))
    return None, env, None


def build_target(target):
    """``(mdp or None, env or None, default start function or None)`` of a target (a :class:`Target`
    or its dict; resolved first, then built once per process and cached). With ``"memory"`` they are
    the augmented model ``with_memory(mdp, memory)``, the env in ``MemoryParallelEnv`` and the default
    start lifted to the controllers (played in every node, node kept: the same value)."""
    return _build(Target(target)._json)


def _estimator(spec: RunSpec, mdp, env):
    est = spec.estimator
    if est.kind == "exact":
        return ExactKStep(mdp, spec.k)
    gamma = None
    if mdp is None:
        gamma = spec.target["gamma"]
        model_gamma = getattr(getattr(getattr(env, "unwrapped", env), "model", None), "gamma", None)
        if model_gamma is not None:  # an env that carries its model (a scenario's): the model's discount
            if model_gamma != gamma:
                raise ValueError(f"target gamma {gamma} differs from the discount of the env's own model "
                                 f"({model_gamma})")
            gamma = None
    encoders = None
    if mdp is None and spec.target.get("encoders"):
        given = spec.target["encoders"]
        names = list(env.possible_agents)
        unknown = [a for a in given if a not in names]
        if unknown:
            raise ValueError(f"target['encoders'] names {unknown[0]!r}, which is not an agent of the env "
                             f"({', '.join(map(str, names))})")
        encoders = [encoder_from_spec(given[a], f"target['encoders'][{a!r}]") if a in given
                    else space_encoder(env.observation_space(a)) for a in names]
    return SampledKStep(mdp if mdp is not None else env, spec.k, gamma=gamma,
                        episodes=est.episodes, horizon=est.horizon, floor=est.floor,
                        seed=0 if spec.seed is None else spec.seed, encoders=encoders)


def check_sampled(spec: RunSpec, mdp, env) -> None:
    """Build the spec's sampled estimator once (its sizes, budget and the env's first answers are
    checked on construction), so that a bad setting is refused before any run."""
    _estimator(spec, mdp, env)


def _start(spec: RunSpec, mdp, est, default_start) -> Policy:
    space = mdp if mdp is not None else est
    if spec.start == "given":
        return Policy.from_arrays(space, spec.init)  # shapes and simplex checked against the problem
    if spec.start == "random":
        return Policy.random(space, spec.seed)
    if spec.start == "near_uniform":
        return Policy.near_uniform(space, 0 if spec.seed is None else spec.seed)
    if spec.start == "default" and default_start is not None:
        return default_start(mdp)
    return Policy.uniform(space)


# ---------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The git commit of the package's checkout, or None (an installed copy)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def spec_hash(spec_dict: dict) -> str:
    """SHA-256 (16 hex digits) of a spec's canonical JSON (the hash :attr:`RunSpec.hash` gives)."""
    return hashlib.sha256(canonical_json(spec_dict).encode()).hexdigest()[:16]


def _finite(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# ---------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class RunRecord:
    """One finished run (see the module docstring).

    Attributes
    ----------
    spec : dict
        The resolved spec as data (:meth:`RunSpec.to_dict`); :meth:`run_spec` rebuilds the object.
    spec_hash : str
        Its hash; :meth:`from_dict` refuses a record whose hash does not match its spec.
    result : dict
        ``final_J``, ``J_greedy``, ``final_J_k``, ``judged``, ``J_judged``, ``iterations``,
        ``converged``, ``capped``, ``stop_reason`` (:attr:`~marl_kstep.optim.TrainResult.stop_reason`), ``seconds``,
        ``stationary``, the histories, ``policy`` (one table per agent), and with escapes ``escapes``,
        ``certificate`` (order, one_opt, two_opt, the number of improving changes, of the final
        policy's greedy tables), ``two_opt`` and ``certified`` (:attr:`~marl_kstep.optim.TrainResult.certified`: False
        for a run the iteration cap stopped). Records written before ``stop_reason`` and
        ``certified`` existed lack them (read them with ``.get``).
    versions, commit, date, host
        Provenance: the numerical stack's versions, the git commit (or None), the UTC date and the host.
    """

    spec: dict
    spec_hash: str
    result: dict
    versions: dict = field(default_factory=dict)
    commit: str | None = None
    date: str | None = None
    host: str | None = None

    def run_spec(self) -> RunSpec:
        return RunSpec.from_dict(self.spec)

    def policy(self, *, greedy: bool = False) -> Policy:
        """The returned policy (``greedy``: its greedy rounding, one action per observation)."""
        pol = Policy(self.result["policy"])
        if greedy:
            pol = pol.greedy()
        return pol

    def save_policy(self, path, *, greedy: bool = False):
        """Write the record's policy as a policy file (:meth:`Policy.save`, schema ``marl_kstep.policy/1``)
        with the model's names and fingerprint and, in its metadata, the spec and its hash, so that
        ``Policy.load(path, model)`` and ``marl-kstep eval PATH`` find the problem again."""
        mdp, env, _ = build_target(self.spec["target"])
        return self.policy(greedy=greedy).save(path, mdp if mdp is not None else None, metadata=dict(
            spec=self.spec, spec_hash=self.spec_hash, greedy=greedy))

    def to_dict(self) -> dict:
        return dict(schema=RECORD_SCHEMA, spec=self.spec, spec_hash=self.spec_hash, result=self.result,
                    versions=self.versions, commit=self.commit, date=self.date, host=self.host)

    @classmethod
    def from_dict(cls, d, where: str = "record") -> RunRecord:
        """A record from its dictionary form, verified: the schema, the keys, and its ``spec_hash``
        against its spec (an edited or forged record is refused, naming ``where``)."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} is not a run record (a JSON object); got {type(d).__name__}")
        if d.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"{where} has record schema {d.get('schema')!r}, not {RECORD_SCHEMA} (written by "
                             "another version of marl_kstep); rerun it into a new folder")
        missing = [key for key in ("spec", "spec_hash", "result") if not isinstance(d.get(key), dict | str)]
        if missing or not isinstance(d["spec"], dict) or not isinstance(d["result"], dict):
            raise ValueError(f"{where} lacks {missing or ['spec', 'result']}")
        if spec_hash(d["spec"]) != d["spec_hash"]:
            raise ValueError(f"{where}: spec_hash {d['spec_hash']!r} does not match its spec (hash "
                             f"{spec_hash(d['spec'])!r}): the record was edited or damaged")
        return cls(spec=d["spec"], spec_hash=d["spec_hash"], result=d["result"], versions=d.get("versions", {}),
                   commit=d.get("commit"), date=d.get("date"), host=d.get("host"))

    # read access in the dictionary form (tables, figures and scripts index records)
    def __getitem__(self, key):
        if key == "schema":
            return RECORD_SCHEMA
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)


def _certificate_summary(cert) -> dict | None:
    if cert is None:
        return None
    improving = cert.improving
    return dict(order=cert.order, one_opt=cert.one_opt, two_opt=cert.two_opt, improving=len(improving),
                best_improving_J=improving[0].J if improving else None, rounded=cert.rounded)


def run_one(spec: RunSpec, progress=None) -> RunRecord:
    """Train one spec under its Settings and return its record (pure: the same spec gives the same
    record, ``seconds``, ``date`` and ``host`` aside).

    ``progress(spec, iteration, iters, J_k, elapsed_seconds)``, if given, is called about twice a
    second during the run (a long single run says where it is)."""
    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    callback = None
    if progress is not None:
        t0, last = time.perf_counter(), [0.0]

        def callback(it, policy, J_k, J):
            now = time.perf_counter()
            if now - last[0] >= 0.5:
                last[0] = now
                progress(spec, it, spec.iters, J_k, now - t0)

    with configure(**spec.settings):
        mdp, env, default_start = build_target(spec.target)
        est = _estimator(spec, mdp, env)
        init = _start(spec, mdp, est, default_start)
        with warnings.catch_warnings():  # the record says where the run stopped
            warnings.simplefilter("ignore", SaddleWarning)
            res = train(est, options=spec.options, init=init, seed=spec.seed, callback=callback)  # seed: probes too
        J_greedy = final_J = None
        if mdp is not None and mdp.n_states <= GREEDY_MAX_STATES:
            J_greedy = value(mdp, Policy.deterministic(mdp, res.policy.greedy_tables()))
            if math.isnan(res.final_J):  # no exact values alongside (exact_alongside=False): J once, at the end
                final_J = value(mdp, res.policy)
    sampled = spec.estimator.kind == "sampled"
    final_J = _finite(res.final_J) if final_J is None else final_J
    result = dict(final_J=final_J, J_greedy=J_greedy, final_J_k=res.final_J_k,
                  judged="greedy" if sampled else "returned", J_judged=J_greedy if sampled else final_J,
                  iterations=res.iterations, converged=res.converged,
                  capped=res.capped, stop_reason=res.stop_reason, seconds=res.seconds,
                  history_J=[_finite(x) for x in res.history_J.tolist()], history_J_k=res.history_J_k.tolist(),
                  policy=[t.tolist() for t in res.policy.theta], stationary=res.stationary)
    if spec.escape:
        result["escapes"] = [{key: _finite(v) for key, v in e.items()} for e in res.escapes]
        result["certificate"] = _certificate_summary(res.certificate)
        result["two_opt"] = res.certificate.two_opt  # of the final policy's greedy tables
        # a run stopped by the cap is never certified, whatever its greedy tables' certificate says
        result["certified"] = res.certified
    if res.history_J_k_se is not None:
        result["history_J_k_se"] = res.history_J_k_se.tolist()
    if res.history_J_k_exact is not None:
        result["history_J_k_exact"] = res.history_J_k_exact.tolist()
    d = spec.to_dict()
    return RunRecord(spec=d, spec_hash=spec_hash(d), result=result, versions=versions(), commit=commit(),
                     date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), host=platform.node())
