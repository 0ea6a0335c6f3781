r"""The memory table: finite-state controllers on six Dec-POMDP benchmarks beside the literature.

Per problem (gamma = 0.9) and node count :math:`Q` per agent (``with_memory(model, Q)``, docs/memory.md):

* the sizes of the augmented model and the number of deterministic controllers;
* the best deterministic controller by exhaustive search when that number is at most
  ``Settings.max_policies``, else the best of alternating best response (ABR) from the lifted best
  memoryless policy and from ``abr_restarts`` random deterministic controllers when a best response
  is enumerable, else nothing (the cell says which);
* ascent (pgd) with k = 1 and k = 2 (k-step), each without and with ``escape=True``, from the uniform
  controller and from seeded Dirichlet(1) random starts, every run a record of
  :func:`~marl_kstep.experiments.runner.run_specs` (``runs.jsonl``, resumable). A k whose exact path walk
  needs more than ``max_path_steps`` steps per pass is run with the sampled estimator
  (:class:`~marl_kstep.SampledKStep`, ``episodes`` per estimate) and marked "sampled": such a run is judged
  by the exact :math:`J` of its greedy rounding (``J_judged`` of its record), and the cell states the
  standard error of the final :math:`\hat J_k`. Augmented models above ``big_states`` states are trained
  with fewer starts, iterations and escapes (``big``), above ``huge_states`` with fewer still (``huge``),
  above ``max_states`` not at all.

Per problem, apart from the controllers: the best deterministic observation-blind policy (a lower bound),
the fully observable MDP optimum and the fast informed bound (upper bounds on every decentralized
policy, any memory; :mod:`marl_kstep.bounds`), and the literature rows of the issue (Dibangoye, Buffet &
Charpillet, ECML-PKDD 2014, Table 1: as reported, different hardware). Lower and upper bounds are kept in
separate columns. Gaps are labelled: *class gap* (memoryless vs controllers vs the upper bound) and
*optimiser gap* (ascent vs the best in class found by search).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..bounds import best_blind, fast_informed_bound
from ..estimators import estimate_path_steps
from ..model import dpomdp_names, dpomdp_path, load_dpomdp
from ..model.memory import memory_sizes, with_memory
from ..policy import Policy
from ..search import alternating_best_response, best_deterministic, count_deterministic, mdp_optimum
from ..settings import current
from .io import versions, write_json_atomic, write_text_atomic
from .runner import RunSpec, RunStore, build_target, commit, run_specs
from .spec import spec_target

__all__ = ["LITERATURE", "PROBLEMS", "SOURCE", "goal", "markdown", "memory_facts", "problem_bounds", "run_memory_table",
           "memory_specs", "write_memory_report"]

SOURCE = "Dibangoye, Buffet & Charpillet, ECML-PKDD 2014, Table 1"

#: The six problems of the issue, with the escape order used on their controllers (2: every pair of slots is
#: tried, affordable on the small models; 1: single slots) up to :data:`ORDER2_MAX_STATES` augmented states.
PROBLEMS = {"dectiger.dpomdp": 2, "recycling.dpomdp": 2, "broadcastChannel.dpomdp": 2,
            "Mars.dpomdp.gz": 1, "boxPushingUAI07.dpomdp.gz": 1, "Grid3x3corners.dpomdp.gz": 1}


#: Above this many augmented states the escape order is 1 on every problem (order 2 certifies every pair of
#: slots: 0.7 s on dectiger with 3 nodes, 11 s with 4 nodes (130 states), 17 s on broadcastChannel with 4 (257)).
ORDER2_MAX_STATES = 200


def escape_order(problem: str, states: int) -> int:
    """The escape order of a (problem, Q) cell with ``states`` augmented states (see :data:`PROBLEMS`
    and :data:`ORDER2_MAX_STATES`)."""
    return PROBLEMS[problem] if states <= ORDER2_MAX_STATES else 1

#: Published values (as reported, different hardware): (name, value, nodes as printed, total nodes per agent).
#: A periodic controller with ``n x p`` has ``n p`` nodes. ``best`` is the best published value of any
#: policy (FB-HSVI, history-dependent) in the same table.
LITERATURE = {
    "recycling.dpomdp": dict(best=31.929, rows=[("Mealy NLP", 31.928, "1", 1), ("EM", 31.50, "2", 2)]),
    "broadcastChannel.dpomdp": dict(best=9.271, rows=[("NLP", 9.1, "2", 2)]),
    "dectiger.dpomdp": dict(best=13.448, rows=[
        ("periodic", 13.45, "10x30", 300), ("periodic-EM", 9.42, "7x10", 70), ("goal-directed", 5.04, "11", 11),
        ("Mealy NLP", -1.49, "4", 4), ("EM", -16.3, "6", 6)]),
    "boxPushingUAI07.dpomdp.gz": dict(best=224.43, rows=[
        ("goal-directed", 149.85, "5", 5), ("periodic", 148.65, "15x30", 450), ("Mealy NLP", 143.14, "4", 4),
        ("periodic-EM", 106.68, "4x10", 40)]),
    "Mars.dpomdp.gz": dict(best=26.94, rows=[
        ("periodic", 24.13, "10x30", 300), ("goal-directed", 21.48, "6", 6), ("Mealy NLP", 19.67, "3", 3),
        ("periodic-EM", 18.13, "3x10", 30), ("EM", 17.75, "3", 3)]),
    "Grid3x3corners.dpomdp.gz": dict(best=5.802, rows=[("periodic", 4.64, "20x70", 1400)]),
}

#: The four ascent columns: (k, escape).
VARIANTS = ((1, False), (1, True), (2, False), (2, True))


def _used(mdp) -> list[np.ndarray]:
    """Per agent, a boolean mask of the observations it sees in some state."""
    return [np.isin(np.arange(n), np.asarray(o)) for n, o in zip(mdp.n_obs, mdp.obs, strict=True)]


def _target(path, gamma: float, nodes: int) -> dict:
    return spec_target(path, gamma, nodes)  # a shipped problem by name: records portable between checkouts


def problem_bounds(path, gamma: float = 0.9) -> dict:
    """Blind baseline (lower bound), MDP optimum and fast informed bound (upper bounds) of one problem."""
    mdp = load_dpomdp(path, gamma=gamma)
    t0 = time.perf_counter()
    blind, blind_actions = best_blind(mdp)
    fib = fast_informed_bound(mdp)
    return dict(problem=Path(path).name, path=str(path), gamma=gamma, states=mdp.n_states, obs=list(mdp.n_obs),
                actions=list(mdp.n_actions), blind=blind, blind_actions=list(blind_actions),
                mdp_optimum=mdp_optimum(mdp), fib=fib, seconds=time.perf_counter() - t0)


def memory_facts(path, nodes: int, *, gamma: float = 0.9, ks=(1, 2), max_path_steps: int = 30_000_000,
                 abr_restarts: int = 5, max_policies: int | None = None, base_policy=None,
                 abr_max_work: int = 10_000_000) -> dict:
    """The numbers of one (problem, Q) cell that need no training run: sizes, path steps per k and the
    best deterministic controller found by search (``how``: "exhaustive", "ABR" or None). ABR is tried
    only when one best response (tables of the agent with most, times states squared) is at most
    ``abr_max_work``, so a cell's search stays within seconds."""
    max_policies = current().max_policies if max_policies is None else max_policies
    base = load_dpomdp(path, gamma=gamma)
    size = memory_sizes(base, nodes)
    mdp = with_memory(base, nodes) if nodes != 1 else base
    count = count_deterministic(mdp)
    out = dict(problem=Path(path).name, nodes=nodes, states=mdp.n_states, joint_actions=mdp.n_joint_actions,
               transitions=int(size["transitions"]), policies=count,
               steps={str(k): estimate_path_steps(mdp, k, max_path_steps=max_path_steps) for k in ks})
    t0 = time.perf_counter()
    out["search"], out["search_how"], out["search_policy"] = None, None, None
    if count <= max_policies:
        J, pol = best_deterministic(mdp, max_policies)
        out.update(search=J, search_how="exhaustive", search_policy=pol.greedy_tables())
    else:
        starts = []
        if base_policy is not None:
            starts.append(Policy(mdp.lift(base_policy)) if nodes != 1 else base_policy)
        rng = np.random.default_rng(0)
        starts += [Policy.deterministic(mdp, [rng.integers(0, a, size=o) for a, o in zip(mdp.n_actions, mdp.n_obs,
                                                                                          strict=True)])
                   for _ in range(abr_restarts)]
        best = None
        try:
            used = _used(mdp)
            response_work = max(a ** int(u.sum()) for a, u in zip(mdp.n_actions, used, strict=True)) * mdp.n_states ** 2
            if response_work > abr_max_work:
                raise ValueError("best response too costly")
            for init in starts:
                J, pol, _ = alternating_best_response(mdp, init, rounds=20, max_policies=max_policies)
                if best is None or J > best[0]:
                    best = (J, pol)
            out.update(search=best[0], search_how=f"ABR ({len(starts)} starts)",
                       search_policy=best[1].greedy_tables())
        except ValueError:  # a best response is beyond max_policies, or beyond abr_max_work
            out["search_how"] = None
    out["search_seconds"] = time.perf_counter() - t0
    if out["search_policy"] is not None:
        out["search_policy"] = [np.asarray(t).tolist() for t in out["search_policy"]]
    return out


