r"""Experiments as run specs: one record per run, resume by full spec, serial / process / Dask executors.

A :class:`RunSpec` holds every setting of one training run -- the target (a built-in scenario and
its config, a ``.dpomdp`` file and its discount, or a user's PettingZoo env), the estimator and its
settings, ``k``, the update rule, step, iteration cap, tolerance, seed and start. Its
:attr:`RunSpec.hash` is the SHA-256 of its canonical JSON, so two specs are the same run exactly
when every setting agrees.

:func:`run_one` is pure and picklable: spec in, record out (``spec``, ``spec_hash``, ``result``,
``versions``, ``commit``). A results folder holds ``runs.jsonl``, one record per finished run,
appended under an exclusive file lock in one write (safe with concurrent writers; a kill loses at
most the runs in progress, and a partly written last line is ignored when read).
:func:`run_specs` skips exactly the specs already in the folder (``resume=True``), refuses to
reuse a folder otherwise, and runs the rest on an executor:

* ``serial`` -- in this process;
* ``process`` -- local worker processes (spawned, one numba thread each, so workers never fight
  over cores; Ctrl-C is handled by the parent only);
* ``dask`` -- Dask distributed: a local cluster of ``workers`` single-threaded processes, or an
  existing cluster at ``scheduler`` (e.g. one started by dask-jobqueue on SLURM).

Whatever the executor, a spec gives the same record (up to ``seconds``). Ctrl-C stops between runs:
finished runs are kept, running ones are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import functools
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..envs import compile_env
from ..estimators import ExactKStep
from ..interrupt import checkpoint, deferred_interrupts
from ..model import load_dpomdp, random_model, random_model_args
from ..optim import SaddleWarning, train
from ..policy import Policy
from ..sampling import SampledKStep
from ..validation import check_bool, check_choice, check_int, check_k, check_positive
from .io import versions
from .scenarios import SCENARIOS

__all__ = ["RunSpec", "RunStore", "build_target", "run_one", "run_specs", "EXECUTORS"]

EXECUTORS = ("serial", "process", "dask")


def canonical_json(obj) -> str:
    """JSON with sorted keys and no spaces: equal settings give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunSpec:
    """Every setting of one training run (see the module docstring).

    Attributes
    ----------
    target : dict
        ``{"scenario": name, "config": {...}}``, ``{"dpomdp": path, "gamma": g}``,
        ``{"random": {"family": f, ..., "seed": s}}`` (:func:`~marl_kstep.random_model`; resolved on
        construction by :func:`~marl_kstep.random_model_args`) or
        ``{"env": "module:factory", "gamma": g}`` (sampled estimator only).
    k : int
    method : {"pgd", "mirror"}
    step, iters, tol : float, int, float
        As in :func:`marl_kstep.train`.
    seed : int or None
        Seed of a ``random`` start and of a sampled estimator.
    start : {"default", "uniform", "near_uniform", "random"}
        ``default``: the scenario's trap start (the exact uniform policy for files and envs);
        ``uniform``: the exact uniform policy; ``near_uniform``: ``Policy.near_uniform`` (seed
        ``seed`` or 0), ``train``'s own default; ``random``: a Dirichlet(1) start from ``seed``.
    estimator : dict
        ``{"kind": "exact"}`` or ``{"kind": "sampled", "episodes": n, "horizon": h or None}``.
    escape : bool
        ``train(..., escape=True)``: certified jumps out of coordination traps (SPEC §9). Left
        out of the canonical dict when False, so specs written before it keep their hashes.
    escape_order : int
        Largest number of slots an escape changes together (``train``'s ``escape_order``; in the
        canonical dict only when ``escape`` is set and it differs from 2).
    """

    target: dict
    k: int
    method: str = "pgd"
    step: float = 0.05
    iters: int = 500
    tol: float = 1e-10
    seed: int | None = None
    start: str = "default"
    estimator: dict = field(default_factory=lambda: {"kind": "exact"})
    escape: bool = False
    escape_order: int = 2

    def __post_init__(self):
        if not isinstance(self.target, dict) or not ({"scenario", "dpomdp", "env", "random"} & set(self.target)):
            raise ValueError(f"target must be a dict with 'scenario', 'dpomdp', 'env' or 'random'; "
                             f"got target={self.target!r}")
        if "random" in self.target:  # resolved (every argument, defaults filled): equal models, equal hashes
            if not isinstance(self.target["random"], dict) or set(self.target) != {"random"}:
                raise ValueError(f"target must be {{'random': {{'family': ..., 'seed': ...}}}}; got {self.target!r}")
            try:
                resolved = random_model_args(**self.target["random"])
            except TypeError as exc:  # an unknown or missing argument
                raise ValueError(f"target['random']: {exc}") from None
            object.__setattr__(self, "target", {"random": resolved})
        check_k(self.k)
        check_choice("method", self.method, ("pgd", "mirror"))
        check_positive("step", self.step)
        check_int("iters", self.iters, minimum=0)
        check_positive("tol", self.tol, allow_zero=True)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        check_choice("start", self.start, ("default", "uniform", "near_uniform", "random"))
        object.__setattr__(self, "escape", check_bool("escape", self.escape))  # a NumPy bool becomes a bool
        object.__setattr__(self, "escape_order", check_int("escape_order", self.escape_order, minimum=1))
        if self.start == "random" and self.seed is None:
            raise ValueError("start='random' needs a seed")
        kind = self.estimator.get("kind") if isinstance(self.estimator, dict) else None
        check_choice("estimator kind", kind, ("exact", "sampled"))
        if "env" in self.target and kind != "sampled":
            raise ValueError("a user environment has no model: its runs need the sampled estimator")
        if "env" in self.target and self.escape:
            raise ValueError("escape=True certifies on a model; a user environment has none")

    def to_dict(self) -> dict:
        """The spec as plain JSON data (canonical: the same settings give the same dict)."""
        d = asdict(self)
        if not d["escape"] or d["escape_order"] == 2:
            del d["escape_order"]  # defaults are left out: older specs keep their hashes
        if not d["escape"]:
            del d["escape"]
        return json.loads(canonical_json(d))

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(**d)

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of every setting."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"k={self.k} {self.method} seed={self.seed} {self.estimator['kind']}"


