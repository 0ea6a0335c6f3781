r"""The paper's claim, measured: the gap to the best deterministic policy against the window length k.

The claim (DeWeese & Qu, 2026; SPEC §3): k-step ascent converges to a policy whose gap to the
best deterministic policy shrinks exponentially in k. :func:`gap_vs_k` measures it on a family of
random problems (:func:`~marl_kstep.random_model`): problems ``p = 0..P-1`` (model seed ``p``)
:math:`\times` random starts ``s = 0..S-1`` (Dirichlet(1) rows from seed ``s``) :math:`\times`
window lengths ``k`` :math:`\times` variants (plain ascent, and certified escapes of each
requested order, SPEC §9). Every run is one :class:`~marl_kstep.experiments.runner.RunSpec`
with target ``{"random": args}``, so the runs go through :func:`run_specs` (``runs.jsonl``,
resume by spec, serial / process / Dask executors) and any number below can be traced to its
records and rerun. The statistics are computed from the records afterwards
(:func:`summarise`).

Per problem, :math:`J^*` is the best and :math:`J_{\min}` the worst deterministic value (exact,
exhaustive: :func:`~marl_kstep.best_deterministic` of the model and of the model with negated
rewards), cached in ``optimum.json`` of the results folder. A run ending at ordinary value
:math:`J` (``final_J``) has

.. math::

    g = \frac{J^* - J}{J^* - J_{\min}} \le 1, \qquad \text{shortfall } g^+ = \max(g, 0),
    \qquad \text{success} \iff g \le \texttt{success\_tol}\ (10^{-3}),

(``g = 0`` when every deterministic policy has the same value). ``g`` is invariant to the
reward's scale and shift. It can be negative: a stochastic memoryless policy may beat
:math:`J^*` (SPEC §5); such runs count as successes, are counted (``above``), and enter the
signed mean gap with their sign and the mean shortfall as 0.

Statistics, per (variant, k) cell, over ``n = P S`` runs:

* the **success rate** with its Wilson score interval
  (``scipy.stats.binomtest(x, n).proportion_ci(method="wilson")``), which treats the ``n`` runs as
  independent; runs of one problem are correlated, so a **cluster bootstrap** interval (problems
  resampled with their starts, ``scipy.stats.bootstrap``, percentile) is given beside it;
* the **mean shortfall** and the signed **mean gap**, each with a cluster bootstrap interval
  (BCa) -- a mean over runs equals the mean of the per-problem means, since every problem has
  ``S`` starts;
* the runs stopped by the iteration cap (``capped``; for escape runs also ``capped_not_two_opt``, those
  whose final greedy tables are *not* 2-opt, i.e. uncertified), those above :math:`J^*` (``above``), and where
  the failed runs stopped (``failure_stops``: capped, or at a vertex, saddle or other stationary point).

**Fitted rate** per variant: :math:`\bar g^+_k \approx c\, \rho^k` for the mean shortfall, by
least squares on :math:`\bar g^+_k` (:func:`fit_rate`); :math:`\rho` with a cluster bootstrap
interval (percentile; problems resampled, the means and the fit recomputed). An interval below 1
means the shortfall shrinks geometrically over the measured ks; the per-step ratios
:math:`(\bar g^+_{k'} / \bar g^+_k)^{1/(k'-k)}` show where it stops shrinking (ratios near 1: a
plateau).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from ..model import random_model_args
from ..search import best_deterministic
from ..validation import check_choice, check_int, check_positive, check_probability
from .io import write_json_atomic
from .runner import RunSpec, RunStore, build_target, canonical_json, run_specs

__all__ = ["gap_vs_k", "study_specs", "summarise", "format_summary", "wilson_interval", "fit_rate", "optima"]

#: Bootstrap resamples of the intervals (percentile / BCa).
N_RESAMPLES = 2000


def _variant(spec: dict) -> str:
    opts = spec["options"]
    return f"escape-{opts['escape_order']}" if opts["escape"] else "plain"


def study_specs(family: str, problems: int, starts: int, ks: Sequence[int], *, escape_orders: Sequence[int] = (),
                model_args: dict | None = None, method: str = "pgd", step: float = 0.05, iters: int = 1000,
                tol: float = 1e-10) -> list[RunSpec]:
    """The run specs of a study: problems x starts x k x variants (plain, then each escape order).

    Parameters
    ----------
    family : str
        A family of :func:`~marl_kstep.random_model`.
    problems, starts : int
        Model seeds ``0..problems-1`` and start seeds ``0..starts-1``.
    ks : sequence of int
        Window lengths.
    escape_orders : sequence of int
        For each order ``m``, also the runs with ``escape=True, escape_order=m``.
    model_args : dict, optional
        Further arguments of :func:`~marl_kstep.random_model` (sizes, ``gamma``, ``obs_noise``).
    method, step, iters, tol
        As in :func:`~marl_kstep.train`.
    """
    problems = check_int("problems", problems, minimum=1)
    starts = check_int("starts", starts, minimum=1)
    if isinstance(ks, int | str) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of window lengths; got ks={ks!r}")
    orders = [check_int(f"escape_orders[{i}]", m, minimum=1) for i, m in enumerate(escape_orders)]
    model_args = dict(model_args or {})
    for key in ("family", "seed"):
        if key in model_args:
            raise ValueError(f"model_args must not hold {key!r} (the study sets it); got model_args={model_args!r}")
    try:
        targets = [{"random": random_model_args(family, seed=p, **model_args)} for p in range(problems)]
    except TypeError as exc:
        raise ValueError(f"model_args: {exc}") from None
    variants = [(False, 2)] + [(True, m) for m in orders]
    return [RunSpec(t, k, method=method, step=step, iters=iters, tol=tol, seed=s, start="random", escape=esc,
                    escape_order=m)
            for esc, m in variants for t in targets for k in ks for s in range(starts)]


def optima(targets: Sequence[dict], folder=None) -> dict[str, tuple[float, float]]:
    """``{canonical target: (J*, J_min)}``: best and worst deterministic values, exact (cached in
    ``folder/optimum.json`` when a folder is given)."""
    cache_path = None if folder is None else Path(folder) / "optimum.json"
    try:
        cache = json.loads(cache_path.read_text()) if cache_path is not None and cache_path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    out, changed = {}, False
    for target in targets:
        key = canonical_json(target)
        entry = cache.get(key)
        if not (isinstance(entry, dict) and "J_star" in entry and "J_min" in entry):
            mdp = build_target(target)[0]
            j_star = best_deterministic(mdp)[0]
            j_min = -best_deterministic(dataclasses.replace(mdp, rewards=-np.asarray(mdp.rewards)))[0]
            entry = cache[key] = {"J_star": j_star, "J_min": j_min}
            changed = True
        out[key] = (float(entry["J_star"]), float(entry["J_min"]))
    if changed and cache_path is not None:
        write_json_atomic(cache_path, cache)
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``)."""
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _bootstrap(data, statistic, *, confidence: float, method: str, seed: int, vectorized: bool):
    """Interval of ``statistic`` over resampled problems; a degenerate sample gives its own value twice."""
    data = np.asarray(data)
    point = float(statistic(data) if not vectorized else statistic(data, axis=-1))
    if data.shape[0] < 2 or np.all(data == data[0]):
        return point, point
    res = stats.bootstrap((data,), statistic, n_resamples=N_RESAMPLES, confidence_level=confidence,
                          method=method, vectorized=vectorized, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def fit_rate(ks: Sequence[int], mean_gaps: Sequence[float]) -> tuple[float, float]:
    r"""``(rho, c)`` of :math:`\bar g_k \approx c \rho^k`, by least squares on the mean gaps themselves
    (``scipy.optimize.curve_fit``, :math:`0 \le \rho \le 2`, :math:`c \ge 0`).

    Least squares on :math:`\bar g_k` (not on its logarithm) accepts gaps that are exactly 0; when
    every :math:`\bar g_k` is 0 the gap vanished from the first k on, and ``rho`` is 0. NaN when
    the fit fails."""
    k = np.asarray(ks, dtype=float)
    g = np.asarray(mean_gaps, dtype=float)
    if k.size < 2:
        return math.nan, math.nan
    if np.all(g <= 0):
        return 0.0, 0.0
    k0 = k - k[0]  # fit c rho^(k - k0) for conditioning, then move c back
    try:
        with warnings.catch_warnings():  # the covariance is not used (two ks: none can be estimated)
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (c0, rho), _ = optimize.curve_fit(lambda x, c, r: c * r**x, k0, g, p0=(max(g[0], 1e-12), 0.8),
                                              bounds=([0.0, 0.0], [np.inf, 2.0]))
    except (RuntimeError, ValueError):
        return math.nan, math.nan
    return float(rho), float(c0 / rho ** k[0]) if rho > 0 else math.nan


def summarise(records: Sequence[dict], optimum: dict, *, success_tol: float = 1e-3, confidence: float = 0.95,
              seed: int = 0) -> dict:
    """The statistics of a study from its run records (see the module docstring).

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`~marl_kstep.experiments.runner.run_one` (their ``spec`` and ``result``).
    optimum : dict
        ``{canonical target: (J*, J_min)}`` of every problem (:func:`optima`).
    success_tol : float
        A run succeeds when its normalised gap is at most this (default 1e-3: 0.1% of the range of
        deterministic values; near a vertex whose last rows are rarely visited, projected ascent
        closes the final 1e-3 slowly, see ``docs/paper-claim.md``).
    confidence : float
        Level of every interval.
    seed : int
        Seed of the bootstrap resamples.

    Returns
    -------
    dict
        ``{"variants": {name: {"cells": [...], "rho", "rho_ci", "c", "ratios"}}, "problems", "starts",
        "confidence", "success_tol", "normaliser"}``; each cell holds ``k``, ``n``, ``successes``,
        ``success_rate``, ``wilson``, ``success_cluster_ci``, ``mean_shortfall``, ``mean_shortfall_ci``,
        ``mean_gap``, ``mean_gap_ci`` (signed), ``median_gap``, ``max_gap``, ``capped``,
        ``capped_not_two_opt`` (escape runs the cap stopped where the certificate of the final greedy
        tables, ``result["two_opt"]``, found an improving change of at most two slots: not certified), ``above``
        (runs ending above J* by more than ``success_tol``) and ``failure_stops`` (where the failed runs
        stopped: ``capped`` by the iteration cap, else ``train``'s ``stationary``: ``vertex``, ``saddle``,
        ``stochastic`` or ``None``); ``rho``, ``rho_ci`` and ``c`` are fitted
        to the mean shortfall.
    """
    success_tol = check_positive("success_tol", success_tol, allow_zero=True)
    confidence = check_probability("confidence", confidence)
    if not records:
        raise ValueError("records is empty: no finished runs to summarise")
    problems = sorted({canonical_json(r["spec"]["target"]) for r in records})
    pindex = {t: i for i, t in enumerate(problems)}
    starts = sorted({r["spec"]["seed"] for r in records})
    sindex = {s: i for i, s in enumerate(starts)}
    by_variant: dict[str, dict[int, dict]] = {}
    for r in records:
        spec, res = r["spec"], r["result"]
        key = canonical_json(spec["target"])
        if key not in optimum:
            raise ValueError(f"optimum lacks the problem {key}")
        j_star, j_min = optimum[key]
        J = res["final_J"]
        width = j_star - j_min
        gap = 0.0 if width <= 0 else (j_star - J) / width
        cell = by_variant.setdefault(_variant(spec), {}).setdefault(spec["k"], {
            "gap": np.full((len(problems), len(starts)), np.nan), "capped": 0, "capped_not_two_opt": 0,
            "failure_stops": {}})
        cell["gap"][pindex[key], sindex[spec["seed"]]] = gap
        cell["capped"] += bool(res.get("capped"))
        cell["capped_not_two_opt"] += bool(res.get("capped")) and res.get("two_opt") is False  # escape runs
        if gap > success_tol:  # where the failures stopped: capped, vertex, saddle, stochastic
            stop = "capped" if res.get("capped") else str(res.get("stationary"))
            cell["failure_stops"][stop] = cell["failure_stops"].get(stop, 0) + 1
    out = {"problems": len(problems), "starts": len(starts), "confidence": confidence, "success_tol": success_tol,
           "normaliser": "J* - J_min (best minus worst deterministic value)", "variants": {}}
    for v_i, (name, cells) in enumerate(sorted(by_variant.items(), key=lambda x: (x[0] != "plain", x[0]))):
        ks = sorted(cells)
        rows = []
        for k in ks:
            gap = cells[k]["gap"]
            missing = np.argwhere(np.isnan(gap))
            if missing.size:
                p, s = missing[0]
                raise ValueError(f"variant {name}, k={k}: no record for problem {problems[p]} start {starts[s]} "
                                 "(an unfinished study: rerun with resume)")
            ok = gap <= success_tol
            short = np.maximum(gap, 0.0)
            n, x = gap.size, int(ok.sum())
            rows.append(dict(
                k=k, n=n, successes=x, success_rate=x / n, wilson=wilson_interval(x, n, confidence),
                success_cluster_ci=_bootstrap(ok.mean(axis=1), np.mean, confidence=confidence, method="percentile",
                                              seed=seed + 7 * v_i + k, vectorized=True),
                mean_shortfall=float(short.mean()),
                mean_shortfall_ci=_bootstrap(short.mean(axis=1), np.mean, confidence=confidence, method="BCa",
                                             seed=seed + 11 * v_i + k, vectorized=True),
                mean_gap=float(gap.mean()),
                mean_gap_ci=_bootstrap(gap.mean(axis=1), np.mean, confidence=confidence, method="BCa",
                                       seed=seed + 17 * v_i + k, vectorized=True),
                median_gap=float(np.median(gap)), max_gap=float(gap.max()), capped=cells[k]["capped"],
                capped_not_two_opt=cells[k]["capped_not_two_opt"], above=int((gap < -success_tol).sum()),
                failure_stops=dict(sorted(cells[k]["failure_stops"].items()))))
        per_problem = np.stack([np.maximum(cells[k]["gap"], 0.0).mean(axis=1) for k in ks], axis=1)  # (P, K)
        rho, c = fit_rate(ks, per_problem.mean(axis=0))

        def rho_of(idx, per_problem=per_problem, ks=ks):
            return fit_rate(ks, per_problem[np.asarray(idx, dtype=int)].mean(axis=0))[0]

        rho_ci = (math.nan, math.nan)
        if math.isfinite(rho) and len(problems) >= 2:
            rho_ci = _bootstrap(np.arange(len(problems)), rho_of, confidence=confidence, method="percentile",
                                seed=seed + 13 * v_i, vectorized=False)
        g = [row["mean_shortfall"] for row in rows]
        ratios = [((g[i + 1] / g[i]) ** (1.0 / (ks[i + 1] - ks[i])) if g[i] > 0 else math.nan)
                  for i in range(len(ks) - 1)]
        out["variants"][name] = {"cells": rows, "rho": rho, "rho_ci": rho_ci, "c": c, "ratios": ratios}
    return out


def format_summary(summary: dict, title: str = "") -> str:
    """The summary as a Markdown table per variant (rates with Wilson intervals and n)."""
    lines = [title] if title else []
    conf = round(100 * summary["confidence"])

    def ci(pair, fmt="{:.4f}"):
        return f"{fmt.format(pair[0])}-{fmt.format(pair[1])}"

    for name, v in summary["variants"].items():
        lines += ["", f"{name}: {summary['problems']} problems x {summary['starts']} starts; mean shortfall ~ c rho^k "
                      f"with rho = {v['rho']:.3f} ({conf}% CI {ci(v['rho_ci'], '{:.3f}')}); per-step ratios "
                      + ", ".join(f"{r:.2f}" for r in v["ratios"]), "",
                  f"| k | n | success | Wilson {conf}% | cluster {conf}% | mean shortfall ({conf}% CI) "
                  f"| mean gap ({conf}% CI) | max gap | above J* | capped | failures stopped at |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in v["cells"]:
            pct = [100 * x for x in c["wilson"]], [100 * x for x in c["success_cluster_ci"]]
            capped = f"{c['capped']}" + (f" ({c['capped_not_two_opt']} not 2-opt)" if c["capped_not_two_opt"] else "")
            lines.append(f"| {c['k']} | {c['n']} | {c['successes']} ({100 * c['success_rate']:.1f}%) | "
                         f"{ci(pct[0], '{:.1f}')}% | {ci(pct[1], '{:.1f}')}% | "
                         f"{c['mean_shortfall']:.4f} ({ci(c['mean_shortfall_ci'])}) | "
                         f"{c['mean_gap']:.4f} ({ci(c['mean_gap_ci'])}) | {c['max_gap']:.4f} | {c['above']} | "
                         f"{capped} | "
                         f"{', '.join(f'{k} {n}' for k, n in c['failure_stops'].items())} |")
    return "\n".join(lines)


def gap_vs_k(family: str, *, problems: int = 30, starts: int = 10, ks: Sequence[int] = (1, 2, 3, 4, 6, 8),
             escape_orders: Sequence[int] = (), out, model_args: dict | None = None, method: str = "pgd",
             step: float = 0.05, iters: int = 1000, tol: float = 1e-10, resume: bool = False,
             executor: str = "serial", workers: int | None = None, scheduler: str | None = None,
             success_tol: float = 1e-3, confidence: float = 0.95,
             progress: Callable[[dict, int, int, float], object] | None = None) -> dict:
    """Run a study through the runner and summarise it (see the module docstring).

    Parameters are those of :func:`study_specs` and :func:`summarise`, and ``out`` (the results
    folder: ``runs.jsonl``, ``optimum.json``, ``study.json``), ``resume``, ``executor``,
    ``workers``, ``scheduler`` and ``progress`` as in :func:`~marl_kstep.experiments.runner.run_specs`.

    Returns
    -------
    dict
        :func:`summarise`'s dict with ``family``, ``model_args`` (of problem 0, resolved),
        ``settings`` and ``spec_hashes`` added; also written to ``out/study.json``.
    """
    check_choice("executor", executor, ("serial", "process", "dask"))
    specs = study_specs(family, problems, starts, ks, escape_orders=escape_orders, model_args=model_args,
                        method=method, step=step, iters=iters, tol=tol)
    run_specs(specs, out, resume=resume, executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    wanted = {s.hash for s in specs}
    records = [r for r in RunStore(out).records() if r["spec_hash"] in wanted]
    targets = list({canonical_json(s.target.to_dict()): s.target.to_dict() for s in specs}.values())
    summary = summarise(records, optima(targets, out), success_tol=success_tol, confidence=confidence)
    summary.update(family=family, model_args=specs[0].target["random"],
                   settings=dict(method=method, step=step, iters=iters, tol=tol, ks=list(ks),
                                 escape_orders=list(escape_orders)),
                   spec_hashes=sorted(wanted))
    write_json_atomic(Path(out) / "study.json", summary)
    return summary