#: The reduced settings of large cells: (number of random starts, iteration cap, escape cap) for augmented
#: models above ``big_states`` ("big") and above ``huge_states`` ("huge") states (see :func:`cell_settings`).
#: A "slow" cell (an exact walk of more than ``slow_steps`` path steps per pass) keeps the iteration and
#: escape caps but has only the first ``BIG[0]`` random starts.
BIG = (3, 500, 3)
HUGE = (1, 300, 2)


def cell_settings(states: int, *, seeds=(0, 1), iters: int = 200, max_escapes: int = 10, big_states: int = 500,
                  huge_states: int = 2000, max_states: int = 3000, steps: int = 0, exact: bool = True,
                  slow_steps: int = 1_000_000) -> dict | None:
    """The starts and caps of a cell with ``states`` augmented states: ``dict(tier, seeds, iters,
    max_escapes)``, or None above ``max_states`` (not trained). ``tier`` is "full" (the table's
    settings), "slow" (an ``exact`` cell whose walk has more than ``slow_steps`` path ``steps`` per
    pass: the first ``BIG[0]`` seeds only), "big" (:data:`BIG`: the first seeds only, capped iterations
    and escapes) or "huge" (:data:`HUGE`)."""
    if states > max_states:
        return None
    seeds = tuple(seeds)
    if states > huge_states:
        n, cap, esc = HUGE
        return dict(tier="huge", seeds=seeds[:n], iters=min(iters, cap), max_escapes=min(max_escapes, esc))
    if states > big_states:
        n, cap, esc = BIG
        return dict(tier="big", seeds=seeds[:n], iters=min(iters, cap), max_escapes=min(max_escapes, esc))
    if exact and steps > slow_steps:
        return dict(tier="slow", seeds=seeds[:BIG[0]], iters=iters, max_escapes=max_escapes)
    return dict(tier="full", seeds=seeds, iters=iters, max_escapes=max_escapes)


