"""One settings object for every budget, threshold and tolerance of the library.

:func:`current` returns the :class:`Settings` in force *at call time*: the defaults below,
then the environment variable ``MARL_KSTEP_MAX_PATH_STEPS`` (read on every call, not at
import), then any :func:`configure` blocks around the call (innermost last). Settings are
immutable; :func:`configure` is a context manager and is local to the thread / asyncio task
that enters it (a :class:`contextvars.ContextVar`)::

    with mk.configure(max_path_steps=10**9, lump=False):
        mk.value_and_grad(mdp, policy, k=4)

Every public function that has a matching keyword (``max_path_steps=``, ``lump=``, ...)
takes its default from here; an explicit keyword always wins.
"""

from __future__ import annotations

import contextvars
import dataclasses
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

__all__ = ["Settings", "current", "configure", "model_bytes_limit", "physical_memory", "ENV_MAX_PATH_STEPS"]

#: Environment variable overriding :attr:`Settings.max_path_steps` (read at call time).
ENV_MAX_PATH_STEPS = "MARL_KSTEP_MAX_PATH_STEPS"


@dataclass(frozen=True)
class Settings:
    """Budgets, thresholds and tolerances (all read at call time through :func:`current`).

    Attributes
    ----------
    max_path_steps : int
        Budget on enumerated window-path steps per pass of the exact estimator.
    lump : bool
        Whether the exact estimator works on the bisimulation quotient by default.
    lump_max_transitions : int
        Lumping is skipped, with a warning, on models with more stored transitions.
    lump_stable_tol : float
        After refinement, the quotient is checked: every state's block transition
        probabilities must match its block representative's to this absolute tolerance
        (the O(m log n) refinement derives some block probabilities by subtraction).
    fused_max_states : int
        Problems with at most this many (lumped) states and serial passes run in one compiled
        call with a compiled dense LU.
    direct_solve_max_states : int
        Larger systems up to this size are solved with sparse LU; above it, a compiled BiCGSTAB.
    iter_rtol : float
        Relative residual BiCGSTAB must reach; a system that misses it falls back to sparse LU.
    direct_fallback_max_states : int
        Largest system that fallback may factor (a larger one is refused with a ValueError:
        a sparse LU of a large system has no useful bound on its time or memory).
    serial_max_path_steps : int
        Enumerations with fewer path steps (and their solves) run on the calling thread: a
        parallel region needs every worker to wake and reach its end, which on a busy machine
        can take a time slice (about 1-2 ms measured); below a few ms of work that costs more
        than the second core saves (benchmarks/threads.py).
    parallel_solve_min_nnz : int
        The value and occupancy systems are solved side by side on two threads when the plan
        is parallel or ``M`` has at least this many nonzeros (a solve costs about 100-200
        mat-vecs, so a large ``M`` is worth the second thread even when the walk is short).
    singular_rtol : float
        ``I - M`` counts as (nearly) singular when its smallest LU pivot is below this times
        its largest. Off the simplex this can happen at any discount; on it,
        cond <= (1 + g^k)/(1 - g^k), so only when g^k is within about this of 1.
    row_sum_tol : float
        Tolerance on transition rows and initial distributions summing to one.
    simplex_tol : float
        Tolerance for policy rows to count as on the simplex.
    max_model_bytes : int
        Building a model (scenario compilation, enumerating start states) refuses when its
        estimated peak memory is larger; 0 (the default) means half of this machine's
        physical memory (:func:`model_bytes_limit`).
    max_policies : int
        Exhaustive searches refuse more deterministic joint tables than this.
    dense_search_max_states : int
        Exhaustive search uses batched dense solves up to this many states, sparse LU above.
    search_batch_bytes : int
        Memory for one batch of dense solves in the exhaustive search.
    dpomdp_max_dense_entries : int
        The .dpomdp loader refuses models whose dense arrays would hold more entries.
    dpomdp_prob_tol : float
        Tolerance on T and O rows of a .dpomdp file summing to one.
    max_sample_steps : int
        Budget on simulated steps (episodes times horizon) per call of the sampled estimator
        (``SampledKStep``, ``rollout``); a larger request is refused before any work.
    """

    max_path_steps: int = 300_000_000
    lump: bool = True
    lump_max_transitions: int = 200_000_000
    lump_stable_tol: float = 1e-12
    fused_max_states: int = 64
    direct_solve_max_states: int = 64
    iter_rtol: float = 1e-13
    direct_fallback_max_states: int = 50_000
    serial_max_path_steps: int = 200_000
    parallel_solve_min_nnz: int = 200_000
    singular_rtol: float = 1e-10
    row_sum_tol: float = 1e-9
    simplex_tol: float = 1e-9
    max_model_bytes: int = 0
    max_policies: int = 10**6
    dense_search_max_states: int = 600
    search_batch_bytes: int = 64 * 2**20
    dpomdp_max_dense_entries: int = 60_000_000
    dpomdp_prob_tol: float = 1e-6
    max_sample_steps: int = 2_000_000_000


