"""The Dec-POMDP benchmark table: every ``.dpomdp`` problem against every method.

For each problem (at gamma = 0.9, or the file's discount when it is below 1) the table
reports the augmented reachable states, observations and actions per agent, the number
of deterministic memoryless joint policies, J* by exhaustive search (when that count is
at most ``max_policies``), the uniform policy's value, the best observation-blind policy's
value (a lower bound; runs ending below it are counted and named), alternating best response
from the uniform policy, and for k = 1..4 the final ordinary J of projected and mirror ascent
from the uniform policy and from seeded random starts (min / median / max), with wall time.
Runs whose k-step enumeration is over the path budget are marked as such, with their measured
cost (seconds per exact call, and per run). Every count in the findings carries its n and a 95%
Wilson interval.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from ..bounds import best_blind
from ..estimators import ExactKStep, count_path_steps, estimate_path_steps, value
from ..model import load_dpomdp, parse_dpomdp
from ..policy import Policy
from ..search import alternating_best_response, best_deterministic, count_deterministic, mdp_optimum
from .io import versions, write_json_atomic, write_text_atomic
from .runner import RunSpec, RunStore, commit, run_one, run_specs
from .spec import spec_target
from .study import wilson_interval

__all__ = ["DEFAULT_DATA_DIR", "problem_facts", "problem_rows", "run_table", "table_specs", "markdown", "findings",
           "commit_id", "spec_target", "DEFAULT_BUDGET", "exact_call_seconds", "below_blind", "COST_LIMIT"]

#: The table's path budget (steps per pass; issue 23): every cell whose runs cost under ``COST_LIMIT``
#: seconds each is within it (measured: docs/performance.md, "The Dec-POMDP table's budget").
DEFAULT_BUDGET = 6_000_000
#: Seconds per run under which a cell must be computed, not marked over budget (issue 23).
COST_LIMIT = 60.0
#: Version of the cached problem facts (``problems.json``): 2 added the blind baseline and the cost of
#: over-budget cells, 3 their walked (lumped) path steps, 4 timed them up to ``TIME_CAP`` = 10^9 (was 5e7).
FACTS_VERSION = 4
#: The load log of a table's folder: one ``{"date", "load1"}`` line per finished run.
LOAD_LOG = "load.jsonl"
#: Path steps per pass from which (bound or count) a cell's exact call is timed, and up to which (count on
#: the walked model: about 3-10 s per call at 10^9 steps, so the four timed calls stay under a minute).
TIME_MIN, TIME_CAP = 1_000_000, 1_000_000_000

def _find_data_dir() -> Path:
    """``$MARL_KSTEP_DPOMDP_DIR``, else the problems shipped in the package (``marl_kstep/data/dpomdp``)."""
    if os.environ.get("MARL_KSTEP_DPOMDP_DIR"):
        return Path(os.environ["MARL_KSTEP_DPOMDP_DIR"])
    return Path(__file__).resolve().parents[1] / "data" / "dpomdp"


#: Where the Dec-POMDP problems are read from (the shipped copies unless the environment says otherwise).
DEFAULT_DATA_DIR = _find_data_dir()


def _gamma_for(path: Path) -> float:
    import gzip

    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    d = parse_dpomdp(text, path.name).discount
    return d if 0 <= d < 1 else 0.9


def problem_facts(path: Path, *, ks=(1, 2, 3, 4), max_path_steps: int = DEFAULT_BUDGET,
                  max_policies: int = 10**6) -> dict:
    """The numbers of one problem that do not depend on a training run: sizes, J* (exhaustive, when the
    count of deterministic policies is at most ``max_policies``), the uniform policy's value, alternating
    best response, the fully observable MDP optimum (an upper bound on every decentralized value), the
    best observation-blind policy (:func:`~marl_kstep.bounds.best_blind`: a lower bound on the best
    memoryless value), the path steps of every k (over the budget: no runs) and, for every k over
    ``TIME_MIN`` path steps, ``cost[k]``: the exact count (up to ``TIME_CAP``), the path steps on the
    walked (lumped) model and the measured seconds of one exact call (:func:`exact_call_seconds`; both
    None when the walked model is over ``TIME_CAP``), with the load average when measured."""
    gamma = _gamma_for(path)
    mdp = load_dpomdp(path, gamma=gamma)
    count = count_deterministic(mdp)
    row = dict(problem=path.name, path=str(path), gamma=gamma, states=mdp.n_states, obs=list(mdp.n_obs),
               actions=list(mdp.n_actions), policies=count)
    t0 = time.perf_counter()
    row["J_star"] = best_deterministic(mdp, max_policies)[0] if count <= max_policies else None
    row["J_star_seconds"] = time.perf_counter() - t0
    uniform = Policy.uniform(mdp)
    row["uniform"] = value(mdp, uniform)
    t0 = time.perf_counter()
    try:
        row["abr"], _, row["abr_rounds"] = alternating_best_response(mdp, uniform, rounds=20,
                                                                     max_policies=max_policies)
    except ValueError:
        row["abr"], row["abr_rounds"] = None, None
    row["abr_seconds"] = time.perf_counter() - t0
    row["mdp_optimum"] = mdp_optimum(mdp)
    row["blind"], blind_actions = best_blind(mdp)
    row["blind_actions"] = list(blind_actions)
    row["steps"] = {str(k): estimate_path_steps(mdp, k, max_path_steps=max_path_steps) for k in ks}
    row["cost"] = {}
    for k in ks:
        if row["steps"][str(k)] > min(TIME_MIN, max_path_steps):  # costly or over budget: exact count, cost
            seconds, walked = exact_call_seconds(mdp, k, TIME_CAP)
            row["cost"][str(k)] = dict(steps=count_path_steps(mdp, k, TIME_CAP), walked_steps=walked,
                                       seconds_per_call=seconds)
    row["load"] = os.getloadavg()[0]
    return row


def exact_call_seconds(mdp, k: int, max_path_steps: int, calls: int = 3) -> tuple[float | None, int | None]:
    """Median seconds of one exact ``value_and_grad`` at the uniform policy (``calls`` timed calls
    after a first that plans, compiles or loads) and the path steps of one pass on the walked (lumped)
    model; ``(None, None)`` when the walked model is over ``max_path_steps``. A run of the table is at
    most ``iters`` such calls."""
    try:
        est = ExactKStep(mdp, k, max_path_steps=max_path_steps)
    except ValueError:
        return None, None
    pol = Policy.uniform(mdp)
    est.value_and_grad(pol)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        est.value_and_grad(pol)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), int(count_path_steps(est.plan.model, k, max_path_steps))


def cell_specs(facts: dict, method: str, k: int, *, seeds=(0, 1, 2, 3, 4), step: float = 0.05,
               iters: int = 1000) -> list[RunSpec]:
    """The run specs of one cell (``method``, ``k``) of one problem: from the uniform policy, then from each
    seeded Dirichlet(1) start (tol 1e-8)."""
    target = spec_target(facts["path"], facts["gamma"])
    opts = dict(method=method, step=step, iters=iters, tol=1e-8)
    return [RunSpec(target, k, start="uniform", **opts), *(RunSpec(target, k, seed=s, start="random", **opts)
                                                           for s in seeds)]


def table_specs(facts: dict, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), seeds=(0, 1, 2, 3, 4),
                step: float = 0.05, iters: int = 1000, max_path_steps: int = DEFAULT_BUDGET) -> list[RunSpec]:
    """The run specs of one problem's cells within the path budget (:func:`cell_specs` of every
    (method, k) whose path steps per pass are at most ``max_path_steps``). The cells over it that are
    computed because they are cheap are added once the runs they are estimated from exist
    (:func:`problem_rows_from`'s ``by_cost``; :func:`run_table`)."""
    return [s for method in methods for k in ks if facts["steps"][str(k)] <= max_path_steps
            for s in cell_specs(facts, method, k, seeds=seeds, step=step, iters=iters)]


def below_blind(values, blind: float, tol: float = 1e-2) -> list[int]:
    """Indices of ``values`` below the best observation-blind policy's value by more than ``tol``: runs
    that ended worse than playing one fixed action per agent whatever it sees."""
    return [i for i, v in enumerate(values) if v < blind - tol]


def problem_rows_from(facts: dict, records: dict, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"),
                      seeds=(0, 1, 2, 3, 4), step: float = 0.05, iters: int = 1000,
                      max_path_steps: int = DEFAULT_BUDGET, tol: float = 1e-2,
                      cost_limit: float = COST_LIMIT) -> dict:
    """One row of the table from the problem's facts and the run records (by spec hash).

    A cell over the path budget is estimated: its measured ``seconds_per_call`` (when timed) times the
    mean iterations of the same method's runs at the largest computed k (``iterations_from``; the mean,
    not the median, since a run costs what it takes and one capped run can carry a cell), or
    times ``iters`` when none was run, is its ``seconds_per_run``. When that is under ``cost_limit`` the
    cell is computed anyway (it is listed in ``row["by_cost"]`` and carries its estimate as ``by_cost``);
    otherwise it is over budget and holds its path steps and estimate. While such a cell has no runs,
    the larger k's of its method are not selected (``waits_for``: that k), since their price would
    come from older runs: :func:`run_table` runs them one k at a time.

    A computed cell holds its runs' final J (``uniform``, ``random``), ``below_blind``: the starts
    (``"uniform"`` or the seed) whose final J is below the blind baseline ``facts["blind"]`` by more
    than ``tol``, ``iterations`` of its runs and, with ``seconds_per_run``, their mean wall time."""
    row = {k: v for k, v in facts.items() if k not in ("steps", "cost")}
    cells = {}
    blind = facts.get("blind")
    not_run, by_cost = {}, []
    for method in methods:
        last_iters = None  # (k, mean iterations) of the largest computed k so far
        waiting = None  # a k run by cost whose runs are missing: the larger k's are priced once they exist
        for k in ks:
            key = f"{method}_k{k}"
            steps = facts["steps"][str(k)]
            estimate = None
            if steps > max_path_steps:
                cost = facts.get("cost", {}).get(str(k), {})
                cell = dict(over_budget=True, steps=cost.get("steps", steps), walked_steps=cost.get("walked_steps"),
                            seconds_per_call=cost.get("seconds_per_call"))
                n_it = iters if last_iters is None else last_iters[1]
                if cell["seconds_per_call"] is not None:
                    cell["iterations_from"] = last_iters
                    cell["seconds_per_run"] = cell["seconds_per_call"] * n_it
                else:  # not timed (over TIME_CAP walked steps): a pass costs at least one of a smaller k
                    timed = [(j, facts["cost"][str(j)]["seconds_per_call"]) for j in ks if j < k
                             and facts.get("cost", {}).get(str(j), {}).get("seconds_per_call") is not None]
                    if timed:
                        j, per_call = max(timed)
                        cell["at_least"] = dict(k=j, seconds_per_call=per_call, iterations_from=last_iters,
                                                seconds_per_run=per_call * n_it)
                if waiting is not None:
                    cell["waits_for"] = waiting  # not selected on a price from older runs
                if waiting is not None or cell.get("seconds_per_run") is None or cell["seconds_per_run"] >= cost_limit:
                    cells[key] = cell
                    continue
                estimate = {x: cell[x] for x in ("steps", "walked_steps", "seconds_per_call", "iterations_from",
                                                 "seconds_per_run")}
                by_cost.append(key)
            specs = cell_specs(facts, method, k, seeds=seeds, step=step, iters=iters)
            u, *rs = (records.get(s.hash) for s in specs)
            if u is None or any(r is None for r in rs):  # not run yet (an interrupted or partial table)
                not_run[key] = facts.get("cost", {}).get(str(k), {}).get("seconds_per_call")
                if estimate is not None:
                    waiting = k
                continue
            finals = [r["result"]["final_J"] for r in rs]
            its = [u["result"]["iterations"], *(r["result"]["iterations"] for r in rs)]
            last_iters = (k, float(np.mean(its)))
            starts = ["uniform", *seeds]
            all_j = [u["result"]["final_J"], *finals]
            low = [] if blind is None else [starts[i] for i in below_blind(all_j, blind, tol)]
            cells[key] = dict(over_budget=False, steps=steps, uniform=u["result"]["final_J"],
                              uniform_iterations=u["result"]["iterations"], uniform_capped=u["result"]["capped"],
                              random=finals, random_capped=sum(r["result"]["capped"] for r in rs),
                              min=float(np.min(finals)), median=float(np.median(finals)), max=float(np.max(finals)),
                              iterations=its, below_blind=low,
                              seconds=u["result"]["seconds"] + sum(r["result"]["seconds"] for r in rs),
                              spec_hashes=[u["spec_hash"], *(r["spec_hash"] for r in rs)], by_cost=estimate)
    row["cells"], row["not_run"], row["by_cost"] = cells, not_run, by_cost
    return row


def _cheap_specs(facts: list[dict], rows: list[dict], records: dict, *, seeds, step, iters) -> list[RunSpec]:
    """The specs not yet in ``records`` of the cells computed because they are cheap (``row["by_cost"]``)."""
    return [s for f, r in zip(facts, rows, strict=True) for key in r["by_cost"]
            for s in cell_specs(f, key.split("_k")[0], int(key.split("_k")[1]), seeds=seeds, step=step, iters=iters)
            if s.hash not in records]


def problem_rows(path: Path, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), seeds=(0, 1, 2, 3, 4),
                 step: float = 0.05, iters: int = 1000, max_path_steps: int = DEFAULT_BUDGET,
                 max_policies: int = 10**6, cost_limit: float = COST_LIMIT, progress=None) -> dict:
    """All numbers of one problem, its runs made in this process (see :func:`run_table` for folders)."""
    facts = problem_facts(path, ks=ks, max_path_steps=max_path_steps, max_policies=max_policies)
    kw = dict(ks=ks, methods=methods, seeds=seeds, step=step, iters=iters, max_path_steps=max_path_steps,
              cost_limit=cost_limit)
    specs = table_specs(facts, ks=ks, methods=methods, seeds=seeds, step=step, iters=iters,
                        max_path_steps=max_path_steps)
    records = {}
    while True:  # the cells within the budget, then the cheap ones over it, estimated from those runs
        for spec in specs:
            rec = run_one(spec)
            records[rec["spec_hash"]] = rec
        row = problem_rows_from(facts, records, **kw)
        specs = _cheap_specs([facts], [row], records, seeds=seeds, step=step, iters=iters)
        if not specs:
            break
    if progress is not None:
        for key, cell in row["cells"].items():
            if not cell["over_budget"]:
                progress(path.name, key, cell)
    return row