def _variant_run(facts, bounds, k, escape, kw, step, episodes):
    """The tier settings, training options and estimator of one (k, escape) variant of a cell, or None
    when the cell is not trained: exact within the path budget, sampled above it (no exact values
    alongside); escapes of the problem's order."""
    cfg = _variant_settings(facts, k, kw)
    if cfg is None:
        return None
    opts = dict(method="pgd", step=step, iters=cfg["iters"], tol=1e-8, escape=escape)
    estimator = None
    if facts["steps"][str(k)] > kw["max_path_steps"]:
        estimator = dict(kind="sampled", episodes=episodes)
        opts["exact_alongside"] = False
    if escape:
        opts.update(escape_order=escape_order(bounds["problem"], facts["states"]), max_escapes=cfg["max_escapes"])
    return cfg, opts, estimator


def _variant_runs(facts, bounds, kw, step, episodes) -> list[tuple]:
    """``(k, cfg, opts, estimator)`` of every variant (:data:`VARIANTS`, :func:`_variant_run`) of a cell,
    or ``[]`` when the cell is not trained."""
    runs = [(k, _variant_run(facts, bounds, k, escape, kw, step, episodes)) for k, escape in VARIANTS]
    return [] if any(v is None for _, v in runs) else [(k, *v) for k, v in runs]


def _variant_settings(facts: dict, k: int, kw: dict) -> dict | None:
    """:func:`cell_settings` of the k-cells of one (problem, Q) (``kw``: the table's settings)."""
    steps = facts["steps"][str(k)]
    return cell_settings(facts["states"], seeds=kw.get("seeds", (0, 1)), iters=kw.get("iters", 200),
                         max_escapes=kw.get("max_escapes", 10), big_states=kw.get("big_states", 500),
                         huge_states=kw.get("huge_states", 2000), max_states=kw.get("max_states", 3000),
                         steps=steps, exact=steps <= kw.get("max_path_steps", 30_000_000),
                         slow_steps=kw.get("slow_steps", 1_000_000))


def memory_specs(bounds: dict, facts: dict, *, seeds=(0, 1), iters: int = 200, step: float = 0.05,
                 max_path_steps: int = 30_000_000, max_states: int = 3000, max_escapes: int = 10,
                 big_states: int = 500, huge_states: int = 2000, episodes: int = 1000,
                 slow_steps: int = 1_000_000) -> list[RunSpec]:
    """The run specs of one (problem, Q) cell: every (k, escape), from the uniform controller and from
    each seeded random start of the cell's tier (:func:`cell_settings`; none above ``max_states``). A
    k within the path budget runs with the exact estimator; above it with the sampled one
    (``episodes`` per estimate, floor 0.01, seeded by the run's seed; no exact values alongside, whose
    k-step walk is what is over budget: the record's ``final_J`` and ``J_greedy`` are computed once,
    exactly, at the end)."""
    kw = dict(seeds=seeds, iters=iters, max_path_steps=max_path_steps, max_states=max_states,
              max_escapes=max_escapes, big_states=big_states, huge_states=huge_states, slow_steps=slow_steps)
    target = _target(bounds["path"], bounds["gamma"], facts["nodes"])
    specs = []
    for k, cfg, opts, estimator in _variant_runs(facts, bounds, kw, step, episodes):
        specs.append(RunSpec(target, k, start="uniform", estimator=estimator, **opts))
        specs += [RunSpec(target, k, seed=s, start="random", estimator=estimator, **opts) for s in cfg["seeds"]]
    return specs


#: Lifted starts (Q >= 2): the best deterministic memoryless policy held (played in every node, node kept)
#: mixed with weight ``1 - LIFT_MIX`` with a Dirichlet(1) random controller of seed ``s``, for the first
#: ``LIFT_STARTS`` seeds of the cell's tier (``LIFT_STARTS_SLOW`` in a "slow" cell).
LIFT_MIX = 0.2
LIFT_STARTS = 3
LIFT_STARTS_SLOW = 2


def best_memoryless(facts1: dict, records: dict, specs1) -> dict | None:
    """The best deterministic memoryless policy held for one problem: the search's (exhaustive or ABR,
    ``facts1`` of Q = 1) or the greedy rounding of a Q = 1 ascent run (``J_greedy`` of the records of
    ``specs1``), whichever is worth more; ``dict(J, tables, how)`` or None."""
    best = None
    if facts1.get("search_policy") is not None:
        best = dict(J=float(facts1["search"]), tables=facts1["search_policy"], how=facts1["search_how"])
    for spec in specs1:
        rec = records.get(spec.hash)
        if rec is None or rec["result"].get("J_greedy") is None:
            continue
        if best is None or rec["result"]["J_greedy"] > best["J"] + 1e-12:
            tables = [np.argmax(np.asarray(t), axis=1).tolist() for t in rec["result"]["policy"]]
            best = dict(J=float(rec["result"]["J_greedy"]), tables=tables,
                        how=f"greedy rounding of run {rec['spec_hash']}")
    return best


