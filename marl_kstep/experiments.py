"""Sweeps over window lengths and update rules, result tables and safe result files.

Used by the scenario scripts in ``scenarios/`` and by the command line.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .model import JointMDP
from .policy import Policy, train
from .search import best_deterministic, count_deterministic

__all__ = ["run_sweep", "optimum_or_none", "format_table", "write_json_atomic", "write_text_atomic", "versions"]


def optimum_or_none(mdp: JointMDP, max_policies: int = 10**6) -> float | None:
    """Best deterministic value J*, or None when the exhaustive search is over ``max_policies``."""
    if count_deterministic(mdp) > max_policies:
        return None
    return best_deterministic(mdp, max_policies)[0]


def run_sweep(
    mdp: JointMDP,
    ks: Iterable[int],
    methods: Iterable[str] = ("pgd", "mirror"),
    *,
    init: Policy | None = None,
    step: float = 0.05,
    iters: dict | int = 1000,
    tol: float = 1e-10,
    j_star: float | None = None,
    scenario: str = "",
    progress=None,
) -> list[dict]:
    """Train every (k, method) pair from the same start and collect one row per run.

    Parameters
    ----------
    iters : int or dict
        Iteration cap, or one per method (e.g. ``{"pgd": 200, "mirror": 2000}``).
    j_star : float, optional
        Best deterministic value to report the gap ``J* - J`` against.
    progress : callable, optional
        ``progress(row)`` after each run.

    Returns
    -------
    list of dict
        Keys: scenario, k, method, step, final_J, final_J_k, J_star, gap, iterations,
        converged, seconds, history_J, history_J_k, policy.
    """
    rows = []
    for method in methods:
        cap = iters[method] if isinstance(iters, dict) else iters
        for k in ks:
            res = train(mdp, k=k, method=method, step=step, iters=cap, tol=tol, init=init)
            row = dict(
                scenario=scenario, k=int(k), method=method, step=res.step,
                final_J=res.final_J, final_J_k=res.final_J_k, J_star=j_star,
                gap=None if j_star is None else j_star - res.final_J,
                iterations=res.iterations, converged=res.converged, seconds=res.seconds,
                history_J=res.history_J.tolist(), history_J_k=res.history_J_k.tolist(),
                policy=[t.tolist() for t in res.policy.theta],
            )
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table: scenario, k, method, final J, J*, gap, iterations, seconds."""
    head = f"{'scenario':<22} {'k':>2} {'method':<7} {'final J':>11} {'J*':>11} {'gap':>10} {'iters':>6} {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        js = "—" if r.get("J_star") is None else f"{r['J_star']:.6f}"
        gap = "—" if r.get("gap") is None else f"{r['gap']:.2e}"
        lines.append(f"{r.get('scenario', ''):<22} {r['k']:>2} {r['method']:<7} {r['final_J']:>11.6f} {js:>11} "
                     f"{gap:>10} {r['iterations']:>6} {r['seconds']:>8.3f}")
    return "\n".join(lines)


def versions() -> dict:
    """Versions of Python and the numerical stack, for result files."""
    import numba
    import scipy

    from . import __version__

    return dict(marl_kstep=__version__, python=platform.python_version(), numpy=np.__version__,
                scipy=scipy.__version__, numba=numba.__version__)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename, so an
    interruption leaves either the old file or the new one, never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj) -> Path:
    """:func:`write_text_atomic` of ``obj`` as JSON."""
    return write_text_atomic(path, json.dumps(obj, indent=1))


def scenario_report(name: str, env, *, ks: Iterable[int], init=None, step: float = 0.05,
                    iters: dict | int = 1000, methods: Iterable[str] = ("pgd", "mirror"),
                    out_dir="results", config: dict | None = None, extra: dict | None = None) -> dict:
    """Compile ``env``, compute J* where feasible, sweep (k, method), print the table and write
    ``out_dir/<name>.json``. ``init`` may be a Policy or a callable ``init(mdp) -> Policy``.

    Returns the result dictionary that was written.
    """
    from .envs.pz import compile_env

    mdp = compile_env(env)
    start = init(mdp) if callable(init) else init
    j_star = optimum_or_none(mdp)
    rows = run_sweep(mdp, list(ks), methods, init=start, step=step, iters=iters, j_star=j_star, scenario=name)
    print(format_table(rows))
    result = dict(scenario=name, config=config or {}, n_states=mdp.n_states, J_star=j_star, rows=rows,
                  versions=versions(), **(extra or {}))
    if out_dir is not None:
        path = write_json_atomic(Path(out_dir) / f"{name}.json", result)
        print(f"wrote {path}")
    return result
