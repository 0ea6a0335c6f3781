"""Sweeps over window lengths and update rules, and the scenario reports of ``scenarios/``.

:func:`run_scenario` and :func:`scenario_report` (the scenario scripts and the demo) go through run specs
(:mod:`marl_kstep.experiments.runner`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .executors import execute
from .io import write_json_atomic
from .records import format_table, optimum_or_none, results_file, row_from_record
from .run import build_target
from .spec import RunSpec

__all__ = ["run_scenario", "scenario_report", "scenario_specs"]


def scenario_specs(name: str, config: dict, ks: Iterable[int], methods: Iterable[str] = ("pgd", "mirror"), *,
                   step: float = 0.05, iters: dict | int = 1000, tol: float = 1e-10) -> list[RunSpec]:
    """Run specs of a built-in scenario swept over (method, k) from its default (trap) start."""
    return [RunSpec({"scenario": name, "config": config}, k, method=method, step=step,
                    iters=iters[method] if isinstance(iters, dict) else iters, tol=tol, start="default")
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
    return results_file(name, specs[0].target["config"], mdp, j_star, rows, target=specs[0].target.to_dict())


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
