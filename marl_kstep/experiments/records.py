"""Views of run records: rows, results files and the console tables.

A run record (:class:`~marl_kstep.experiments.run.RunRecord`, built only by
:func:`~marl_kstep.experiments.run.run_one`) is the one source; a *row* (:func:`row_from_record`) is its
flat view for tables and figures, and a *results file* (:func:`results_file`) holds the rows of one
problem with the model size, J* and the versions. Every table shows the exact value of the returned
policy beside that of its greedy rounding and says which one the run is judged by (sampled runs: the
greedy policy; their entries stay at the sampler's floor).
"""

from __future__ import annotations

import json

import numpy as np

from ..model import JointMDP
from ..search import best_deterministic, count_deterministic
from ..settings import current
from .io import versions
from .run import build_target
from .spec import Target, canonical_json

__all__ = ["format_aggregates", "format_table", "optimum_or_none", "results_file", "results_from_records",
           "row_from_record"]


def optimum_or_none(mdp: JointMDP, max_policies: int | None = None) -> float | None:
    """Best deterministic value J*, or None when the exhaustive search is over ``max_policies``
    (default ``Settings.max_policies``)."""
    max_policies = current().max_policies if max_policies is None else max_policies
    if count_deterministic(mdp) > max_policies:
        return None
    return best_deterministic(mdp, max_policies)[0]


def results_file(scenario: str, config: dict, mdp: JointMDP, j_star: float | None, rows: list[dict],
                 **extra) -> dict:
    """The results of one scenario and config: keys scenario, config, gamma, n_states, J_star,
    versions, rows (run records), and any ``extra``."""
    base = dict(scenario=scenario, config=config, gamma=None if mdp is None else mdp.gamma,
                n_states=None if mdp is None else mdp.n_states, J_star=j_star, versions=versions(), rows=rows)
    base.update(extra)
    return base


def _num(x, fmt=".6f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


def format_table(rows: list[dict]) -> str:
    """Plain-text table: scenario, k, method, estimator, final J (of the returned policy), greedy J (of its
    rounding), final J_k, J*, gap (of the judged value, marked ``g`` when that is the greedy one), iterations,
    seconds, seed.

    ``final J`` and ``greedy J`` are exact ordinary values (— without a model); ``final J_k`` the estimator's."""
    head = (f"{'scenario':<22} {'k':>2} {'method':<7} {'estimator':<9} {'final J':>11} {'greedy J':>11} "
            f"{'final J_k':>11} {'J*':>11} {'gap':>11} {'iters':>6} {'seconds':>8} {'seed':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        gap = _num(r.get("gap"), ".2e") + ("g" if r.get("judged") == "greedy" else " ")
        lines.append(f"{r.get('scenario', ''):<22} {r['k']:>2} {r['method']:<7} {r.get('estimator', 'exact'):<9} "
                     f"{_num(r['final_J']):>11} {_num(r.get('J_greedy')):>11} {_num(r.get('final_J_k')):>11} "
                     f"{_num(r.get('J_star')):>11} {gap:>11} {_iters(r):>6} {r['seconds']:>8.3f} "
                     f"{'—' if r.get('seed') is None else r['seed']:>5}")
    if any(r.get("judged") == "greedy" for r in rows):
        lines.append("(gap ...g: of the greedy rounding, by which sampled runs are judged; their entries stay at "
                     "the floor)")
    return "\n".join(lines)


def _iters(r: dict) -> str:
    """Iterations, with a ``*`` when the iteration cap stopped the run (it had not converged)."""
    return f"{r['iterations']}{'*' if r.get('capped') else ''}"


def format_aggregates(rows: list[dict], tol: float = 1e-6) -> str:
    """Per (k, method, estimator, start) over seeds: runs, mean judged J (the greedy rounding's for sampled
    runs), its 95% interval (Student t) and the success rate (judged J >= J* - tol) with its 95% Wilson
    interval."""
    from scipy import stats

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["k"], r["method"], r.get("estimator", "exact"), r.get("start", "default")), []).append(r)
    head = (f"{'k':>2} {'method':<7} {'estimator':<9} {'start':<8} {'runs':>4} {'mean J':>10} {'95% interval':>23} "
            f"{'at J* [95% Wilson]':>22}")
    lines = ["over seeds:", head, "-" * len(head)]
    for (k, method, est, start), rs in sorted(groups.items()):
        vals = np.array([_judged(r) for r in rs], dtype=float)
        m = float(np.mean(vals))
        if vals.size > 1 and np.isfinite(vals).all():
            half = float(stats.t.ppf(0.975, vals.size - 1) * np.std(vals, ddof=1) / np.sqrt(vals.size))
            ci = f"[{m - half:.4f}, {m + half:.4f}]"
        else:
            ci = "—"
        js = rs[0].get("J_star")
        if js is None:
            ok = "—"
        else:
            hits = int(sum(v >= js - tol * max(1.0, abs(js)) for v in vals))
            lo, hi = stats.binomtest(hits, vals.size).proportion_ci(0.95, method="wilson")
            ok = f"{hits}/{vals.size} [{lo:.2f}, {hi:.2f}]"
        lines.append(f"{k:>2} {method:<7} {est:<9} {start:<8} {vals.size:>4} {m:>10.4f} {ci:>23} {ok:>22}")
    lines.append("(* after iterations: stopped by the iteration cap)")
    return "\n".join(lines)