def lifted_specs(bounds: dict, facts: dict, base: dict | None, *, seeds=(0, 1), iters: int = 200,
                 step: float = 0.05, max_path_steps: int = 30_000_000, max_states: int = 3000, max_escapes: int = 10,
                 big_states: int = 500, huge_states: int = 2000, episodes: int = 1000,
                 slow_steps: int = 1_000_000) -> list[RunSpec]:
    """The lifted starts of a (problem, Q >= 2) cell: the variants of :func:`memory_specs` from
    ``(1 - LIFT_MIX) lift(base) + LIFT_MIX random(s)`` (``start="given"``) for the first
    :data:`LIFT_STARTS` seeds of the tier (:data:`LIFT_STARTS_SLOW` in a "slow" cell; none for Q = 1 or
    without a ``base``)."""
    if base is None or facts["nodes"] == 1:
        return []
    kw = dict(seeds=seeds, iters=iters, max_path_steps=max_path_steps, max_states=max_states,
              max_escapes=max_escapes, big_states=big_states, huge_states=huge_states, slow_steps=slow_steps)
    target = _target(bounds["path"], bounds["gamma"], facts["nodes"])
    aug, _, _ = build_target(target)
    plain, _, _ = build_target(_target(bounds["path"], bounds["gamma"], 1))
    lifted = aug.lift(Policy.deterministic(plain, base["tables"]))
    specs = []
    for k, cfg, opts, estimator in _variant_runs(facts, bounds, kw, step, episodes):
        for s in cfg["seeds"][:LIFT_STARTS_SLOW if cfg["tier"] == "slow" else LIFT_STARTS]:
            noise = Policy.random(aug, s).theta
            init = [((1.0 - LIFT_MIX) * np.asarray(a) + LIFT_MIX * b).tolist() for a, b in zip(lifted, noise,
                                                                                              strict=True)]
            specs.append(RunSpec(target, k, seed=s, start="given", init=init, estimator=estimator, **opts))
    return specs


def _start_label(spec: dict) -> str:
    return {"uniform": "uniform", "random": f"seed {spec['seed']}", "given": f"lifted {spec['seed']}"}.get(
        spec["start"], spec["start"])


def _cell(bounds, facts, records, k, escape, base=None, **kw) -> dict:
    r"""One ascent cell from its records. ``values`` are the runs' judged values (``J_judged``: the exact
    J of the returned policy for exact runs, of its greedy rounding for sampled ones); a sampled cell
    also has ``se``, the standard error of the best run's final :math:`\hat J_k`, and ``se_max``, the
    largest over its runs."""
    cfg = _variant_settings(facts, k, kw)
    if cfg is None:
        return dict(over_budget=False, too_large=True, states=facts["states"])
    specs = [s for s in memory_specs(bounds, facts, **kw) + lifted_specs(bounds, facts, base, **kw)
             if s.k == k and s.escape == escape]
    sampled = specs[0].estimator.kind == "sampled"
    recs = [records.get(s.hash) for s in specs]
    if any(r is None for r, s in zip(recs, specs, strict=True) if s.start != "given"):
        return dict(over_budget=False, missing=True, sampled=sampled, tier=cfg["tier"])
    lifted_missing = sum(r is None for r in recs)  # lifted starts not run (yet): the cell without them
    recs = [r for r in recs if r is not None]
    finals = [r["result"]["J_judged"] for r in recs]
    certs = [r["result"].get("certificate") for r in recs]
    best = int(np.argmax(finals))
    out = dict(over_budget=False, missing=False, sampled=sampled, tier=cfg["tier"], starts=len(recs),
               iters=cfg["iters"], steps=facts["steps"][str(k)], values=finals,
               max=float(np.max(finals)), median=float(np.median(finals)),
               seconds=float(sum(r["result"]["seconds"] for r in recs)),
               capped=int(sum(bool(r["result"]["capped"]) for r in recs)),
               best_certificate=certs[best], best_hash=recs[best]["spec_hash"],
               best_start=_start_label(recs[best]["spec"]), lifted=sum(r["spec"]["start"] == "given" for r in recs),
               lifted_missing=lifted_missing)
    if sampled:
        ses = [r["result"]["history_J_k_se"][-1] for r in recs]
        out.update(se=float(ses[best]), se_max=float(max(ses)), episodes=specs[0].estimator.episodes)
    return out