_DEFAULTS = Settings()
_OVERRIDES: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar("marl_kstep_settings", default=())


def _short(val) -> str:
    text = repr(val)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_changes(changes: dict) -> dict:
    """The changes with every value checked and converted to its field's type: booleans
    (Python or NumPy), integers (Python or NumPy, not bool) in ``0..2**63-1``, tolerances as
    ``float`` in ``[0, 1)`` (so a huge ``int`` never reaches compiled code, and a relative
    tolerance of 1 or more cannot stop a solve before it starts)."""
    names = {f.name for f in dataclasses.fields(Settings)}
    out = {}
    for key, val in changes.items():
        if key not in names:
            raise ValueError(f"unknown setting {key!r}; settings are: {', '.join(sorted(names))}")
        default = getattr(_DEFAULTS, key)
        is_bool = isinstance(val, bool | np.bool_)
        if isinstance(default, bool):
            if not is_bool:
                raise ValueError(f"setting {key} must be True or False; got {key}={_short(val)}")
            out[key] = bool(val)
        elif isinstance(default, int):
            if is_bool or not isinstance(val, numbers.Integral) or not 0 <= val < 2**63:
                raise ValueError(f"setting {key} must be an integer in 0..2**63-1; got {key}={_short(val)}")
            out[key] = int(val)
        else:
            try:
                x = float(val) if isinstance(val, numbers.Real) and not is_bool else None
            except OverflowError:  # an int beyond the float range
                x = None
            if x is None or not 0 <= x < 1:  # every float setting is a tolerance: >= 1 would accept anything
                raise ValueError(f"setting {key} must be a tolerance in [0, 1); got {key}={_short(val)}")
            out[key] = x
    return out


def current() -> Settings:
    """The settings in force now: defaults, the environment, then :func:`configure` blocks."""
    s = _DEFAULTS
    raw = os.environ.get(ENV_MAX_PATH_STEPS)
    if raw:
        try:
            budget = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"environment variable {ENV_MAX_PATH_STEPS} must be an integer; got {raw!r}") from None
        if not 0 <= budget < 2**63:
            raise ValueError(f"environment variable {ENV_MAX_PATH_STEPS} must be an integer in 0..2**63-1; "
                             f"got {_short(raw)}")
        s = dataclasses.replace(s, max_path_steps=budget)
    for changes in _OVERRIDES.get():
        s = dataclasses.replace(s, **changes)
    return s


@contextmanager
def configure(**changes):
    """Change settings inside a ``with`` block (this thread / task only); see :class:`Settings`."""
    changes = _check_changes(changes)
    token = _OVERRIDES.set((*_OVERRIDES.get(), changes))
    try:
        yield current()
    finally:
        _OVERRIDES.reset(token)


def physical_memory() -> int:
    """This machine's physical memory in bytes (``os.sysconf``; 8 GiB where it is unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def model_bytes_limit(settings: Settings | None = None) -> int:
    """The memory a model build may take: ``Settings.max_model_bytes``, or half of
    :func:`physical_memory` when that is 0."""
    s = current() if settings is None else settings
    return s.max_model_bytes if s.max_model_bytes > 0 else physical_memory() // 2
