"""The one builder of run records and result files, and the console table.

A *run record* (:func:`run_record`) is one training run: its settings, final values,
history and policy. A *results file* (:func:`results_file`) holds the records of one
scenario and config, with the model size, J* and the versions. ``marl-kstep run``, the demo,
the scenario scripts and :func:`~marl_kstep.experiments.sweep.run_sweep` all build them here.
"""

from __future__ import annotations

import numpy as np

from ..model import JointMDP
from ..optim import TrainResult
from ..search import best_deterministic, count_deterministic
from ..settings import current
from .io import versions

__all__ = ["format_aggregates", "format_table", "optimum_or_none", "results_file", "row_from_record", "run_record"]


def optimum_or_none(mdp: JointMDP, max_policies: int | None = None) -> float | None:
    """Best deterministic value J*, or None when the exhaustive search is over ``max_policies``
    (default ``Settings.max_policies``)."""
    max_policies = current().max_policies if max_policies is None else max_policies
    if count_deterministic(mdp) > max_policies:
        return None
    return best_deterministic(mdp, max_policies)[0]


def run_record(res: TrainResult, *, scenario: str = "", seed=None, j_star: float | None = None) -> dict:
    """One run as a JSON-ready dict.

    Keys: scenario, k, method, seed, step, final_J, final_J_k, J_star, gap (``J* - J``, signed),
    iterations, converged, seconds, history_J, history_J_k, policy.
    """
    return dict(
        scenario=scenario, k=int(res.k), method=res.method, seed=seed, step=res.step,
        final_J=res.final_J, final_J_k=res.final_J_k, J_star=j_star,
        gap=None if j_star is None else j_star - res.final_J,
        iterations=res.iterations, converged=res.converged, seconds=res.seconds,
        history_J=res.history_J.tolist(), history_J_k=res.history_J_k.tolist(),
        policy=[t.tolist() for t in res.policy.theta],
    )


def results_file(scenario: str, config: dict, mdp: JointMDP, j_star: float | None, rows: list[dict],
                 **extra) -> dict:
    """The results of one scenario and config: keys scenario, config, gamma, n_states, J_star,
    versions, rows (run records), and any ``extra``."""
    base = dict(scenario=scenario, config=config, gamma=None if mdp is None else mdp.gamma,
                n_states=None if mdp is None else mdp.n_states, J_star=j_star, versions=versions(), rows=rows)
    base.update(extra)
    return base


def format_table(rows: list[dict]) -> str:
    """Plain-text table: scenario, k, method, estimator, final J, final J_k, J*, gap, iterations, seconds.

    ``final J`` is the exact ordinary value (— without a model); ``final J_k`` the estimator's."""
    head = (f"{'scenario':<22} {'k':>2} {'method':<7} {'estimator':<9} {'final J':>11} {'final J_k':>11} {'J*':>11} "
            f"{'gap':>10} {'iters':>6} {'seconds':>8} {'seed':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        js = "—" if r.get("J_star") is None else f"{r['J_star']:.6f}"
        gap = "—" if r.get("gap") is None else f"{r['gap']:.2e}"
        fj = "—" if r["final_J"] is None or r["final_J"] != r["final_J"] else f"{r['final_J']:.6f}"
        fk = "—" if r.get("final_J_k") is None else f"{r['final_J_k']:.6f}"
        lines.append(f"{r.get('scenario', ''):<22} {r['k']:>2} {r['method']:<7} {r.get('estimator', 'exact'):<9} "
                     f"{fj:>11} {fk:>11} {js:>11} {gap:>10} {_iters(r):>6} {r['seconds']:>8.3f} "
                     f"{'—' if r.get('seed') is None else r['seed']:>5}")
    return "\n".join(lines)


def _iters(r: dict) -> str:
    """Iterations, with a ``*`` when the iteration cap stopped the run (it had not converged)."""
    return f"{r['iterations']}{'*' if r.get('capped') else ''}"


def format_aggregates(rows: list[dict], tol: float = 1e-6) -> str:
    """Per (k, method, estimator, start) over seeds: runs, mean final J, its 95% interval (Student t) and the
    success rate (final J >= J* - tol)."""
    from scipy import stats

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["k"], r["method"], r.get("estimator", "exact"), r.get("start", "default")), []).append(r)
    head = (f"{'k':>2} {'method':<7} {'estimator':<9} {'start':<8} {'runs':>4} {'mean J':>10} {'95% interval':>23} "
            f"{'at J*':>7}")
    lines = ["over seeds:", head, "-" * len(head)]
    for (k, method, est, start), rs in sorted(groups.items()):
        vals = np.array([r["final_J"] for r in rs], dtype=float)
        m = float(np.mean(vals))
        if vals.size > 1 and np.isfinite(vals).all():
            half = float(stats.t.ppf(0.975, vals.size - 1) * np.std(vals, ddof=1) / np.sqrt(vals.size))
            ci = f"[{m - half:.4f}, {m + half:.4f}]"
        else:
            ci = "—"
        js = rs[0].get("J_star")
        ok = "—" if js is None else f"{sum(v >= js - tol * max(1.0, abs(js)) for v in vals)}/{vals.size}"
        lines.append(f"{k:>2} {method:<7} {est:<9} {start:<8} {vals.size:>4} {m:>10.4f} {ci:>23} {ok:>7}")
    lines.append("(* after iterations: stopped by the iteration cap)")
    return "\n".join(lines)


def row_from_record(rec: dict, name: str, j_star) -> dict:
    """A record as a row of results.json (the view that ``plot`` and the tables read)."""
    spec, res = rec["spec"], rec["result"]
    fj = res["final_J"]
    row = dict(scenario=name, k=spec["k"], method=spec["method"], seed=spec["seed"], step=spec["step"],
               iters=spec["iters"], tol=spec["tol"], start=spec["start"], estimator=spec["estimator"]["kind"],
               spec_hash=rec["spec_hash"], final_J=float("nan") if fj is None else fj, final_J_k=res["final_J_k"],
               J_star=j_star, gap=None if j_star is None or fj is None else j_star - fj,
               iterations=res["iterations"], converged=res["converged"], capped=res["capped"],
               seconds=res["seconds"], history_J=[float("nan") if x is None else x for x in res["history_J"]],
               history_J_k=res["history_J_k"], policy=res["policy"])
    for key in ("history_J_k_se", "history_J_k_exact"):
        if key in res:
            row[key] = res[key]
    if spec["estimator"]["kind"] == "sampled":
        row.update(episodes=spec["estimator"].get("episodes"), horizon=spec["estimator"].get("horizon"))
    return row