def run_memory_table(data_dir, folder, *, files=None, nodes=(1, 2), seeds=(0, 1), iters: int = 200,
                     step: float = 0.05, max_path_steps: int = 30_000_000, abr_restarts: int = 5,
                     max_states: int = 3000, max_escapes: int = 10, big_states: int = 500, huge_states: int = 2000,
                     episodes: int = 1000, slow_steps: int = 1_000_000, run: bool = True,
                     resume: bool = False, executor: str = "serial", workers: int | None = None,
                     progress=None, gamma: float = 0.9) -> dict:
    """Facts, bounds and runs of every (problem, Q); the runs through
    :func:`~marl_kstep.experiments.runner.run_specs` into ``folder`` (``resume`` continues). Facts and
    bounds are cached in ``folder/memory_facts.json``. Returns ``dict(problems=[...])``, one entry per
    problem with its bounds, literature and one cell per node count."""
    data_dir, folder = Path(data_dir), Path(folder)
    names = list(PROBLEMS) if not files else list(files)
    for name in names:
        if name not in PROBLEMS:
            raise ValueError(f"memory table: unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
        if not (data_dir / name).is_file():
            raise ValueError(f"memory table: no file {data_dir / name}")
    nodes = [int(q) for q in nodes]
    if not nodes or any(q < 1 for q in nodes):
        raise ValueError(f"nodes must be integers >= 1; got nodes={nodes}")
    store = RunStore(folder)
    if store.exists() and not resume:
        raise ValueError(f"{store.path} already holds runs; resume to continue them, or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    cache_path = folder / "memory_facts.json"
    cache = json.loads(cache_path.read_text()) if resume and cache_path.exists() else {}
    kw = dict(seeds=tuple(seeds), iters=iters, step=step, max_path_steps=max_path_steps, max_states=max_states,
              max_escapes=max_escapes, big_states=big_states, huge_states=huge_states, episodes=episodes,
              slow_steps=slow_steps)
    problems, specs = [], []
    for name in names:
        path = data_dir / name
        key = f"{name}:{gamma}:bounds"
        if key not in cache:
            cache[key] = problem_bounds(path, gamma)
            write_json_atomic(cache_path, cache)
        bounds = cache[key]
        base_key = f"{name}:{gamma}:1:{max_path_steps}:{abr_restarts}"
        cells = []
        for q in nodes:
            fkey = f"{name}:{gamma}:{q}:{max_path_steps}:{abr_restarts}"
            if fkey not in cache:
                base_pol = None
                if q != 1 and base_key in cache and cache[base_key]["search_policy"] is not None:
                    base = load_dpomdp(path, gamma=gamma)
                    base_pol = Policy.deterministic(base, cache[base_key]["search_policy"])
                cache[fkey] = memory_facts(path, q, gamma=gamma, max_path_steps=max_path_steps,
                                           abr_restarts=abr_restarts, base_policy=base_pol)
                write_json_atomic(cache_path, cache)
            cells.append(cache[fkey])
            specs += memory_specs(bounds, cache[fkey], **kw)
        problems.append(dict(bounds=bounds, facts=cells))

    def tick(rec, done, total, eta):
        if progress is not None:
            progress(done, total, eta, rec)

    if run:  # else: the table of the records already in the folder (cells not yet run say so)
        run_specs(specs, folder, resume=True, executor=executor, workers=workers, progress=tick)
    records = {r["spec_hash"]: r for r in store.records()}
    lifted = []  # second stage: starts lifted from the best memoryless policy the first stage holds
    for p in problems:
        f1 = next((f for f in p["facts"] if f["nodes"] == 1), None)
        p["base"] = None if f1 is None else best_memoryless(f1, records, memory_specs(p["bounds"], f1, **kw))
        for f in p["facts"]:
            lifted += lifted_specs(p["bounds"], f, p["base"], **kw)
    if run and lifted:
        run_specs(lifted, folder, resume=True, executor=executor, workers=workers, progress=tick)
        records = {r["spec_hash"]: r for r in store.records()}
    for p in problems:
        p["cells"] = [{f"k{k}{'_esc' if e else ''}": _cell(p["bounds"], f, records, k, e, base=p["base"], **kw)
                       for k, e in VARIANTS} for f in p["facts"]]
        p["literature"] = LITERATURE[p["bounds"]["problem"]]
    return dict(problems=problems, settings=dict(nodes=nodes, **{**kw, "seeds": list(seeds)},
                                                 abr_restarts=abr_restarts, gamma=gamma))


# ---------------------------------------------------------------------------- reading the table
def _best_lower(p: dict, q_max: int | None = None) -> tuple[float, str]:
    """The best value we found for a problem with at most ``q_max`` nodes, and how."""
    best, how = -np.inf, ""
    for f, cells in zip(p["facts"], p["cells"], strict=True):
        if q_max is not None and f["nodes"] > q_max:
            continue
        if f["search"] is not None and f["search"] > best:
            best, how = f["search"], f"Q = {f['nodes']}, {f['search_how']}"
        for key, c in cells.items():
            if c.get("max") is not None and c["max"] > best:
                best, how = c["max"], f"Q = {f['nodes']}, ascent {key}"
    return best, how


def _escape_best(p: dict, q_max: int | None = None, any_k: bool = False) -> tuple[float, int | None, dict | None, str]:
    """Best ascent with escapes with at most ``q_max`` nodes: k = 2 with escapes (sampled where its exact
    walk is over budget; k = 1 with escapes where no k = 2 cell was run), or with ``any_k`` the better of
    k = 1 and k = 2 with escapes (said in the last item); value, node count, certificate, which."""
    best = (-np.inf, None, None, "")
    for f, cells in zip(p["facts"], p["cells"], strict=True):
        if q_max is not None and f["nodes"] > q_max:
            continue
        if any_k:
            keys = ["k1_esc", "k2_esc"]
        else:
            keys = ["k2_esc"] if cells["k2_esc"].get("max") is not None else ["k1_esc"]
        for key in keys:
            c = cells[key]
            if c.get("max") is not None and c["max"] > best[0]:
                which = "k = 2" if key == "k2_esc" else ("k = 1" if any_k else "k = 1 (k = 2 not run)")
                best = (c["max"], f["nodes"], c.get("best_certificate"),
                        which + (", sampled" if c.get("sampled") else ""))
    return best


def goal(p: dict, any_k: bool = False) -> dict:
    """The issue's goal on one problem, row by row: (a) every published FSC row with ``n`` nodes is beaten
    by k-step ascent with escapes using at most ``n`` nodes; (b) that ascent, with at most the largest
    published node count, is within 5% of the best published value. The ascent is k = 2 with escapes,
    or with ``any_k`` the better of k = 1 and k = 2 with escapes (:func:`_escape_best`)."""
    lit = p["literature"]
    rows = []
    for name, v, printed, n in lit["rows"]:
        val, q, cert, which = _escape_best(p, n, any_k)
        rows.append(dict(name=name, value=v, printed=printed, nodes=n, ours=val, ours_nodes=q, certificate=cert,
                         which=which, beaten=q is not None and val > v))
    val, q, cert, which = _escape_best(p, max(n for *_, n in lit["rows"]), any_k)
    within = q is not None and val >= lit["best"] - 0.05 * abs(lit["best"])
    return dict(value=val, nodes=q, certificate=cert, which=which, rows=rows,
                beats=all(r["beaten"] for r in rows), within5=within)


def _fmt(x, digits=3):
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _cert(c) -> str:
    if not c:
        return ""
    kind = "2-opt" if c.get("two_opt") else ("1-opt" if c.get("one_opt") else f"not {c.get('order')}-opt")
    return kind


def markdown(table: dict) -> str:
    """The tables as Markdown (bounds; controllers per Q; literature; gaps and the goal)."""
    P = table["problems"]
    out = ["### Bounds and baselines (no training)", "",
           "| problem | states | blind (lower) | best memoryless found (lower) | MDP optimum (upper) | "
           "FIB (upper) | best published (as reported) |", "|---|---|---|---|---|---|---|"]
    for p in P:
        b = p["bounds"]
        q1 = next((f for f in p["facts"] if f["nodes"] == 1), None)
        mem = _best_lower({**p, "facts": [f for f in p["facts"] if f["nodes"] == 1],
                           "cells": [c for f, c in zip(p["facts"], p["cells"], strict=True) if f["nodes"] == 1]})
        mem_txt = "—" if q1 is None else f"{_fmt(mem[0])} ({mem[1]})"
        out.append(f"| {b['problem']} | {b['states']} | {_fmt(b['blind'])} | {mem_txt} | {_fmt(b['mdp_optimum'])} | "
                   f"{_fmt(b['fib'])} | {_fmt(p['literature']['best'])} |")
    out += ["", "### Controllers (lower bounds: values of returned policies)", "",
            "Each ascent cell: best / median final J over the starts (uniform, random seeds and, with Q >= 2, the "
            "lifted starts), the certificate of the best run with escapes, the start of the best run, total seconds; "
            "`*n`: n runs stopped by the iteration cap.", "",
            "| problem | Q | states | joint actions | det. controllers | best det. (how) | k = 1 | k = 1 + escapes | "
            "k = 2 | k = 2 + escapes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in P:
        for f, cells in zip(p["facts"], p["cells"], strict=True):
            row = [p["bounds"]["problem"], str(f["nodes"]), str(f["states"]), str(f["joint_actions"]),
                   f"{f['policies']:.3g}",
                   "— (best response beyond max_policies)" if f["search"] is None
                   else f"{_fmt(f['search'])} ({f['search_how']})"]
            for key in ("k1", "k1_esc", "k2", "k2_esc"):
                c = cells[key]
                if c.get("too_large"):
                    row.append(f"not run ({c['states']} states > max_states)")
                elif c.get("over_budget"):
                    row.append(f"over budget ({c['steps']:.2g} path steps/pass)")
                elif c.get("missing"):
                    row.append("not run" + (" (sampled)" if c.get("sampled") else ""))
                else:
                    cert = _cert(c.get("best_certificate"))
                    capped = f" *{c['capped']}" if c["capped"] else ""
                    how = "" if c["tier"] == "full" else f" [{c['tier']}: {c['starts']} starts, {c['iters']} it.]"
                    if c.get("lifted_missing"):
                        how += f" ({c['lifted_missing']} lifted starts not run)"
                    sampled = (f"<br>sampled ({c['episodes']} ep.), SE of final Ĵ_k {c['se']:.2g} "
                               f"(max {c['se_max']:.2g})" if c["sampled"] else "")
                    row.append(f"{_fmt(c['max'])} / {_fmt(c['median'])}{' ' + cert if cert else ''}{capped}"
                               f" (best: {c['best_start']}){sampled}<br>{c['seconds']:.0f} s{how}")
            out.append("| " + " | ".join(row) + " |")
    out += ["", f"### Published rows (as reported, different hardware; {SOURCE})", "",
            "| problem | method | value | nodes per agent |", "|---|---|---|---|"]
    for p in P:
        for name, v, nodes, _ in p["literature"]["rows"]:
            out.append(f"| {p['bounds']['problem']} | {name} | {v:g} | {nodes} |")
        out.append(f"| {p['bounds']['problem']} | best published (any policy) | {p['literature']['best']:g} | — |")
    out += ["", "### Gaps", "",
            "| problem | class gap: memoryless → controllers | class gap: best found → FIB | "
            "optimiser gap per Q: best in class found by search − best ascent with escapes |", "|---|---|---|---|"]
    for p in P:
        mem = _best_lower({**p, "facts": [f for f in p["facts"] if f["nodes"] == 1],
                           "cells": [c for f, c in zip(p["facts"], p["cells"], strict=True) if f["nodes"] == 1]})[0]
        best, how = _best_lower(p)
        opt = []
        for f, cells in zip(p["facts"], p["cells"], strict=True):
            asc = max((c["max"] for key, c in cells.items() if key.endswith("esc") and c.get("max") is not None),
                      default=None)
            if f["search"] is None or asc is None:
                opt.append(f"Q = {f['nodes']}: —")
            else:
                versus = "exact best" if f["search_how"] == "exhaustive" else "vs ABR"
                opt.append(f"Q = {f['nodes']}: {f['search'] - asc:+.3f} ({versus})")
        out.append(f"| {p['bounds']['problem']} | {best - mem:+.3f} (best: {how}) | {p['bounds']['fib'] - best:+.3f} | "
                   f"{'; '.join(opt)} |")
    return "\n".join(out)


def goal_paragraph(table: dict) -> str:
    """The goal per problem, read off the table (see :func:`goal`)."""
    lines, beats, within = [], 0, 0
    for p in table["problems"]:
        g = goal(p)
        beats += g["beats"]
        within += g["within5"]
        parts = [f"{r['name']} {r['value']:g} ({r['printed']}) vs ours {_fmt(r['ours'])} (Q = {r['ours_nodes']}"
                 f"{', ' + _cert(r['certificate']) if r['certificate'] else ''}): "
                 f"{'beaten' if r['beaten'] else 'NOT beaten'}" for r in g["rows"]]
        lit = p["literature"]
        lines.append(f"* **{p['bounds']['problem']}** (a) {'met' if g['beats'] else 'missed'}: {'; '.join(parts)}. "
                     f"(b) {'met' if g['within5'] else 'missed'}: best {_fmt(g['value'])} (Q = {g['nodes']}, "
                     f"{g['which']}) vs best published {lit['best']:g} (5% below: "
                     f"{lit['best'] - 0.05 * abs(lit['best']):.3f}).")
    n = len(table["problems"])
    loose = [goal(p, any_k=True) for p in table["problems"]]
    head = (f"(a) every published FSC row beaten by k-step ascent (k = 2) with escapes with at most its node count: "
            f"{beats} of {n} problems (the goal: 4 of 6). (b) within 5% of the best published value: {within} of "
            f"{n} (the goal: 3 of 6). Counting the better of k = 1 and k = 2 with escapes instead: (a) "
            f"{sum(g['beats'] for g in loose)} of {n}, (b) {sum(g['within5'] for g in loose)} of {n}.")
    return head + "\n\n" + "\n".join(lines)


def _run_seconds(table: dict) -> float:
    """Total training seconds of the runs shown in the table."""
    return float(sum(c.get("seconds", 0.0) for p in table["problems"] for cells in p["cells"] for c in cells.values()))


#: The reading guide printed after the tables (the run's own numbers are in the tables and the goal).
HOW_TO_READ = """## How to read it

* **Lower and upper bounds are never mixed.** Every value in the controller table, the blind column and the
  "best memoryless found" column is the exact value of a policy we hold (a lower bound on the optimum of its
  class); a sampled cell's value too (the exact J of the greedy rounding of its best run; its SE is that of the
  sampled estimate the run ascended on, not of the value shown). The MDP optimum (a centralised controller
  that sees the state) and the fast informed bound (FIB: a centralised controller that sees the *joint
  observation* and remembers everything, bounded from above by Hauskrecht's recursion,
  `marl_kstep.bounds.fast_informed_bound`) bound every decentralized policy with any memory from above. The
  published values are values of returned policies (lower bounds), copied as reported from Dibangoye,
  Buffet & Charpillet (ECML-PKDD 2014, Table 1), computed on other hardware with other code.
* **Node counts are not the same unit everywhere.** Ours are Mealy controllers with a joint
  (action, next node) table per (node, observation) (docs/memory.md). "Mealy NLP" is the same form;
  "NLP", "EM", "periodic", "periodic-EM" and "goal-directed" are Moore controllers (action from the node),
  and a Moore controller with `Q` nodes is a Mealy controller with `Q * A_i` nodes (docs/memory.md), so the
  issue's comparison at equal node counts is, if anything, generous to the Moore rows. A periodic
  controller with `n x p` nodes is counted as `n p` nodes.
* **Certificates.** "2-opt" / "1-opt": no change of up to two / one slots of the best run's greedy
  rounding improves J (`certify`); "not m-opt": some change of up to m slots improves it, i.e. the run
  was stopped (iteration cap `*n`, or escape cap) or ended at a stochastic point whose rounding is not a
  local optimum.
* **Gaps.** *Class gap*: between the best memoryless value and the best controller value we found (what
  memory buys here), and between the best value found and FIB (what no decentralized policy can exceed).
  *Optimiser gap*: the best deterministic controller found by search (exhaustive or ABR) minus the best
  ascent with escapes at the same node count; "—" where no search is affordable.
* **The goal** (issue 24) is computed at the end, row by row; what each miss is stuck at, and what the
  runs show, is read in docs/memory.md ("The memory table against the goal").
"""


def _data_option(data_dir) -> str:
    """``--data DIR`` for the command line of the report, or nothing for the problems shipped in the package."""
    shipped = dpomdp_path(dpomdp_names()[0]).parent
    return "" if Path(data_dir).resolve() == shipped.resolve() else f" --data {data_dir}"


def write_memory_report(data_dir, out, *, folder, json_path=None, resume: bool = False, progress=None,
                        **kw) -> Path:
    """Run the memory table and write it as Markdown (and the raw numbers as JSON)."""
    t0 = time.perf_counter()
    table = run_memory_table(data_dir, folder, resume=resume, progress=progress, **kw)
    full = commit()
    if json_path is not None:
        write_json_atomic(json_path, dict(table=table, commit=full, versions=versions()))
    st = table["settings"]
    text = f"""# Finite-state controllers beside the literature (issue 24)

Produced by

```
marl-kstep benchmarks --memory {' '.join(map(str, st['nodes']))} --iters {st['iters']} --seeds {len(st['seeds'])} \\
    --budget {st['max_path_steps']}{_data_option(data_dir)} --resume --out results/memory/memory-table.md
```

at commit `{full[:7] if full else 'unknown'}` ({versions()}); this run of the command took
{time.perf_counter() - t0:.0f} s (runs already in `results/memory/runs.jsonl` are not run again: `--resume`; the
records name the shipped problems by name, so they are found again from any checkout). The runs' own
seconds are in the cells (their sum: {_run_seconds(table):.0f} s).
Every `.dpomdp` at gamma = {st['gamma']} (the files say `discount: 1`); `Q` = memory nodes per agent
(`mk.with_memory(model, Q)`, Mealy form with a joint (action, next node) table, docs/memory.md). Ascent is
projected gradient ascent (pgd, step {st['step']}, at most {st['iters']} iterations, stop when no entry moves
by 1e-8) from the uniform controller and from {len(st['seeds'])} Dirichlet(1) random starts (seeds
{', '.join(map(str, st['seeds']))}) and, with Q >= 2 nodes, from {LIFT_STARTS} ({LIFT_STARTS_SLOW} in a "slow" cell,
1 in a "huge" one) **lifted starts** ("lifted s": the best
deterministic memoryless policy held after the Q = 1 runs (exhaustive search, ABR, or the greedy rounding of the
best Q = 1 run), played in every node with the node kept, mixed {1 - LIFT_MIX:g} / {LIFT_MIX:g} with the Dirichlet(1)
random controller of seed s = 0, 1, ...), with k = 1 (ordinary) and k = 2 (k-step), each without and with
`escape=True` (certified escapes of order 2 on dectiger, recycling and broadcastChannel up to
{ORDER2_MAX_STATES} augmented states, order 1 elsewhere; at most {st['max_escapes']} escapes per run). J is the
exact ordinary value of the returned policy.
**Large cells** (the cost of one exact k = 1 evaluation, unloaded, in docs/memory.md: about 15 ms at
700–1000 augmented states, 45 ms at 1,600, 0.11 s at 2,161 and 0.47 s at 3,841): above {st['big_states']}
augmented states ("big") only the uniform start and the first {BIG[0]} seeds, at most {BIG[1]} iterations and
{BIG[2]} escapes per run; above {st['huge_states']} ("huge") the uniform start and the first {HUGE[0]} seed, at
most {HUGE[1]} iterations and {HUGE[2]} escapes; above {st['max_states']} not trained. An exact cell whose path
walk needs more than {st['slow_steps']:,} steps per pass ("slow") has the uniform start and the first {BIG[0]} seeds
only. The cell says its tier.
**Sampled cells**: a k whose exact path walk needs more than {st['max_path_steps']:,} steps per pass is run
with `SampledKStep` ({st['episodes']} episodes per estimate, floor 0.01, seeded by the run's seed) and marked
"sampled"; its value is the exact J of the greedy rounding of the returned policy (what a sampled run is judged
by, `J_judged` of its record), and the cell gives the standard error of the final sampled estimate Ĵ_k of the
best run (and the largest over the cell's runs). "best det." is the
best deterministic controller by exhaustive search where there are at most `Settings.max_policies` = 10^6 of
them, else the best of alternating best response (ABR) from the lifted best memoryless controller and
{st['abr_restarts']} random deterministic ones, where one agent's best response is enumerable and costs at most
1e7 tables x states^2 (— otherwise).
Upper bounds (MDP optimum, fast informed bound FIB, `marl_kstep.bounds`) are for every decentralized policy
with any memory. Every run is a record in `runs.jsonl` (full spec and hash).

"""
    text += (markdown(table) + "\n\n" + HOW_TO_READ + "\n### The goal, as computed from the table\n\n"
             + goal_paragraph(table) + "\n")
    return write_text_atomic(out, text)
