r"""How the compiled passes use threads: waiting policy, scheduling, and a guard for
threading layers that are not thread-safe.

Three decisions, each measured (``benchmarks/threads.py``; docs/performance.md):

1. **Idle OpenMP threads sleep.** GNU OpenMP's workers spin for a while after every parallel
   region (``OMP_WAIT_POLICY`` unset: 300,000 spins). On a machine where other processes
   use the cores, a spinning worker takes the time slice the working thread needs, and the
   2-thread kernel ran up to 10x slower than 1 thread. Importing :mod:`marl_kstep` therefore
   sets ``OMP_WAIT_POLICY=passive`` -- *unless* the user already set ``OMP_WAIT_POLICY`` or
   ``GOMP_SPINCOUNT`` (theirs wins) -- before numba starts its OpenMP pool. It only takes
   effect if no OpenMP runtime was loaded into the process before (see
   :func:`thread_report`).
2. **Dynamic scheduling.** The passes split start states into ``8 x threads`` chunks that
   threads take one at a time (``numba.parallel_chunksize(1)``), so a thread that was
   descheduled does not hold the others up at the end of the region.
3. **A guard for unsafe layers.** numba's ``workqueue`` layer aborts the process when two
   Python threads launch parallel kernels at once. :func:`parallel_section` serialises
   launches under that layer (and before numba has chosen a layer); under ``omp`` and
   ``tbb``, which are thread-safe, it does nothing.
4. **One BLAS thread in the library's batched dense solves.** The exhaustive search and the
   certificates (:func:`marl_kstep.search.option_values`, behind ``best_deterministic``,
   ``certify`` and ``train(escape=True)``) solve thousands of small systems per call
   (``numpy.linalg.solve`` on stacks of at most ``Settings.dense_search_max_states``-sized
   matrices). OpenBLAS splits each one over its threads; with other processes on the cores
   a thread waits for a time slice at every split (measured: ``certify`` on 3-agent number
   matching 2.8-9.7x slower with two busy processes than with ``OPENBLAS_NUM_THREADS=1``,
   1.8x even on an idle machine). :func:`blas_threads` limits BLAS to :data:`BLAS_THREADS`
   thread(s) for the duration of those calls only (``threadpoolctl``) and restores the
   previous count after: the user's own numpy elsewhere keeps its threads. (The limit is
   process-wide while it holds: numpy called from another Python thread during the solve
   runs with it too.)
"""

from __future__ import annotations

import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

__all__ = ["parallel_section", "blas_threads", "thread_report", "WAIT_POLICY_SET_HERE", "BLAS_THREADS"]

#: BLAS threads inside the library's batched dense solves (:func:`blas_threads`).
BLAS_THREADS = 1
_controller: ThreadpoolController | None = None

#: True when this module set ``OMP_WAIT_POLICY=passive`` (the user had set neither it nor
#: ``GOMP_SPINCOUNT``).
WAIT_POLICY_SET_HERE = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if WAIT_POLICY_SET_HERE:
    os.environ["OMP_WAIT_POLICY"] = "passive"

_LOCK = threading.Lock()
#: Chunks a thread takes at a time in the parallel passes (0: numba's static split; kept as a
#: module constant so ``benchmarks/threads.py`` can measure the static split against it).
_CHUNKSIZE = 1
_SAFE_LAYERS = ("omp", "tbb")
_layer_checked: str | None = None


def _layer() -> str | None:
    """numba's threading layer, or ``None`` before the first parallel launch chose one."""
    global _layer_checked
    if _layer_checked is None:
        import numba

        try:
            _layer_checked = numba.threading_layer()
        except ValueError:  # not initialised yet
            return None
    return _layer_checked


@contextlib.contextmanager
def parallel_section():
    """Around every parallel kernel launch: dynamic scheduling of the chunks, and one launch
    at a time under a threading layer that is not thread-safe (or not chosen yet)."""
    import numba

    guard = _LOCK if _layer() not in _SAFE_LAYERS else contextlib.nullcontext()
    with guard, numba.parallel_chunksize(_CHUNKSIZE):
        yield


@contextlib.contextmanager
def blas_threads(limit: int | None = None):
    """Around the library's own batched dense solves: BLAS limited to ``limit`` threads
    (default :data:`BLAS_THREADS`), the previous counts restored on exit. Usable as a
    decorator (``@blas_threads()``)."""
    global _controller
    if _controller is None:  # scanned once: the BLAS libraries loaded with numpy and scipy
        _controller = ThreadpoolController()
    with _controller.limit(limits=BLAS_THREADS if limit is None else limit, user_api="blas"):
        yield


def _openmp_loaded_before() -> bool | None:
    """Whether an OpenMP runtime was mapped into the process (Linux only; ``None`` elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return None
    return any(name in maps for name in ("libgomp", "libiomp", "libomp"))


def thread_report() -> dict:
    """What the passes run with: threads, layer, wait policy and who set it."""
    import numba

    return {
        "threads": numba.get_num_threads(),
        "layer": _layer(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "wait_policy_set_by_marl_kstep": WAIT_POLICY_SET_HERE,
        "openmp_runtime_loaded": _openmp_loaded_before(),
        "blas_threads_in_batched_solves": BLAS_THREADS,
    }