# ---------------------------------------------------------------------------- targets
@functools.lru_cache(maxsize=8)
def _target(canonical: str):
    target = json.loads(canonical)
    if "scenario" in target:
        name = target["scenario"]
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
        module, defaults, start = SCENARIOS[name]
        env = module.parallel_env(**{**defaults, **target.get("config", {})})
        return compile_env(env), env, start
    if "dpomdp" in target:
        return load_dpomdp(target["dpomdp"], gamma=target.get("gamma")), None, None
    if "random" in target:
        return random_model(**target["random"]), None, None
    mod_name, _, fn_name = target["env"].partition(":")
    env = getattr(importlib.import_module(mod_name), fn_name)()
    return None, env, None


def build_target(target: dict):
    """``(mdp or None, env or None, default start function or None)`` of a spec's target (cached)."""
    return _target(canonical_json(target))


def _estimator(spec: RunSpec, mdp, env):
    est = spec.estimator
    if est["kind"] == "exact":
        return ExactKStep(mdp, spec.k)
    return SampledKStep(mdp if mdp is not None else env, spec.k,
                        gamma=None if mdp is not None else spec.target.get("gamma"),
                        episodes=est.get("episodes", 1000), horizon=est.get("horizon"),
                        floor=est.get("floor", 0.01), seed=0 if spec.seed is None else spec.seed)


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The git commit of the package's checkout, or None (an installed copy)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_one(spec: RunSpec) -> dict:
    """Train one spec and return its record (pure: the same spec gives the same record, seconds aside)."""
    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    mdp, env, default_start = build_target(spec.target)
    est = _estimator(spec, mdp, env)
    space = mdp if mdp is not None else est
    if spec.start == "random":
        init = Policy.random(space, spec.seed)
    elif spec.start == "near_uniform":
        init = Policy.near_uniform(space, 0 if spec.seed is None else spec.seed)
    elif spec.start == "default" and default_start is not None:
        init = default_start(mdp)
    else:
        init = Policy.uniform(space)
    with warnings.catch_warnings():  # the record says where the run stopped
        warnings.simplefilter("ignore", SaddleWarning)
        res = train(est, method=spec.method, step=spec.step, iters=spec.iters, tol=spec.tol, init=init,
                    seed=spec.seed, escape=spec.escape, escape_order=spec.escape_order)  # seed: the probes too
    result = dict(final_J=None if math.isnan(res.final_J) else res.final_J,
                  final_J_k=res.final_J_k, iterations=res.iterations, converged=res.converged,
                  capped=not res.converged and res.iterations >= spec.iters, seconds=res.seconds,
                  history_J=[None if math.isnan(x) else x for x in res.history_J.tolist()],
                  history_J_k=res.history_J_k.tolist(), policy=[t.tolist() for t in res.policy.theta],
                  stationary=res.stationary)
    if spec.escape:
        result["escapes"] = [{key: None if isinstance(v, float) and math.isnan(v) else v for key, v in e.items()}
                             for e in res.escapes]
        result["two_opt"] = res.certificate.two_opt  # of the final policy's greedy tables
    if res.history_J_k_se is not None:
        result["history_J_k_se"] = res.history_J_k_se.tolist()
    if res.history_J_k_exact is not None:
        result["history_J_k_exact"] = res.history_J_k_exact.tolist()
    return dict(spec=spec.to_dict(), spec_hash=spec.hash, result=result, versions=versions(), commit=commit())