def _judged(r: dict) -> float:
    v = r.get("J_greedy") if r.get("judged") == "greedy" else r["final_J"]
    return float("nan") if v is None else v


def row_from_record(rec, name: str, j_star) -> dict:
    """A record as a row of results.json (the view that ``plot`` and the tables read)."""
    spec, res = rec["spec"], rec["result"]
    opts = spec["options"]
    fj = res["final_J"]
    judged = res.get("J_judged")
    row = dict(scenario=name, k=spec["k"], method=opts["method"], seed=spec["seed"], step=opts["step"],
               iters=opts["iters"], tol=opts["tol"], start=spec["start"], estimator=spec["estimator"]["kind"],
               escape=opts["escape"], spec_hash=rec["spec_hash"], final_J=float("nan") if fj is None else fj,
               J_greedy=res.get("J_greedy"), judged=res.get("judged", "returned"), final_J_k=res["final_J_k"],
               J_star=j_star, gap=None if j_star is None or judged is None else j_star - judged,
               iterations=res["iterations"], converged=res["converged"], capped=res["capped"],
               seconds=res["seconds"], history_J=[float("nan") if x is None else x for x in res["history_J"]],
               history_J_k=res["history_J_k"], policy=res["policy"])
    for key in ("history_J_k_se", "history_J_k_exact"):
        if key in res:
            row[key] = res[key]
    if spec["estimator"]["kind"] == "sampled":
        row.update(episodes=spec["estimator"].get("episodes"), horizon=spec["estimator"].get("horizon"))
    return row


def results_from_records(records, *, optima: dict | None = None) -> list[dict]:
    """Results files (:func:`results_file`) of run records, one per problem, rebuilt from the records
    alone: each problem from its resolved target (so a figure shows the problem that was trained), rows
    in record order. ``optima`` maps a target's canonical JSON to its J* (e.g. from a folder's
    ``optimum.json``); without one a problem's J* is None."""
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(canonical_json(rec["spec"]["target"]), []).append(rec)
    out = []
    for key, recs in groups.items():
        target = Target(json.loads(key))
        mdp = build_target(target)[0]
        j_star = (optima or {}).get(key)
        name = target.name
        rows = [row_from_record(r, name, j_star) for r in recs]
        out.append(results_file(name, target.get("config", {}), mdp, j_star, rows, target=target.to_dict(),
                                **({} if mdp is not None else {"gamma": target.get("gamma")})))
    return out
