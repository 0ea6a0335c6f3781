r"""Sweeps of run specs into a results folder: resume by full spec, a writer's lock, shards, executors.

The parts live in their own modules and are re-exported here:

* :mod:`~marl_kstep.experiments.spec` -- :class:`RunSpec` and its typed parts (:class:`Target`,
  :class:`EstimatorSpec`, :class:`~marl_kstep.optim.TrainOptions`), resolved and hashed;
* :mod:`~marl_kstep.experiments.run` -- :func:`run_one` (spec in, :class:`RunRecord` out) and
  :func:`build_target`;
* :mod:`~marl_kstep.experiments.store` -- :class:`RunStore`, ``runs.jsonl`` verified line by line;
* :mod:`~marl_kstep.experiments.executors` -- serial, process and Dask executors.

:func:`run_specs` skips exactly the specs already in the folder (``resume=True``), refuses to reuse a
folder otherwise, holds the folder's writer lock while it runs, and runs the rest (or one shard of
them, for cluster array jobs) on an executor. Ctrl-C stops between runs: finished runs are kept,
running ones are cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..interrupt import deferred_interrupts
from ..validation import check_int
from .executors import EXECUTORS, execute
from .run import RunRecord, build_target, commit, run_one
from .spec import EstimatorSpec, RunSpec, Target, canonical_json
from .store import FolderLockedError, RunStore

__all__ = ["EXECUTORS", "EstimatorSpec", "FolderLockedError", "RunRecord", "RunSpec", "RunStore", "Target",
           "build_target", "canonical_json", "commit", "execute", "run_one", "run_specs", "shard_of"]


def shard_of(specs: list, shard) -> list:
    """The ``i``-th of ``n`` slices of ``specs`` (``shard=(i, n)``, ``0 <= i < n``): every ``n``-th spec
    from position ``i``, so the ``n`` shards of the same list are disjoint and cover it."""
    if not isinstance(shard, tuple | list) or len(shard) != 2:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n; got shard={shard!r}")
    n = check_int("shard count", shard[1], minimum=1)
    i = check_int("shard index", shard[0], minimum=0, maximum=n - 1)
    return list(specs)[i::n]


def run_specs(specs: Iterable[RunSpec], folder, *, resume: bool = False, executor: str = "serial",
              workers: int | None = None, scheduler: str | None = None, shard: tuple[int, int] | None = None,
              progress: Callable[[RunRecord, int, int, float], object] | None = None,
              run_progress: Callable | None = None) -> list[RunRecord]:
    """Run every spec not yet in ``folder/runs.jsonl`` and append its record when it finishes.

    Parameters
    ----------
    resume : bool
        Skip the specs (by full-spec hash) already in the folder. Without it a folder that
        holds runs is refused, so results are never mixed or overwritten by accident.
    shard : (i, n), optional
        Run only the ``i``-th of ``n`` slices of ``specs`` (:func:`shard_of`; e.g. a SLURM array job
        with ``--array=0-(n-1)``); shards append to the same folder, one after another (the lock).
    progress : callable, optional
        ``progress(record, finished, total, eta_seconds)`` after each run.
    run_progress : callable, optional
        Serial executor: ``run_progress(spec, iteration, iters, J_k, elapsed_seconds)`` during each run
        (about twice a second), for long single runs.

    Returns
    -------
    list of RunRecord
        The records of this call (finished runs only). Ctrl-C raises ``KeyboardInterrupt``
        after the finished runs are saved.
    """
    store = RunStore(folder)
    specs = [s if isinstance(s, RunSpec) else RunSpec.from_dict(s) for s in specs]
    if shard is not None:
        specs = shard_of(specs, shard)
    out = []
    with store.writer():
        if store.exists() and not resume:
            raise ValueError(f"{store.path} already holds runs; pass resume=True (--resume) to add to them, "
                             "or choose another folder")
        done = store.hashes()
        todo, seen = [], set(done)
        for s in specs:
            if s.hash not in seen:
                seen.add(s.hash)
                todo.append(s)
        t0 = time.perf_counter()
        with deferred_interrupts():
            for rec in execute(todo, executor, workers=workers, scheduler=scheduler, run_progress=run_progress):
                store.append(rec)
                out.append(rec)
                if progress is not None:
                    elapsed = time.perf_counter() - t0
                    progress(rec, len(out), len(todo), elapsed / len(out) * (len(todo) - len(out)))
    return out
