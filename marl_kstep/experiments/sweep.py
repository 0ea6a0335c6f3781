"""Sweeps over window lengths and update rules, and the scenario reports of ``scenarios/``.

:func:`run_scenario` and :func:`scenario_report` (the scenario scripts and the demo) go through run specs
(:mod:`marl_kstep.experiments.runner`); :func:`run_sweep` trains a given model from a given policy (any
start, any model) in this process.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..model import JointMDP
from ..optim import train
from ..policy import Policy
from .io import write_json_atomic
from .records import format_table, optimum_or_none, results_file, row_from_record, run_record
from .runner import RunSpec, build_target, execute

__all__ = ["run_scenario", "run_sweep", "scenario_report", "scenario_specs"]


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


def scenario_specs(name: str, config: dict, ks: Iterable[int], methods: Iterable[str] = ("pgd", "mirror"), *,
                   step: float = 0.05, iters: dict | int = 1000, tol: float = 1e-10) -> list[RunSpec]:
    """Run specs of a built-in scenario swept over (method, k) from its default (trap) start."""
    return [RunSpec({"scenario": name, "config": config}, k, method, step,
                    iters[method] if isinstance(iters, dict) else iters, tol, None, "default")
            for method in methods for k in ks]


def run_scenario(name: str, config: dict, ks: Iterable[int], methods: Iterable[str] = ("pgd", "mirror"), *,
                 step: float = 0.05, iters: dict | int = 1000, tol: float = 1e-10, executor: str = "serial",
                 workers: int | None = None) -> dict:
    """Every (method, k) of a built-in scenario through run specs; the results dictionary (rows in spec order,
    each with its ``spec_hash``; the records under ``"records"``)."""
    specs = scenario_specs(name, config, list(ks), methods, step=step, iters=iters, tol=tol)
    mdp = build_target(specs[0].target)[0]
    j_star = optimum_or_none(mdp)
    recs = {r["spec_hash"]: r for r in execute(specs, executor, workers=workers)}
    rows = [row_from_record(recs[s.hash], name, j_star) for s in specs]
    return results_file(name, config, mdp, j_star, rows)


def scenario_report(name: str, config: dict, *, ks: Iterable[int], step: float = 0.05,
                    iters: dict | int = 1000, methods: Iterable[str] = ("pgd", "mirror"),
                    out_dir="results", extra: dict | None = None) -> dict:
    """:func:`run_scenario` from the scenario's default (trap) start, the table printed, and
    ``out_dir/<name>.json`` written (``extra`` adds keys to it, e.g. the start's parameters).

    Returns the results dictionary that was written.
    """
    result = run_scenario(name, config, ks, methods, step=step, iters=iters)
    result.update(extra or {})
    print(format_table(result["rows"]))
    if out_dir is not None:
        path = write_json_atomic(Path(out_dir) / f"{name}.json", result)
        print(f"wrote {path}")
    return result