def run_table(data_dir=DEFAULT_DATA_DIR, *, files=None, progress=None, folder=None, resume: bool = False,
              executor: str = "serial", workers: int | None = None, ks=(1, 2, 3, 4), methods=("pgd", "mirror"),
              seeds=(0, 1, 2, 3, 4), step: float = 0.05, iters: int = 1000, max_path_steps: int = DEFAULT_BUDGET,
              max_policies: int = 10**6, cost_limit: float = COST_LIMIT, run: bool = True) -> list[dict]:
    """Every ``.dpomdp`` file of ``data_dir`` (the syntax example ``example.dpomdp`` is skipped).

    The cells within the path budget ``max_path_steps`` are run first; then, in rounds, every cell over it
    whose estimated cost (measured seconds per exact call times the mean iterations of the same method's
    runs at the largest computed k) is under ``cost_limit`` seconds per run (:func:`problem_rows_from`).

    With ``folder``, the runs go through :func:`~marl_kstep.experiments.runner.run_specs`: one record per
    run in ``folder/runs.jsonl`` (``resume`` continues an interrupted table), on any executor; the
    problems' facts are cached in ``folder/problems.json``, and the load average after each run is
    appended to ``folder/load.jsonl``. ``progress(done, total, eta_seconds, record)``. ``run=False``
    (with ``folder``) makes no run: the rows are built from the records there, a cell without its records
    is "not run".
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"benchmark folder {data_dir} does not exist")
    paths = sorted(p for p in data_dir.glob("*.dpomdp*") if not p.name.startswith("example"))
    if files:
        paths = [p for p in paths if p.name in set(files)]
    if not cost_limit >= 0:
        raise ValueError(f"cost_limit must be a number of seconds >= 0, got {cost_limit!r}")
    kw = dict(ks=ks, methods=methods, seeds=seeds, step=step, iters=iters, max_path_steps=max_path_steps)
    if folder is None:
        if not run:
            raise ValueError("run=False builds the table from the records of a folder; give folder")
        return [problem_rows(p, progress=progress, max_policies=max_policies, cost_limit=cost_limit, **kw)
                for p in paths]
    folder = Path(folder)
    store = RunStore(folder)
    if store.exists() and not resume:
        raise ValueError(f"{store.path} already holds runs; resume to continue them, or choose another folder")
    cache_path = folder / "problems.json"
    cache = json.loads(cache_path.read_text()) if resume and cache_path.exists() else {}
    facts = []
    for p in paths:
        key = f"{p.name}:{max_path_steps}:{max_policies}:{list(ks)}:{FACTS_VERSION}"
        if key not in cache:
            cache[key] = problem_facts(p, ks=ks, max_path_steps=max_path_steps, max_policies=max_policies)
            write_json_atomic(cache_path, cache)
        facts.append(cache[key])
    specs = [s for f in facts for s in table_specs(f, **kw)]

    def tick(rec, done, total, eta):
        with open(folder / LOAD_LOG, "a") as f:  # the machine's load during the runs, for the report
            f.write(json.dumps(dict(date=rec.get("date"), load1=os.getloadavg()[0])) + "\n")
        if progress is not None:
            progress(done, total, eta, rec)

    tried = set()
    while True:  # the cells within the budget, then (in rounds) the cheap ones over it
        if run and specs:
            run_specs(specs, folder, resume=True, executor=executor, workers=workers, progress=tick)
            tried.update(s.hash for s in specs)
        records = {r["spec_hash"]: r for r in store.records()}
        rows = [problem_rows_from(f, records, cost_limit=cost_limit, **kw) for f in facts]
        specs = _cheap_specs(facts, rows, records, seeds=seeds, step=step, iters=iters)
        if not run or not specs or tried.issuperset(s.hash for s in specs):
            return rows


def _fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def commit_id(repo: Path | None = None) -> str:
    """Short commit of ``repo`` (default: the package's checkout, as in the run records), or "unknown"."""
    if repo is None:
        full = commit()
        return full[:7] if full else "unknown"
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=repo, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rate(successes: int, n: int) -> str:
    """``"x of n (p%, 95% Wilson interval lo-hi%)"``; the interval is called wide when it spans more
    than 30 points."""
    if n == 0:
        return "0 of 0"
    lo, hi = wilson_interval(successes, n)
    wide = ", wide" if hi - lo > 0.3 else ""
    return f"{successes} of {n} ({100 * successes / n:.0f}%, 95% Wilson interval {100 * lo:.0f}-{100 * hi:.0f}%{wide})"


def _cost_text(c: dict) -> str:
    """An over-budget cell: its path steps and, when timed, its measured cost."""
    steps = c["steps"]
    head = (f"over budget ({steps:,} path steps/pass" if steps <= TIME_CAP
            else f"over budget (> {TIME_CAP:,} path steps/pass")
    if c.get("seconds_per_call") is None:
        text = head + (")<br>not timed" if steps <= TIME_CAP else f"; walked: > {TIME_CAP:,})<br>not timed")
        low = c.get("at_least")
        if low:
            text += (f"; ≥ {low['seconds_per_run']:.0f} s/run (k = {low['k']}'s {low['seconds_per_call']:.3f} s/call "
                     f"{_basis(low)})")
        return text
    head += f"; walked: {c['walked_steps']:,})" if c.get("walked_steps") is not None else ")"
    wait = f"<br>priced again once k = {c['waits_for']} has run" if c.get("waits_for") else ""
    return f"{head}<br>{c['seconds_per_call']:.3f} s/call: ≈ {c['seconds_per_run']:.0f} s/run {_basis(c)}{wait}"


def _basis(c: dict) -> str:
    return (f"at the k = {c['iterations_from'][0]} runs' mean {c['iterations_from'][1]:.0f} it."
            if c.get("iterations_from") else "at the iteration cap")


def markdown(rows: list[dict], *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), settings: dict | None = None) -> str:
    """The tables as Markdown: one summary table, then one table per method."""
    n_seeds = max((len(c["random"]) for r in rows for c in r["cells"].values() if not c["over_budget"]), default=0)
    out = ["| problem | gamma | states | obs / agent | actions / agent | det. policies | J* | uniform J | blind J | "
           "ABR J | MDP optimum |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['gamma']:g} | {r['states']} | {r['obs']} | {r['actions']} | "
                   f"{r['policies']:.3g} | {_fmt(r['J_star'])} | {_fmt(r['uniform'])} | {_fmt(r.get('blind'))} | "
                   f"{_fmt(r['abr'])} | {_fmt(r.get('mdp_optimum'))} |")
    for method in methods:
        out += ["", f"**{method}** — final J from the uniform policy (its iterations; `*`: stopped by the "
                f"iteration cap, not converged); below it min / median / max over the {n_seeds} random starts (and "
                f"how many of them the cap stopped); **below blind**: how many of the cell's {n_seeds + 1} runs end "
                f"below the blind J; wall time for all starts. Over budget: the cell's path steps per pass and, "
                f"measured, the seconds of one exact call and of one run", "",
                "| problem | " + " | ".join(f"k = {k}" for k in ks) + " |",
                "|---|" + "---|" * len(ks)]
        for r in rows:
            cells = []
            for k in ks:
                c = r["cells"].get(f"{method}_k{k}")
                if c is None:
                    sec = r.get("not_run", {}).get(f"{method}_k{k}")
                    cells.append("not run" if sec is None else f"not run<br>({sec:.3f} s/call)")
                elif c["over_budget"]:
                    cells.append(_cost_text(c))
                else:
                    it = c.get("uniform_iterations")
                    its = "" if it is None else f" ({it}{'*' if c.get('uniform_capped') else ''} it.)"
                    capped = c.get("random_capped", 0)
                    note = f" ({capped} of {len(c['random'])} capped)" if capped else ""
                    low = c.get("below_blind") or []
                    low_txt = f"<br>**{len(low)} of {len(c['random']) + 1} below blind**" if low else ""
                    est = c.get("by_cost")
                    est_txt = (f"<br>over the path budget, run by cost: ≈ {est['seconds_per_run']:.1f} s/run "
                               f"estimated, {c['seconds'] / len(c['iterations']):.1f} s measured" if est else "")
                    cells.append(f"{c['uniform']:.3f}{its}<br>{c['min']:.3f} / {c['median']:.3f} / {c['max']:.3f}"
                                 f"{note}{low_txt}<br>{c['seconds']:.1f} s{est_txt}")
            out.append(f"| {r['problem']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _short(name: str) -> str:
    return name.split(".dpomdp")[0]


def findings(rows: list[dict], *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), tol: float = 1e-2,
             cost_limit: float = COST_LIMIT) -> str:
    """Paragraphs of facts read off the table: runs below the blind baseline, runs at J*, where larger k
    helps, where every method stops short of J*, where stochastic policies beat J*, and the cost of the
    cells over budget. Every count carries its n and a 95% Wilson interval."""
    helps, short, above = [], [], []
    low_cells, n_runs, n_low = [], {m: 0 for m in methods}, {m: 0 for m in methods}
    at_star, n_star = {m: 0 for m in methods}, {m: 0 for m in methods}
    over, cheap, by_cost = [], [], []
    for r in rows:
        for method in methods:
            meds = [(k, r["cells"][f"{method}_k{k}"]["median"]) for k in ks
                    if not r["cells"].get(f"{method}_k{k}", {"over_budget": True})["over_budget"]]
            if len(meds) >= 2 and max(m for _, m in meds[1:]) > meds[0][1] + tol:
                best_k, best = max(meds[1:], key=lambda x: x[1])
                helps.append(f"{r['problem']} ({method}: median {meds[0][1]:.3f} at k = 1, {best:.3f} at k = {best_k})")
            for k in ks:
                c = r["cells"].get(f"{method}_k{k}")
                if c is None:
                    continue
                if c["over_budget"]:
                    over.append((r["problem"], k, method, c))
                    continue
                finals = [c["uniform"], *c["random"]]
                if c.get("by_cost"):
                    e = c["by_cost"]
                    by_cost.append(f"{_short(r['problem'])} {method} k = {k} ({e['seconds_per_call']:.2f} s/call: "
                                   f"≈ {e['seconds_per_run']:.1f} s/run estimated, "
                                   f"{c['seconds'] / len(finals):.1f} s/run measured, mean "
                                   f"{np.mean(c['iterations']):.0f} it.)")
                n_runs[method] += len(finals)
                low = c.get("below_blind") or []
                n_low[method] += len(low)
                if low:
                    worst = min(finals)
                    low_cells.append(f"{_short(r['problem'])} {method} k = {k} ({len(low)} of {len(finals)}: "
                                     f"worst {worst:.3f} vs blind {r['blind']:.3f})")
                if r["J_star"] is not None:
                    n_star[method] += len(finals)
                    at_star[method] += sum(v >= r["J_star"] - tol for v in finals)
        if r["J_star"] is not None:
            finals = [c[x] for c in r["cells"].values() if not c["over_budget"] for x in ("uniform", "max")]
            if finals and max(finals) < r["J_star"] - tol:
                short.append(f"{r['problem']} (best {max(finals):.3f} vs J* {r['J_star']:.3f})")
            if finals and max(finals) > r["J_star"] + tol:
                above.append(f"{r['problem']} ({max(finals):.3f} > J* {r['J_star']:.3f})")

    def listing(items):
        return "; ".join(items) if items else "no problem"

    total, lows = sum(n_runs.values()), sum(n_low.values())
    paras = []
    if any(r.get("blind") is not None for r in rows):
        per = ", ".join(f"{m} {rate(n_low[m], n_runs[m])}" for m in methods)
        paras.append(
            f"**Below the blind baseline.** Of the runs, {rate(lows, total)} end below the best observation-blind "
            f"policy (one fixed action per agent, whatever it sees; column \"blind J\") by more than {tol:g}: {per}. "
            f"They are in: {listing(low_cells)}. Such a run ended at a stationary point (or the iteration cap) "
            f"worse than ignoring the observations altogether.")
    per = ", ".join(f"{m} {rate(at_star[m], n_star[m])}" for m in methods)
    n_prob = sum(r["J_star"] is not None for r in rows)
    paras.append(f"**At J\\*.** Runs ending within {tol:g} of J* (or above it), on the {n_prob} problems where J* is "
                 f"known: {per}.")
    paras.append(f"Larger k raises the median final J over k = 1 (by more than {tol:g}) on: {listing(helps)}. "
                 f"Every method and start stops short of J* (by more than {tol:g}) on: {listing(short)}. "
                 "A stochastic memoryless policy beats the best deterministic one (J* is not an upper bound, "
                 "SPEC §5) on: " + listing(above) + ".")
    if over:
        items = []
        for (name, k), group in itertools.groupby(sorted(over, key=lambda x: (x[0], x[1])), key=lambda x: (x[0], x[1])):
            group = list(group)
            c = group[0][3]
            if c.get("seconds_per_call") is None:
                why = (f"> {TIME_CAP:,} path steps on the walked model" if c["steps"] > TIME_CAP
                       else f"{c['steps']:,} path steps")
                low = [(m, cm["at_least"]) for _, _, m, cm in group if cm.get("at_least")]
                low_txt = "" if not low else (f"; at least k = {low[0][1]['k']}'s {low[0][1]['seconds_per_call']:.2f} "
                                              "s/call, s/run ≥ " + ", ".join(f"{m} {a['seconds_per_run']:.1f}"
                                                                              for m, a in low))
                items.append(f"{_short(name)} k = {k} ({why}, not timed{low_txt})")
                continue
            runs = ", ".join(f"{m} ≈ {cm['seconds_per_run']:.1f}" for _, _, m, cm in group)
            items.append(f"{_short(name)} k = {k} ({c['seconds_per_call']:.2f} s/call; s/run: {runs})")
            cheap += [f"{_short(name)} {m} k = {k} (≈ {cm['seconds_per_run']:.1f} s/run)" for _, _, m, cm in group
                      if cm["seconds_per_run"] < cost_limit]
        cheap_txt = (f" Cells over budget estimated under {cost_limit:g} s per run, yet not run (the table was made "
                     f"with a lower cost limit): {listing(cheap)}." if cheap else "")
        paras.append(f"**Over budget** ({len(over)} cells, estimated at {cost_limit:g} s per run or more, or not "
                     f"timed: measured seconds per call times the mean iterations of the same method's runs at the "
                     f"largest computed k): {listing(items)}.{cheap_txt}")
    if by_cost:
        paras.append(f"**Run by cost** (over the path budget, but estimated under {cost_limit:g} s per run, so "
                     f"computed): {listing(by_cost)}.")
    missing = {True: [], False: []}  # by cost or within the budget
    for r in rows:
        for key in r.get("not_run", {}):
            missing[key in r.get("by_cost", [])].append(f"{_short(r['problem'])} {key.replace('_k', ' k = ')}")
    if missing[False] or missing[True]:
        parts = [f"within the budget: {listing(missing[False])}"] if missing[False] else []
        parts += [f"over it but estimated under {cost_limit:g} s per run: {listing(missing[True])}"] if missing[True] \
            else []
        paras.append(f"**Not run** (the table was stopped before their runs, or rebuilt with --no-run): "
                     f"{'; '.join(parts)}.")
    paras.append("The intervals treat runs as independent; runs of one problem are not, so they are optimistic; "
                 "counts within one cell (out of its few starts) have wide intervals and are given without them.")
    return "\n\n".join(paras)


