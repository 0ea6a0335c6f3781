"""Sweeps over window lengths and update rules, and the scenario reports of ``scenarios/``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..envs import compile_env
from ..model import JointMDP
from ..optim import train
from ..policy import Policy
from .io import write_json_atomic
from .records import format_table, optimum_or_none, results_file, run_record

__all__ = ["run_sweep", "scenario_report"]


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
    """Train every (k, method) pair from the same start and collect one run record per run.

    Parameters
    ----------
    iters : int or dict
        Iteration cap, or one per method (e.g. ``{"pgd": 200, "mirror": 2000}``).
    j_star : float, optional
        Best deterministic value to report the gap ``J* - J`` against.
    progress : callable, optional
        ``progress(record)`` after each run.

    Returns
    -------
    list of dict
        :func:`~marl_kstep.experiments.records.run_record` of every run.
    """
    rows = []
    for method in methods:
        cap = iters[method] if isinstance(iters, dict) else iters
        for k in ks:
            res = train(mdp, k=k, method=method, step=step, iters=cap, tol=tol, init=init)
            row = run_record(res, scenario=scenario, j_star=j_star)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def scenario_report(name: str, env, *, ks: Iterable[int], init=None, step: float = 0.05,
                    iters: dict | int = 1000, methods: Iterable[str] = ("pgd", "mirror"),
                    out_dir="results", config: dict | None = None, extra: dict | None = None) -> dict:
    """Compile ``env``, compute J* where feasible, sweep (k, method), print the table and write
    ``out_dir/<name>.json``. ``init`` may be a Policy or a callable ``init(mdp) -> Policy``.

    Returns the results dictionary that was written.
    """
    mdp = compile_env(env)
    start = init(mdp) if callable(init) else init
    j_star = optimum_or_none(mdp)
    rows = run_sweep(mdp, list(ks), methods, init=start, step=step, iters=iters, j_star=j_star, scenario=name)
    print(format_table(rows))
    result = results_file(name, config or {}, mdp, j_star, rows, **(extra or {}))
    if out_dir is not None:
        path = write_json_atomic(Path(out_dir) / f"{name}.json", result)
        print(f"wrote {path}")
    return result
