"""Executors: run specs and yield their records as they finish, on one machine or a cluster.

* ``serial`` -- in this process;
* ``process`` -- local worker processes (spawned, one thread of every numerical library each, so
  workers never fight over cores; Ctrl-C is handled by the parent only; on Linux every worker is
  killed when its parent dies, even by SIGKILL, so no orphan keeps computing);
* ``dask`` -- Dask distributed: a local cluster of ``workers`` single-threaded processes, or an
  existing cluster at ``scheduler`` (e.g. one started by dask-jobqueue on SLURM).

Every run executes under its spec's Settings (:func:`~marl_kstep.experiments.run.run_one`), so a
spec gives the same record (up to ``seconds``, ``date`` and ``host``) whatever the executor.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator

from ..interrupt import checkpoint
from ..validation import check_choice, check_int
from .run import RunRecord, run_one
from .spec import RunSpec

__all__ = ["EXECUTORS", "execute"]

EXECUTORS = ("serial", "process", "dask")

#: Worker processes run one thread of every library, so that workers never fight over cores.
_ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no orphans after a SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _worker_init(parent_pid: int | None = None) -> None:
    """Worker processes: one numba thread, Ctrl-C is the parent's business, and they die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the request took hold
        os._exit(1)
    import numba

    numba.set_num_threads(1)


def _run_to_dict(spec) -> dict:
    """Workers send records back as plain data."""
    return run_one(spec).to_dict()


def _serial(specs, run_progress):
    for spec in specs:
        yield run_one(spec, progress=run_progress)
        checkpoint()


def _poll(futures, done_of, cancel):
    """Yield results as futures finish, waking every 0.2 s so a deferred Ctrl-C is seen."""
    pending = set(futures)
    try:
        while pending:
            done, pending = done_of(pending)
            for fut in done:
                yield RunRecord.from_dict(fut.result())
            checkpoint()
    except BaseException:
        cancel(pending)
        raise


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


@contextlib.contextmanager
def _children_ignore_sigint():
    """Start worker processes with SIGINT ignored from their first instruction (an ignored signal stays
    ignored across exec, and Python then installs no KeyboardInterrupt handler), so a Ctrl-C that reaches
    the whole process group while they start prints no traceback from them."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _process(specs, workers):
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                  initargs=(os.getpid(),))
    finished = False
    try:
        with _environment(_ONE_THREAD), _children_ignore_sigint():  # the pool starts its processes on these submits
            futures = [pool.submit(_run_to_dict, spec) for spec in specs]
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
    try:
        client = Client(scheduler if scheduler is not None else cluster, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise ValueError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from None
    try:
        client.run(_worker_init)
        futures = client.map(_run_to_dict, list(specs), pure=False)

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
        return c * s.estimator.episodes / 100 if s.estimator.kind == "sampled" else c
    return sorted(specs, key=cost, reverse=True)


def execute(specs: list[RunSpec], executor: str = "serial", *, workers: int | None = None,
            scheduler: str | None = None, run_progress=None) -> Iterator[RunRecord]:
    """Records of ``specs`` in the order they finish, on the chosen executor (parallel executors
    start the likely longest runs first; the records do not depend on the order). ``run_progress``:
    see :func:`~marl_kstep.experiments.run.run_one` (serial executor only)."""
    executor = check_choice("executor", executor, EXECUTORS)
    if executor == "serial" and workers is not None:
        raise ValueError(f"workers applies to the process and dask executors; got workers={workers!r} with "
                         "executor='serial'")
    if executor != "dask" and scheduler is not None:
        raise ValueError(f"scheduler applies to executor='dask'; got scheduler={scheduler!r}")
    workers = (os.cpu_count() or 1) if workers is None else check_int("workers", workers, minimum=1)
    specs = [s if isinstance(s, RunSpec) else RunSpec.from_dict(s) for s in specs]
    if executor == "serial":
        return _serial(specs, run_progress)
    if executor == "process":
        return _process(_longest_first(specs), workers)
    return _dask(_longest_first(specs), workers, scheduler)