#: The closing pointer of docs/benchmarks.md to the controller table (kept when the table is regenerated).
MEMORY_SECTION = """
## Agents with memory

The same problems with finite-state controllers (`mk.with_memory`, 1 to 4 nodes per agent), beside the
published controllers (Dibangoye, Buffet & Charpillet 2014, as reported) and with two upper bounds (the
fully observable MDP optimum and the fast informed bound): [docs/memory-table.md](memory-table.md),
produced by `marl-kstep benchmarks --memory 1 2 3 4` (command and settings in that file).
"""


def provenance(rows: list[dict], folder=None) -> dict:
    """What the report says about how it was made: the table's runs (count, summed seconds, first and last
    record date, their commits and hosts), the load average over the runs (``folder/load.jsonl``) and at
    the cost timings (the facts), and the CPU count."""
    import datetime

    hashes = {h for r in rows for c in r["cells"].values() for h in c.get("spec_hashes", [])}
    recs = [] if folder is None else [r for r in RunStore(folder).records() if r["spec_hash"] in hashes]
    dates = sorted(datetime.datetime.fromisoformat(r["date"]) for r in recs if r.get("date"))
    loads = []
    if folder is not None and (Path(folder) / LOAD_LOG).exists():
        for line in (Path(folder) / LOAD_LOG).read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if item.get("date") and item["date"] >= (dates[0].isoformat() if dates else ""):
                loads.append(float(item["load1"]))
    return dict(runs=len(recs), run_seconds=sum(r["result"]["seconds"] for r in recs),
                first=dates[0].isoformat() if dates else None, last=dates[-1].isoformat() if dates else None,
                span_seconds=(dates[-1] - dates[0]).total_seconds() if dates else None,
                commits=sorted({(r.get("commit") or "unknown")[:7] for r in recs}),
                hosts=sorted({r.get("host") or "unknown" for r in recs}), cpus=os.cpu_count(),
                load_runs=[float(np.min(loads)), float(np.median(loads)), float(np.max(loads)), len(loads)]
                if loads else None,
                load_facts=[r["load"] for r in rows if r.get("load") is not None])