# ---------------------------------------------------------------------------- the results folder
class RunStore:
    """``folder/runs.jsonl``: one finished run per line (see the module docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / "runs.jsonl"

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def records(self) -> list[dict]:
        """Every complete record, first occurrence of each spec hash (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        out, seen = [], set()
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(rec, dict) and rec.get("spec_hash") not in seen and "result" in rec:
                seen.add(rec["spec_hash"])
                out.append(rec)
        return out

    def hashes(self) -> set[str]:
        return {r["spec_hash"] for r in self.records()}

    def append(self, record: dict) -> None:
        """Append one record as one line, in one write, under an exclusive lock (fsync'd)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a line torn by an earlier kill must not swallow this record: start on a new line
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# ---------------------------------------------------------------------------- executors
def _worker_init() -> None:
    """Worker processes: one numba thread, and Ctrl-C is the parent's business."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numba

    numba.set_num_threads(1)


def _serial(specs):
    for spec in specs:
        yield run_one(spec)
        checkpoint()


def _poll(futures, done_of, cancel):
    """Yield results as futures finish, waking every 0.2 s so a deferred Ctrl-C is seen."""
    pending = set(futures)
    try:
        while pending:
            done, pending = done_of(pending)
            for fut in done:
                yield fut.result()
            checkpoint()
    except BaseException:
        cancel(pending)
        raise


#: Worker processes run one thread of every library, so that workers never fight over cores.
_ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _environment(values: dict):
    """Set environment variables while worker processes start (spawned children inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _process(specs, workers):
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    finished = False
    try:
        with _environment(_ONE_THREAD):  # the pool starts its processes on these submits
            futures = [pool.submit(run_one, spec) for spec in specs]
        yield from _poll(futures, lambda p: cf.wait(p, timeout=0.2, return_when=cf.FIRST_COMPLETED),
                         lambda p: [f.cancel() for f in p])
        finished = True
    finally:
        if not finished:  # interrupted or failed: runs in progress cannot be cancelled, so end their workers
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _dask(specs, workers, scheduler):
    try:
        from distributed import Client, LocalCluster, wait
    except ImportError as err:  # the optional extra
        raise ValueError("executor='dask' needs dask.distributed: pip install 'marl_kstep[cluster]'") from err
    cluster = None
    if scheduler is None:
        with _environment(_ONE_THREAD):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(scheduler if scheduler is not None else cluster)
    try:
        client.run(_worker_init)
        futures = client.map(run_one, list(specs), pure=False)

        def done_of(pending):
            try:
                res = wait(list(pending), timeout=0.2, return_when="FIRST_COMPLETED")
            except TimeoutError:  # distributed.wait raises when nothing finished in time
                return set(), pending
            return set(res.done), set(res.not_done)

        yield from _poll(futures, done_of, lambda p: client.cancel(list(p)))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _longest_first(specs: list[RunSpec]) -> list[RunSpec]:
    """Workers take the likely longest runs first (cost ~ k * iters; sampled runs x episodes / 100),
    so a sweep does not end with one worker busy on a long run while the others idle."""
    def cost(s):
        c = s.k * max(s.iters, 1)
        return c * s.estimator.get("episodes", 100) / 100 if s.estimator.get("kind") == "sampled" else c
    return sorted(specs, key=cost, reverse=True)


def execute(specs: list[RunSpec], executor: str = "serial", *, workers: int | None = None,
            scheduler: str | None = None) -> Iterator[dict]:
    """Records of ``specs`` in the order they finish, on the chosen executor (parallel executors
    start the likely longest runs first; the records do not depend on the order)."""
    executor = check_choice("executor", executor, EXECUTORS)
    workers = (os.cpu_count() or 1) if workers is None else check_int("workers", workers, minimum=1)
    if executor == "serial":
        return _serial(specs)
    if executor == "process":
        return _process(_longest_first(specs), workers)
    return _dask(_longest_first(specs), workers, scheduler)


def run_specs(specs: Iterable[RunSpec], folder, *, resume: bool = False, executor: str = "serial",
              workers: int | None = None, scheduler: str | None = None,
              progress: Callable[[dict, int, int, float], object] | None = None) -> list[dict]:
    """Run every spec not yet in ``folder/runs.jsonl`` and append its record when it finishes.

    Parameters
    ----------
    resume : bool
        Skip the specs (by full-spec hash) already in the folder. Without it a folder that
        holds runs is refused, so results are never mixed or overwritten by accident.
    progress : callable, optional
        ``progress(record, finished, total, eta_seconds)`` after each run.

    Returns
    -------
    list of dict
        The records of this call (finished runs only). Ctrl-C raises ``KeyboardInterrupt``
        after the finished runs are saved.
    """
    store = RunStore(folder)
    specs = [s if isinstance(s, RunSpec) else RunSpec.from_dict(s) for s in specs]
    if store.exists() and not resume:
        raise ValueError(f"{store.path} already holds runs; pass resume=True (--resume) to add to them, "
                         "or choose another folder")
    done = store.hashes()
    todo, seen = [], set(done)
    for s in specs:
        if s.hash not in seen:
            seen.add(s.hash)
            todo.append(s)
    out = []
    t0 = time.perf_counter()
    with deferred_interrupts():
        for rec in execute(todo, executor, workers=workers, scheduler=scheduler):
            store.append(rec)
            out.append(rec)
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress(rec, len(out), len(todo), elapsed / len(out) * (len(todo) - len(out)))
    return out
