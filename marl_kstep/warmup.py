"""Compile every kernel ahead (``marl-kstep warmup``): for CI images, clusters, containers.

The package compiles each numba kernel on its first use and caches the machine code on disk
(``cache=True``; :mod:`marl_kstep._jitcache` keeps that cache consistent with the source).
A first call therefore waits for exactly the kernels it uses. :func:`warmup` instead runs every
compiled route once on tiny models, so that later processes on the machine only load:

* the exact passes for every kind of walk (the dedicated loops of ``k = 1``, ``2`` and ``3``,
  the general walk at ``k = 4``), each through the one-call small path, the serial passes and the
  parallel passes, with and without the gradient, and the step counting;
* the solvers: the compiled dense LU (small path), BiCGSTAB (the pair on two threads and
  one after the other) and the sparse LU fallback;
* lumping's compiled refinement and its stability check (models above the numpy route's
  size use them);
* the sampled estimator (the compiled fast path), the certificates, the exhaustive search
  and a training run with certified escapes.

Each step is timed; the result is a list of ``(step, seconds)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from ._refine import check_stable, refine_lumping
from .certificates import certify
from .envs import number_matching
from .estimators import ExactKStep, count_path_steps
from .model import JointMDP
from .optim import train
from .policy import Policy
from .sampling import SampledKStep
from .search import best_deterministic
from .settings import configure

__all__ = ["warmup", "STEPS"]


def _model() -> JointMDP:
    return number_matching.build_mdp(n_agents=2, n_numbers=3)


def _exact(k: int) -> Callable[[], None]:
    def run():
        mdp = _model()
        pol = Policy.near_uniform(mdp, seed=0)
        routes = (dict(),  # the one-call small path
                  dict(fused_max_states=0, direct_solve_max_states=10**6),  # serial passes, sparse LU
                  dict(fused_max_states=0, direct_solve_max_states=0),  # serial passes, BiCGSTAB one by one
                  dict(fused_max_states=0, direct_solve_max_states=0, serial_max_path_steps=0,
                       parallel_solve_min_nnz=0))  # parallel passes, BiCGSTAB pair
        for route in routes:
            with configure(**route):
                est = ExactKStep(mdp, k, lump=False)
                est.value(pol)
                est.value_and_grad(pol)
        count_path_steps(mdp, k)
    return run


def _lumping() -> None:
    mdp = _model()
    first = np.concatenate([np.stack(mdp.obs, axis=1), mdp.rewards.view(np.int64)], axis=1)
    init = np.unique(first, axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    label = refine_lumping(mdp.indptr, mdp.indices, mdp.probs, mdp.n_states, mdp.n_joint_actions, init)
    check_stable(mdp.indptr, mdp.indices, mdp.probs, mdp.n_states, mdp.n_joint_actions, label)


def _sampled() -> None:
    mdp = _model()
    pol = Policy.near_uniform(mdp, seed=0)
    for k in (1, 2):
        SampledKStep(mdp, k, episodes=64, seed=0).estimate(pol)


def _search() -> None:
    mdp = _model()
    _, best = best_deterministic(mdp)
    certify(mdp, best, order=2)
    train(mdp, k=1, iters=20, init=Policy.near_uniform(mdp, seed=0), escape=True)


#: The warm-up steps, in order: (name, function).
STEPS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("exact k=1", _exact(1)),
    ("exact k=2", _exact(2)),
    ("exact k=3", _exact(3)),
    ("exact k=4 (general walk)", _exact(4)),
    ("lumping kernels", _lumping),
    ("sampled estimator", _sampled),
    ("search, certificates, escapes", _search),
)


def warmup(verbose: bool = True, file=None) -> list[tuple[str, float]]:
    """Run every compiled route once (see the module docstring); returns ``(step, seconds)``.

    With ``verbose``, one line per step goes to ``file`` (default stderr)."""
    out = sys.stderr if file is None else file
    done = []
    for name, step in STEPS:
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        done.append((name, dt))
        if verbose:
            print(f"  {name}: {dt:.1f} s", file=out, flush=True)
    return done