def _provenance_text(p: dict, seconds: float, budget: int) -> str:
    runs = (f"{p['runs']} runs, {p['run_seconds']:.0f} s of run time in all (serial), recorded from {p['first']} to "
            f"{p['last']} ({p['span_seconds'] / 3600:.2f} h wall, resumed runs included) by commit(s) "
            f"{', '.join(p['commits'])} on {', '.join(p['hosts'])}" if p["runs"] else "no run records")
    load = (f"load average (1 min) after each run: median {p['load_runs'][1]:.1f}, range {p['load_runs'][0]:.1f}-"
            f"{p['load_runs'][2]:.1f} ({p['load_runs'][3]} samples)" if p.get("load_runs") else "load during the "
            "runs not recorded")
    lf = p.get("load_facts") or []
    facts = f"; {np.min(lf):.1f}-{np.max(lf):.1f} while the costs per call were timed" if lf else ""
    return (f"{runs}; this report, with the problems' facts and cost timings, took {seconds:.0f} s. Machine: "
            f"{p['cpus']} CPUs, {load}{facts}. Path budget: {budget:,} steps per pass.")


def write_report(data_dir=DEFAULT_DATA_DIR, out="results/benchmarks/benchmarks.md", *,
                 json_path="results/benchmarks/dpomdp_table.json", iters: int = 1000, step: float = 0.05,
                 budget: int = DEFAULT_BUDGET, seeds: int = 5, files=None, repo: Path | None = None, progress=None,
                 folder=None, resume: bool = False, executor: str = "serial", workers: int | None = None,
                 run: bool = True, cost_limit: float = COST_LIMIT) -> Path:
    """Run the whole table (through run records in ``folder``, when given; ``run=False``: only from the
    records already there) and write the Markdown report (and the raw numbers as JSON)."""
    t0 = time.perf_counter()
    commit = commit_id(repo)  # the code the table is produced from
    rows = run_table(data_dir, files=files, progress=progress, iters=iters, step=step, max_path_steps=budget,
                     seeds=tuple(range(seeds)), folder=folder, resume=resume, executor=executor, workers=workers,
                     run=run, cost_limit=cost_limit)
    seconds = time.perf_counter() - t0
    prov = provenance(rows, folder)
    settings = dict(iters=iters, step=step, max_path_steps=budget, cost_limit=cost_limit, seeds=list(range(seeds)),
                    folder=None if folder is None else str(folder))
    if json_path is not None:
        write_json_atomic(json_path, dict(rows=rows, settings=settings, commit=commit, versions=versions(),
                                          provenance=prov, seconds=seconds))
    text = f"""# Dec-POMDP benchmarks

Produced by `marl-kstep benchmarks --budget {budget} --cost-limit {cost_limit:g}` (or
`python benchmarks/dpomdp_table.py`) at commit `{commit}` ({versions()}). {_provenance_text(prov, seconds, budget)}

Memoryless decentralized policies on the observation-augmented
joint MDP (SPEC §6), gamma 0.9 or the file's discount when it is below 1. Projected (pgd) and mirror ascent with
step {step}, at most {iters} iterations (stop when no entry moves by 1e-8), from the uniform policy and from
{seeds} Dirichlet(1) random starts (seeds 0..{seeds - 1}); J is the ordinary value of the final policy. J* is
the best deterministic policy by exhaustive search (— when there are more than 10^6); blind J is the best
observation-blind policy (one fixed action per agent whatever it sees, `mk.best_blind`: a lower bound on the
best memoryless value, so a run ending below it is a poor stationary point); ABR is alternating best
response from the uniform policy; the MDP optimum is the value of the fully observable joint MDP (a centralised
controller that sees the state: an upper bound on every value here). Every run is a record in `runs.jsonl` beside
the raw numbers (its full spec and hash), so each cell can be rerun on its own. Cells are selected by their
cost. A k whose path enumeration needs at most {budget:,} steps per pass (on the unlumped model) is computed. Above
that, the cell's cost is measured: the seconds of one exact `value_and_grad` at the uniform policy on the walked
(lumped) model the estimator enumerates (median of 3 after a first call), times the mean iterations of the same
method's runs at the largest computed k (a run is at most {iters} calls). A cell estimated under {cost_limit:g} s
per run is computed too ("run by cost", with its estimate beside the measured time); the others are marked "over
budget" with their steps and estimate. Cells over {TIME_CAP:,} walked steps are not timed and not run; their
cost per run is at least that of the largest timed smaller k (docs/performance.md, "The Dec-POMDP table's budget").

## What it shows

{findings(rows, cost_limit=cost_limit)}

## Table

{markdown(rows)}
{MEMORY_SECTION}"""
    return write_text_atomic(out, text)
